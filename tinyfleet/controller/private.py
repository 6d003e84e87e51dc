"""Files only the controller's user may read: its state directory (0700) and what is in it (0600) - the
fleet database, the API token, the signing key. Writes are atomic (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("controller.private")


def private_dir(path: Path) -> None:
    """Create the directory owner-only; an existing one is left as the operator made it (its files are 0600)."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def owner_only(path: Path, what: str) -> None:
    """Make an existing file 0600 again if an older version or an operator left it readable by others."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning(f"the {what} was readable by others; made it owner-only", path=str(path), was=oct(mode))


def create_private(path: Path) -> None:
    """An empty file, 0600 from its first moment, unless it exists (then made owner-only)."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        owner_only(path, path.name)


def write_private(path: Path, text: str) -> None:
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # persist the rename itself
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
