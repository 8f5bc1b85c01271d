"""The pipeline registry: ``@pipeline(name, version=...)`` and lookup by name.

Registration is per process (decorators run at import). Redefining a pipeline in a notebook cell
replaces it. Without an explicit version, the version is derived from the function's source, so a
changed notebook pipeline never reuses results cached for its old code.

A pipeline may declare its params as a pydantic model (``@pipeline(..., params=Model)``):
``submit`` checks them against it (``PipelineSpec.check_params``), so ``max_keywords: -5`` is an
``InvalidParamsError`` (a 422 through the API) naming the param, not a failure of every item
later. Declare ``model_config = ConfigDict(extra="forbid")`` to refuse unknown params too. A
pipeline that declares nothing takes any JSON object.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.core.errors import InvalidParamsError, SettingsError, UnknownPipelineError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from workbench.pipeline.context import Context

PipelineFn = Callable[[str, "Context"], Awaitable[dict[str, Any]]]

_BUILTIN_MODULE = "workbench.pipeline.builtin"


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    version: str
    fn: PipelineFn
    description: str = ""
    module: str = ""
    #: the declared params (a pydantic model), or None: any JSON object
    params: type[BaseModel] | None = None

    def __repr__(self) -> str:
        return f"<pipeline {self.name!r} v{self.version} from {self.module}>"

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise ``InvalidParamsError`` naming each param the declaration refuses."""
        if self.params is None:
            return
        from pydantic import ValidationError  # pydantic is imported with the model

        try:
            self.params.model_validate(params)
        except ValidationError as exc:
            fields = []
            for err in exc.errors(include_url=False, include_input=False):
                name = ".".join(str(p) for p in err["loc"]) or "(params)"
                fields.append((name, err["msg"]))
            raise InvalidParamsError(
                f"invalid params for pipeline {self.name!r}: "
                + "; ".join(f"{name}: {msg}" for name, msg in fields),
                fields,
            ) from None


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, PipelineSpec] = {}
        self._builtins_loaded = False

    def register(self, spec: PipelineSpec) -> None:
        self._specs[spec.name] = spec

    def get(self, name: str) -> PipelineSpec:
        self._load_builtins()
        if not isinstance(name, str) or not name:
            raise UnknownPipelineError(f"pipeline must be a non-empty string, got {name!r}")
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "(none)"
            raise UnknownPipelineError(
                f"unknown pipeline {name!r}; known: {known}. Define it with @pipeline({name!r}) "
                "or load its module with WORKBENCH_PIPELINES / --pipelines."
            ) from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._specs)

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            importlib.import_module(_BUILTIN_MODULE)


registry = Registry()


def _source_version(fn: Callable[..., Any]) -> str:
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return "1"
    return "src-" + hashlib.sha256(src.encode()).hexdigest()[:10]


def pipeline(
    name: str,
    version: str | int | None = None,
    *,
    description: str | None = None,
    params: type[BaseModel] | None = None,
) -> Callable[[PipelineFn], PipelineFn]:
    """Register an async ``(url, ctx) -> dict`` function as a pipeline.

    ``version`` goes into every result's provenance and the cache key: bump it when the output
    changes. Left out, it is a hash of the function's source. ``params``: a pydantic model of
    the params it takes, checked at submit.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise ValueError(f"pipeline name must be a non-empty string of at most 100 chars: {name!r}")
    # pydantic is imported on use: ``import workbench`` (every process, the CPU pool's fork server
    # included) then does not load it
    from pydantic import BaseModel

    if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError(f"params of pipeline {name!r} must be a pydantic model class")

    def decorate(fn: PipelineFn) -> PipelineFn:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"pipeline {name!r} must be an async function (async def)")
        ver = str(version) if version is not None else _source_version(fn)
        registry.register(
            PipelineSpec(
                name=name,
                version=ver,
                fn=fn,
                description=description or (inspect.getdoc(fn) or "").split("\n")[0],
                module=getattr(fn, "__module__", ""),
                params=params,
            )
        )
        return fn

    return decorate


def get_pipeline(name: str) -> PipelineSpec:
    return registry.get(name)


def load_pipeline_modules(modules: list[str]) -> None:
    """Import the modules named by WORKBENCH_PIPELINES / --pipelines."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:
            raise SettingsError(
                f"cannot import pipeline module {mod!r} (WORKBENCH_PIPELINES / --pipelines): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
