"""What every command of ``python -m workbench`` shares: the program's name, ``CliError`` (a
one-line error with its exit status), printing a line to stderr, and opening the ``Workbench``.

The commands live beside this module (``batches``, ``serve``, ``cleanup``, ``demo``); the parser,
the exit codes and the last-resort error handling are ``workbench.cli.main``'s.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.client.workbench import Workbench

PROG = "python -m workbench"


class CliError(Exception):
    """A clear, one-line error with its exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    """One line on stderr (progress, summaries and errors go there; stdout is for data)."""
    print(message, file=sys.stderr, flush=True)


def open_workbench(**kw: Any) -> Workbench:
    """The client every command goes through (settings from the environment, plus ``kw``).

    Imported on use, keeping ``python -m workbench --help`` quick.
    """
    from workbench.client.workbench import Workbench

    return Workbench(**kw)
