"""The app's one ``Workbench`` and the FastAPI dependency that hands it to a route.

One ``Workbench`` per app: made on startup by the lifespan (or on first use), closed on shutdown.
``create_app`` (``workbench.api.app``) puts the holder on ``app.state.workbench_holder``; every
router's routes take ``wb: Workbench = Depends(get_workbench)``, so a router module needs nothing
from the app module (and the OpenAPI document does not show the dependency).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from workbench.client.workbench import Workbench


class WorkbenchHolder:
    """The app's one Workbench: made on startup (or first use), closed on shutdown."""

    def __init__(self, factory: Callable[[], Workbench]):
        self.factory = factory
        self.wb: Workbench | None = None

    def get(self) -> Workbench:
        if self.wb is None:
            self.wb = self.factory()
        return self.wb

    async def close(self) -> None:
        wb, self.wb = self.wb, None
        if wb is not None:
            await wb.close()


def get_workbench(request: Request) -> Workbench:
    """The dependency: the ``Workbench`` of the app serving this request."""
    holder: WorkbenchHolder = request.app.state.workbench_holder
    return holder.get()
