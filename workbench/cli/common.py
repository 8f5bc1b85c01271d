"""What every command of ``python -m workbench`` shares: the program's name, ``CliError`` (a
one-line error with its exit status), printing a line to stderr, opening the ``Workbench``, and
opening a file to write (``open_output``: never over an existing file without ``--force``, a
clear exit-2 error for a directory or a missing folder, 0600 inside the data dir).

The commands live beside this module (``batches``, ``serve``, ``cleanup``, ``demo``); the parser,
the exit codes and the last-resort error handling are ``workbench.cli.main``'s.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from workbench.core.private import FILE_MODE, is_inside

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


def check_output(path: str | Path, *, force: bool) -> Path:
    """The file ``path`` names, if it can be written: exit 2 for a directory, a missing
    folder, or an existing file without ``force``."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise CliError(f"{path} is a directory: name a file in it, e.g. {out / 'results.csv'}", 2)
    if not out.parent.is_dir():
        raise CliError(f"cannot write {path}: no such directory {out.parent}", 2)
    if out.exists() and not force:
        raise CliError(f"{path} exists: pass --force to overwrite it", 2)
    return out


@contextlib.contextmanager
def open_output(
    path: str | Path, *, force: bool, data_dir: Path | None = None
) -> Iterator[IO[bytes]]:
    """Open ``path`` to write bytes (``check_output``'s rules). Inside ``data_dir`` the file is
    0600, whatever the umask: the data dir is private, and so is what is exported into it. A
    write that fails part way removes the file it made."""
    out = check_output(path, force=force)
    private = data_dir is not None and is_inside(out, data_dir)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(out, flags, FILE_MODE if private else 0o666)
    except FileExistsError:
        raise CliError(f"{path} exists: pass --force to overwrite it", 2) from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", 2) from None
    if private:
        os.fchmod(fd, FILE_MODE)
    fh = os.fdopen(fd, "wb")
    try:
        with fh:
            yield fh
    except BaseException:
        with contextlib.suppress(OSError):
            out.unlink()
        raise
