"""The API token: generated on the controller's first start, stored owner-only (0600), written
atomically (temp file, fsync, rename) so a crash never leaves half a token behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("controller.apitoken")
MIN_LENGTH = 32


def load_or_create(path: Path) -> str:
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("the API token file was readable by others; made it owner-only", path=str(path),
                        was=oct(mode))
        token = path.read_text().strip()
        if len(token) < MIN_LENGTH:
            raise ValueError(f"{path} holds no usable token (under {MIN_LENGTH} characters); delete it and "
                             "restart the controller to generate a new one")
        return token
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    log.info("generated an API token", path=str(path))
    return token


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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
