"""``python -m workbench ...``: the command line (see ``workbench.cli.main``)."""

from __future__ import annotations

from workbench.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
