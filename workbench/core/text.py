"""Pure text formatting shared by every surface: aligned tables, clipped one-line text, yes/no
cells, timestamps and durations. No I/O; the CLI, the monitor, the API and the email print with it,
so a user sees one duration format everywhere.
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


def format_duration(seconds: float | None, missing: str = "-") -> str:
    """``7.5s``, ``42s``, ``3m 05s``, ``2h 04m``, ``3d 01h``; ``missing`` when None or NaN."""
    if seconds is None or seconds != seconds:
        return missing
    s = max(0.0, float(seconds))
    if s < 9.95:
        return f"{s:.1f}s"
    if s < 59.5:
        return f"{s:.0f}s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h < 24 else f"{h // 24}d {h % 24:02d}h"
