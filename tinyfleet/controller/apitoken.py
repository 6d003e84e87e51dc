"""The API token: generated on the controller's first start, stored owner-only (0600), written
atomically (temp file, fsync, rename) so a crash never leaves half a token behind."""

from __future__ import annotations

import secrets
from pathlib import Path

import structlog

from tinyfleet.controller.private import owner_only, write_private

log = structlog.get_logger("controller.apitoken")
MIN_LENGTH = 32


def load_or_create(path: Path) -> str:
    if path.exists():
        owner_only(path, "API token file")
        token = path.read_text().strip()
        if len(token) < MIN_LENGTH:
            raise ValueError(f"{path} holds no usable token (under {MIN_LENGTH} characters); delete it and "
                             "restart the controller to generate a new one")
        return token
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    log.info("generated an API token", path=str(path))
    return token
