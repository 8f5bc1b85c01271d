"""``python -m workbench ...``: the command line (see ``workbench.cli``)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
