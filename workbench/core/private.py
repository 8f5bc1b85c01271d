"""Files only their owner may read: the data dir (0700), the SQLite ledger with its ``-wal`` and
``-shm`` (0600), and exports written into the data dir (0600), whatever the umask.

The data dir holds results, raw pages and notify addresses: with the usual umask 022 another
local user could read them all. Modes are set explicitly after creation (``mkdir(mode=)`` and
``open(mode=)`` are filtered through the umask, and ``parents=True`` ignores the mode
altogether). SQLite creates ``-wal`` and ``-shm`` with the mode of the database file, so a
database created 0600 keeps its companions 0600 too; an existing one is tightened when opened.
Directories that already exist are left as they are (a ledger path may sit in a user's own
folder), except the data dir itself, which ``private_dir(..., tighten=True)`` tightens.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
#: SQLite's companions of a database file
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Make ``path`` and any missing parents, each mode 0700. With ``tighten``, an existing
    ``path`` owned by this user loses its group and other permissions."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another process: its mode is its own
            continue
        d.chmod(DIR_MODE)
    if tighten and not missing:
        _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Create ``path`` (empty) mode 0600 if it does not exist, else tighten it to 0600."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def private_sqlite(path: Path) -> None:
    """The SQLite database at ``path`` and its companions: created or tightened to 0600, its
    directory created 0700 if missing."""
    path = Path(path)
    private_dir(path.parent)
    private_file(path)
    for suffix in SQLITE_SUFFIXES[1:]:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _tighten(companion, FILE_MODE)


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_uid != os.getuid():
        return  # not ours to change (a shared directory, another user's file)
    if stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(stat.S_IMODE(st.st_mode) & mode)
