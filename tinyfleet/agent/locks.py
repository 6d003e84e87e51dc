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

An app without a writable file system (or that prefers not to use it) answers instead: the release
names an endpoint (protocol.LockEndpoint: a port and path on the container) and, while an update
waits to switch, the agent asks `GET <path>` on the running container's address with a short timeout.
  - 423 Locked, body {"holder": "print-job-42", "expires_in": 120} (or one line: the holder): held;
    `expires_in` is cut down to the lifetime, and the lock is held only as long as the app keeps saying
    so (it is asked again every few seconds);
  - anything else - 200, 404, a refused connection, a timeout, garbage: free.
A dead app answers nothing, so an endpoint lock can never outlive its process.

This module is an adapter of the host file system and of the apps' endpoints: it reads what is there
into agent.model.UpdateLock and never raises for a garbled file or answer (a lock file it cannot read is
taken as held by "unknown").
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from tinyfleet.agent.model import UpdateLock
from tinyfleet.protocol import LockEndpoint

log = structlog.get_logger("agent.locks")

MOUNT_POINT = "/run/tinyfleet"
LOCK_FILE = "update.lock"
MAX_READ = 4096
DEFAULT_LIFETIME_S = 3600.0
ASK_TIMEOUT_S = 1.0  # an app too busy to answer in a second is not holding anything we can see


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


def _document(text: str) -> dict[str, object] | None:
    try:
        doc = json.loads(text) if text.startswith("{") else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _holder(doc: dict[str, object] | None, text: str) -> str:
    if doc is not None:
        owner = str(doc.get("owner") or doc.get("holder") or "")
    else:
        owner = text.splitlines()[0] if text else ""
    return owner[:128] or "unknown"


def parse(content: bytes, mtime: float, now: float, lifetime: float) -> UpdateLock:
    """The lock a file with `content`, last modified at `mtime`, stands for."""
    text = content.decode("utf-8", "replace").strip()
    doc = _document(text)
    since, expires = (_when(doc.get("since")), _when(doc.get("expires"))) if doc is not None else (None, None)
    since = min(since, now) if since is not None else mtime
    expires = expires if expires is not None else mtime + lifetime
    return UpdateLock(holder=_holder(doc, text), since=since, expires=min(expires, mtime + lifetime))


def answer(status: int, content: bytes, since: float, now: float, lifetime: float) -> UpdateLock | None:
    """The lock an endpoint's answer stands for (None: free); `since` is when the agent first heard it held."""
    if status != 423:
        return None
    text = content.decode("utf-8", "replace").strip()
    doc = _document(text)
    expires_in = doc.get("expires_in") if doc is not None else None
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        expires_in = None
    expires_in = lifetime if expires_in is None else min(expires_in, lifetime)
    if expires_in <= 0:
        return None
    return UpdateLock(holder=_holder(doc, text), since=since, expires=now + expires_in)


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


@dataclass(frozen=True)
class Asked:
    """An app's running container to ask about its update lock."""

    app: str
    container_id: str
    address: str
    endpoint: LockEndpoint


class LockEndpoints:
    """The apps that answer their update lock over HTTP. Remembers, per container, when it first said
    "held" (the lock's `since`): forgotten as soon as it says anything else or is no longer asked."""

    def __init__(self, lifetime: float = DEFAULT_LIFETIME_S, timeout: float = ASK_TIMEOUT_S) -> None:
        self.lifetime = lifetime
        self.timeout = timeout
        self._first_held: dict[str, float] = {}

    def _get(self, asked: Asked) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(asked.address, asked.endpoint.port, timeout=self.timeout)
        try:
            conn.request("GET", asked.endpoint.path, headers={"User-Agent": "tinyfleet-agent"})
            response = conn.getresponse()
            return response.status, response.read(MAX_READ)
        finally:
            conn.close()

    def read(self, targets: Iterable[Asked], now: float) -> dict[str, UpdateLock]:
        """The locks held now among `targets` (one request each)."""
        out, first_held = {}, {}
        for asked in targets:
            try:
                status, content = self._get(asked)
            except (OSError, http.client.HTTPException) as exc:  # no answer: nothing holds the update
                log.debug("update lock endpoint did not answer; free", app=asked.app, error=str(exc))
                continue
            since = self._first_held.get(asked.container_id, now)
            lock = answer(status, content, since, now, self.lifetime)
            if lock is not None:
                out[asked.app] = lock
                first_held[asked.container_id] = since
        self._first_held = first_held
        return out
