"""The notebook-facing names: the contract of DESIGN.md §4, ``__all__`` complete and sorted."""

from __future__ import annotations

import subprocess
import sys

import workbench


def test_contract_names_importable() -> None:
    from workbench import Batch, Context, InvalidURLError, Workbench, pipeline  # noqa: F401


def test_a_worker_imports_neither_the_client_nor_pandas() -> None:
    # The client's names load on first use: the worker process and its CPU pool's fork server
    # import ``workbench`` at start and never use the client (~1 s of CPU each at start).
    code = ("import sys, workbench.worker.__main__, workbench.pipeline.cpu_preload; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'workbench.client.batch', "
            "'workbench.client.workbench') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "Workbench" in dir(workbench) and workbench.Batch.__name__ == "Batch"


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
