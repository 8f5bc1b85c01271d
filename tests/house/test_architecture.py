"""The layout keeps its promises: the layer rule, no import cycles, SQL only in the ledger, ARQ
only in the queue, no private names across modules, small modules (docs/architecture.md).

Every ``import`` counts, at module level or inside a function or ``if TYPE_CHECKING:`` block: a
cycle hidden in a function is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import workbench

PKG = Path(workbench.__file__).parent

#: Top-level package (or module) of ``workbench`` -> its layer. A module may import its own
#: package and anything in a strictly lower layer, never a higher or an equal one.
LAYERS: dict[str, int] = {
    "core": 0,          # status model, codec, urls, text, backoff, settings, errors: no I/O
    "ledger": 1,        # all SQL
    "queue": 2,         # Redis, the ARQ adapter, the embedded server, reconcile
    "pipeline": 2,      # registry, context, fetch/, text/, cpu pool, embed, llm
    "notify": 3,        # completion emails
    "inputs": 3,        # sitemaps, feeds, WARC
    "cleanup": 4,       # retention and sweeps (sends the emails a dead worker owed)
    "worker": 5,        # the worker process: runtime, ARQ worker, supervisor
    "notebook": 6,      # the monitor widget and its pure rendering (of any batch-like object)
    "client": 7,        # Workbench, Batch, sync facade, frames, export
    "api": 8,           # the HTTP API
    "samplesite": 8,    # the bundled test site
    "cli": 9,           # python -m workbench (serves the api, demos the sample site)
    "__init__": 10,     # the public facade: from workbench import Workbench, ...
    "__main__": 10,
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES: dict[str, Path] = {
    _module_name(p): p for p in PKG.rglob("*.py") if "migrations" not in p.parts
}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, str, int]]:
    """(imported module or package, first imported name or '', line) for every import."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    out: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not _is_package(name):
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub, "", node.lineno) if sub in MODULES else (mod, a.name, node.lineno))
    return out


def _layer(name: str) -> tuple[str, int]:
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in LAYERS, f"{name}: package {top!r} has no layer in LAYERS (add it, with a reason)"
    return top, LAYERS[top]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name in MODULES:
        for target, _, _ in _imports(name):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def test_every_package_has_a_layer() -> None:
    for name in MODULES:
        _layer(name)


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for name in MODULES:
        top, rank = _layer(name)
        for target, _, line in _imports(name):
            if target not in MODULES:
                continue
            ttop, trank = _layer(target)
            if ttop != top and trank >= rank:
                wrong.append(f"{name}:{line} imports {target} ({ttop}, layer {trank} >= {rank})")
    assert not wrong, "layer rule broken:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("library", "home"),
    [
        ("sqlalchemy", "workbench.ledger"),
        ("alembic", "workbench.ledger"),
        ("arq", "workbench.queue"),
    ],
)
def test_libraries_stay_in_their_package(library: str, home: str) -> None:
    outside = [
        f"{name}:{line}"
        for name in MODULES
        for target, _, line in _imports(name)
        if (target == library or target.startswith(library + "."))
        and not (name == home or name.startswith(home + "."))
    ]
    assert not outside, f"{library} imported outside {home}: {outside}"


def test_no_private_names_imported_across_modules() -> None:
    wrong = [
        f"{name}:{line} imports {what} from {target}"
        for name in MODULES
        for target, what, line in _imports(name)
        if target.startswith("workbench") and what.startswith("_") and what != "__version__"
    ]
    assert not wrong, "\n".join(wrong)


def test_modules_stay_small() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    big = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    """The rule above would be vacuous if imports inside functions were missed."""
    found = {t for t, _, _ in _imports("workbench.client.workbench")}
    assert any(t.startswith("workbench.worker") for t in found), found
