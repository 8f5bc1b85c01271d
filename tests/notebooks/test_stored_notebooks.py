"""The example notebooks as committed: executed, clean, and self-contained.

nbval (``pytest --nbval-lax --nbval-current-env notebooks/``) re-runs them and compares the
cells marked ``# NBVAL_CHECK_OUTPUT``; these fast checks guard what nbval does not: that the
stored outputs a reader sees come from a full, clean run and show the monitor's final picture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _code_cells(path: Path) -> list[dict[str, Any]]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"])


def test_the_three_stories_are_there() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01-quickstart.ipynb", "02-failures-and-retry.ipynb",
                     "03-custom-pipeline.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_come_from_one_clean_run(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    # widget state would be a snapshot from the moment each cell ended, not the final picture
    assert "widgets" not in nb["metadata"], "execute with store_widget_state=False"
    cells = _code_cells(path)
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    for cell in cells:
        for out in cell["outputs"]:
            assert out["output_type"] != "error", _source(cell)
            assert out.get("name") != "stderr", f"stderr noise in: {_source(cell)[:80]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checked_cells_and_clean_up(path: Path) -> None:
    cells = _code_cells(path)
    checked = [c for c in cells if "# NBVAL_CHECK_OUTPUT" in _source(c)]
    assert len(checked) >= 4, "deterministic results should be checked by nbval"
    assert all(c["outputs"] for c in checked)
    text = "\n".join(_source(c) for c in cells)
    assert "tempfile.mkdtemp(" in text, "each run needs a fresh data directory"
    assert "await wb.start_worker()" in text and "serve_sample_site()" in text
    last = _source(cells[-1])
    assert "await wb.close(stop_redis=True)" in last and "await site.close()" in last


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_monitor_keeps_its_final_picture(path: Path) -> None:
    monitors = [out for c in _code_cells(path) for out in c["outputs"]
                if WIDGET_VIEW in out.get("data", {})]
    assert monitors, "each story shows the live monitor"
    for out in monitors:
        html, text = ("".join(out["data"][m]) for m in ("text/html", "text/plain"))
        assert "): completed, " in text and ">completed</span>" in html, text[:200]
        assert " 0/" not in text and "took <b>" in html
