"""The HTTP API (FastAPI, extra ``api``): ``python -m workbench serve`` serves ``create_app()``.

``app`` builds the application (lifespan, auth, error handlers); each group of routes is an
``APIRouter`` module: ``batches`` and the seed's ``seed`` (analyses, jobs); ``deps`` holds the
app's one ``Workbench`` and the dependency that hands it to a route; ``models`` what goes in and
out.
"""

from workbench.api.app import create_app

__all__ = ["create_app"]
