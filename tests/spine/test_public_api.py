"""The notebook-facing names: the contract of DESIGN.md §4, ``__all__`` complete and sorted."""

from __future__ import annotations

import workbench


def test_contract_names_importable() -> None:
    from workbench import Batch, Context, InvalidURLError, Workbench, pipeline  # noqa: F401


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
