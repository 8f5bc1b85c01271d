"""Pure text formatting for the command line: aligned tables, clipped one-line text, yes/no
cells and timestamps. No I/O; ``workbench.cli.main`` and ``workbench.cli.demo`` print with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart, a header line first; None shows as empty."""
    text_rows = [["" if v is None else str(v) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in text_rows:
        widths = [max(w, len(v)) for w, v in zip(widths, r, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in text_rows]
    return "\n".join(lines)


def clip(text: Any, n: int) -> str:
    """``text`` on one line (whitespace runs folded), cut to ``n`` characters with an ellipsis."""
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


def yes_no(value: Any) -> str:
    """``yes``, ``no``, or ``-`` when unknown (None or NA)."""
    import pandas as pd

    return "-" if value is None or pd.isna(value) else ("yes" if value else "no")


def when(ts: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS``, or ``-`` when missing."""
    import pandas as pd

    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return "-"
    return pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
