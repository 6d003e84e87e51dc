"""Update locks: how an app says "not now" (a print job, a flight, a measurement in progress).

Each app has a lock directory on the host, `<state_dir>/locks/<app>/`, bind-mounted at MOUNT_POINT
(/run/tinyfleet) in every container of that app. The app holds the lock by creating the file
`update.lock` there and releases it by removing it: one open() and one unlink(), no library, so a
scratch image with one static binary can do it. While the lock is held the agent downloads and
verifies an update but does not switch to it; it reports the app `locked` with the holder.

The file's content is optional and read leniently (an app is not a protocol peer):
  - JSON  {"owner": "print-job-42", "expires": 1795003600}  (`expires`: epoch seconds or ISO 8601;
    `since` may be given the same way), or
  - one line of plain text: the owner.
A lock without a readable expiry expires `lifetime` seconds after the file was last modified, so a
lock left behind by a dead process cannot block updates forever (touching the file keeps it held).
An expiry further away than that is cut down to it: an app cannot take a lock for a year and die.

This module is an adapter of the host file system: it reads what is there into agent.model.UpdateLock
and never raises for a garbled file (a lock it cannot read is taken as held by "unknown").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import structlog

from tinyfleet.agent.model import UpdateLock

log = structlog.get_logger("agent.locks")

MOUNT_POINT = "/run/tinyfleet"
LOCK_FILE = "update.lock"
MAX_READ = 4096
DEFAULT_LIFETIME_S = 3600.0


def _when(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def parse(content: bytes, mtime: float, now: float, lifetime: float) -> UpdateLock:
    """The lock a file with `content`, last modified at `mtime`, stands for."""
    owner, since, expires = "", None, None
    text = content.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text) if text.startswith("{") else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        owner = str(doc.get("owner") or doc.get("holder") or "")
        since, expires = _when(doc.get("since")), _when(doc.get("expires"))
    elif text:
        owner = text.splitlines()[0]
    since = min(since, now) if since is not None else mtime
    expires = expires if expires is not None else mtime + lifetime
    return UpdateLock(holder=owner[:128] or "unknown", since=since, expires=min(expires, mtime + lifetime))


class LockDirs:
    """The host side of the apps' lock directories."""

    def __init__(self, root: Path, lifetime: float = DEFAULT_LIFETIME_S) -> None:
        self.root = root
        self.lifetime = lifetime

    def dir_for(self, app: str) -> Path:
        """Made on demand, writable by whatever user the app runs as (only its own containers mount it)."""
        path = self.root / app
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o1777)
        return path

    def read(self, apps: Iterable[str], now: float) -> dict[str, UpdateLock]:
        """The locks held now (expired ones left out) among `apps`."""
        out = {}
        for app in apps:
            path = self.root / app / LOCK_FILE
            try:
                with open(path, "rb") as f:
                    mtime = os.fstat(f.fileno()).st_mtime
                    content = f.read(MAX_READ)
            except FileNotFoundError:
                continue
            except OSError as exc:  # unreadable (permissions, I/O): held, to be safe, until it is old enough
                log.warning("update lock unreadable; taken as held", app=app, error=str(exc))
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    mtime = now
                content = b""
            lock = parse(content, mtime, now, self.lifetime)
            if lock.expires > now:
                out[app] = lock
        return out
