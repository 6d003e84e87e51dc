"""The agent's persistent state: the accepted desired document and what it learned per app.

One JSON file, replaced atomically (write temp, fsync, rename, fsync the directory), so a power cut
leaves the old state or the new one, never half of each. A file that cannot be read is moved aside
and the agent starts from scratch: containers are re-adopted by their labels and the retained desired
document arrives again from the broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from tinyfleet import protocol
from tinyfleet.agent.model import AppMemory, Failure, Held, Resolved
from tinyfleet.protocol import DesiredState, Phase
from tinyfleet.protocol.codec import SCHEMA_VERSION
from tinyfleet.protocol.signing import PublicKey

log = structlog.get_logger("agent.state")
FORMAT = 1


@dataclass(frozen=True)
class AgentState:
    accepted_generation: int = -1
    desired: DesiredState | None = None
    rejection: tuple[int | None, str] | None = None  # (generation, why) of the last refused document
    memory: dict[str, AppMemory] = field(default_factory=dict)
    pulled: frozenset[str] = frozenset()
    # Key rotation: the key this board moved to (endorsed by `trust_root`, the configured key, or by a key
    # it endorsed). A different configured key (the board was re-provisioned) starts from that key again.
    trusted_key: str | None = None
    trust_root: str | None = None

    def trust(self, configured: PublicKey) -> PublicKey:
        if self.trusted_key and self.trust_root == str(configured):
            return PublicKey.parse(self.trusted_key, "state.trusted_key")
        return configured

    def app(self, name: str) -> AppMemory:
        return self.memory.get(name) or AppMemory()

    def with_app(self, name: str, **changes: Any) -> AgentState:
        return replace(self, memory={**self.memory, name: replace(self.app(name), **changes)})


def _to_json(state: AgentState) -> dict[str, Any]:
    def memory(m: AppMemory) -> dict[str, Any]:
        return {"resolved": vars(m.resolved) if m.resolved else None,
                "failure": {**vars(m.failure), "phase": m.failure.phase.value} if m.failure else None,
                "promoted": m.promoted, "last_restart_at": m.last_restart_at, "agent_restarts": m.agent_restarts,
                "held": vars(m.held) if m.held else None}

    return {"format": FORMAT, "accepted_generation": state.accepted_generation,
            "desired": {"v": SCHEMA_VERSION, "kind": "desired", "body": state.desired.to_dict(), "sig": None}
            if state.desired else None,
            "rejection": list(state.rejection) if state.rejection else None,
            "memory": {name: memory(m) for name, m in sorted(state.memory.items())},
            "pulled": sorted(state.pulled), "trusted_key": state.trusted_key, "trust_root": state.trust_root}


def _from_json(doc: dict[str, Any]) -> AgentState:
    if doc.get("format") != FORMAT:
        raise ValueError(f"state format {doc.get('format')!r} is not {FORMAT}")
    memory = {}
    for name, m in doc["memory"].items():
        failure = m.get("failure")
        memory[name] = AppMemory(
            resolved=Resolved(**m["resolved"]) if m.get("resolved") else None,
            failure=Failure(**{**failure, "phase": Phase(failure["phase"])}) if failure else None,
            promoted=m.get("promoted"), last_restart_at=m.get("last_restart_at"),
            agent_restarts=int(m.get("agent_restarts", 0)), held=Held(**m["held"]) if m.get("held") else None)
    desired = doc.get("desired")
    rejection = doc.get("rejection")
    return AgentState(
        accepted_generation=int(doc["accepted_generation"]),
        desired=protocol.decode(json.dumps(desired), protocol.DesiredState) if desired else None,  # type: ignore[arg-type]
        rejection=(rejection[0], rejection[1]) if rejection else None,
        memory=memory, pulled=frozenset(doc.get("pulled", ())),
        trusted_key=doc.get("trusted_key"), trust_root=doc.get("trust_root"))


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateStore:
    """Thread-safe holder of the current AgentState. Outside a batch every change is persisted before it
    is visible. Inside `batch()` (one reconcile) changes are visible at once and written together at the
    end - on an SD card each write is an fsync - and `flush()` writes early what must survive a crash
    (a pull, a failure)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.json"
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._state = self._load()
        self._batching = 0
        self._dirty = False

    def _load(self) -> AgentState:
        if not self.path.exists():
            return AgentState()
        try:
            return _from_json(json.loads(self.path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"state.json.unreadable-{int(time.time())}")
            os.replace(self.path, aside)
            log.error("state file unreadable; starting fresh and re-adopting containers by label",
                      path=str(self.path), moved_to=str(aside), error=str(exc))
            return AgentState()

    @property
    def current(self) -> AgentState:
        return self._state

    def update(self, change: Callable[[AgentState], AgentState]) -> AgentState:
        with self._lock:
            new = change(self._state)
            if new != self._state:
                if self._batching:
                    self._state, self._dirty = new, True
                else:
                    self._write(new)
            return new

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        with self._lock:
            self._batching += 1
            try:
                yield
            except Exception:
                self._end_batch()
                raise
            except BaseException:  # the process is going down as if killed: nothing more is written
                self._batching -= 1
                raise
            else:
                self._end_batch()

    def _end_batch(self) -> None:
        self._batching -= 1
        if not self._batching:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._dirty:
                self._write(self._state)

    def _write(self, state: AgentState) -> None:
        write_atomically(self.path, json.dumps(_to_json(state), separators=(",", ":")).encode())
        self._state, self._dirty = state, False
