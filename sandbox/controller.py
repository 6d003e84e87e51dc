"""`tinyfleet controller` as an operator runs it, in a subprocess: for the integration tests, the fault
suite (bench faults kills it -9 mid-batch) and anything else that needs the real command."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from sandbox.process import ManagedProcess, wait_until
from tinyfleet.controller.client import ApiClient, ControllerUnreachable


@dataclass
class ControllerProcess:
    """`tinyfleet controller` as an operator runs it, in a subprocess that a test can kill -9.

    With port 0 it listens where the kernel puts it and the test reads the address from its log (a port
    picked beforehand can be taken by someone else's connection before the controller binds it); each
    start may then get another port: take `url` / `client()` after `start()`."""

    root: Path
    broker_url: str
    port: int = 0
    database: str | None = None  # a store_url: PostgreSQL, or a SQLite path instead of root/controller.db

    def __post_init__(self) -> None:
        self.db = self.root / "controller.db"
        self.token_file = self.root / "api-token"
        exe = Path(sys.executable).parent / "tinyfleet"
        self.proc = ManagedProcess("tinyfleet-controller", [
            str(exe), "controller", "--broker", self.broker_url, "--db", str(self.db),
            *(["--database", self.database] if self.database else []),
            "--listen", f"127.0.0.1:{self.port}", "--heartbeat-interval", "1", "--tick", "0.2",
            "--log-format", "json"], self.root / "controller.log")
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def public_key(self) -> str:
        """What its boards trust (the controller writes it on its first start)."""
        return (self.root / "signing-key.pub").read_text().strip()

    def start(self) -> ControllerProcess:
        seen = self.proc.log.stat().st_size if self.proc.log.exists() else 0
        self.proc.start()

        def answering() -> bool:
            self.proc.check_alive()
            api = _started_at(self.proc.log, seen)
            if api is None or not self.token_file.exists():
                return False
            self.url = api
            try:
                self.client().devices()
            except ControllerUnreachable:
                return False
            return True

        wait_until(answering, timeout=30, what="tinyfleet controller answering", log=self.proc.log)
        return self

    def client(self) -> ApiClient:
        return ApiClient(self.url, self.token_file.read_text().strip(), timeout=30)

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace") if self.proc.log.exists() else ""


def _started_at(log: Path, offset: int) -> str | None:
    """The API address from the newest "controller started" line written after `offset`."""
    with open(log, "rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == "controller started":
                return str(entry["api"])
    return None
