"""The notebook-facing names: the contract of DESIGN.md §4, ``__all__`` complete and sorted."""

from __future__ import annotations

import json
import subprocess
import sys

import workbench


def test_contract_names_importable() -> None:
    from workbench import Batch, Context, InvalidURLError, Workbench, pipeline  # noqa: F401


def _imported(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    probe = (f"import json, sys\n{code}\n"
             f"print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_a_worker_imports_neither_the_client_nor_arrow_nor_numpy() -> None:
    # What a worker process imports before its first page is on the way to it: the client
    # (pandas, pyarrow) cost ~1 s of CPU at start, Arrow and numpy ~0.1 s more (chunk reads and
    # embeddings load them on use). Loading the built-in pipelines is part of a worker's start.
    code = ("import workbench.worker.__main__, workbench.worker.process, workbench.worker.runtime\n"
            "from workbench.pipeline.registry import registry\n"
            "registry.get('article')")
    assert _imported(code, ("numpy", "pandas", "pyarrow", "workbench.client.batch",
                            "workbench.client.workbench")) == []
    assert "Workbench" in dir(workbench) and workbench.Batch.__name__ == "Batch"


def test_the_fork_server_preloads_only_the_extraction_stack() -> None:
    # Every extraction process is forked from the server once its preload is done: the settings,
    # the ledger, the queue and the HTTP client are the worker's, not the extraction's.
    code = "import workbench.pipeline.forkserver, workbench.pipeline.cpu_preload"
    assert _imported(code, ("aiohttp", "arq", "pandas", "pyarrow", "pydantic",
                            "pydantic_settings", "sqlalchemy", "workbench.core.settings",
                            "workbench.pipeline.context")) == []


def test_all_is_complete_and_sorted() -> None:
    import types

    public = {n for n, v in vars(workbench).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)
              and n != "annotations"}
    assert public <= set(workbench.__all__), public - set(workbench.__all__)
    assert workbench.__all__ == sorted(workbench.__all__)
    for name in workbench.__all__:
        assert hasattr(workbench, name), name


def test_error_tree_has_one_root() -> None:
    import inspect

    from workbench.core import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if c.__module__ == errors.__name__]
    assert all(issubclass(c, errors.WorkbenchError) for c in classes)
    for c in classes:  # every class is drawn in the module's docstring tree
        assert c.__name__ in errors.__doc__, c.__name__
