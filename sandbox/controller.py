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
    share_group: str | None = None  # several controllers on one broker splitting the reports ($share)
    heartbeat: float = 1.0
    tick: float = 0.2
    name: str = "tinyfleet-controller"

    def __post_init__(self) -> None:
        self.db = self.root / "controller.db"
        self.token_file = self.root / "api-token"
        exe = Path(sys.executable).parent / "tinyfleet"
        self.proc = ManagedProcess(self.name, [
            str(exe), "controller", "--broker", self.broker_url, "--db", str(self.db),
            *(["--database", self.database] if self.database else []),
            *(["--share-group", self.share_group] if self.share_group else []),
            "--listen", f"127.0.0.1:{self.port}", "--heartbeat-interval", f"{self.heartbeat:g}",
            "--tick", f"{self.tick:g}", "--log-format", "json"], self.root / "controller.log")
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def public_key(self) -> str:
        """What its boards trust (the controller writes it on its first start)."""
        return (self.root / "signing-key.pub").read_text().strip()

    def start(self, timeout: float = 30.0) -> ControllerProcess:
        seen = self.proc.log.stat().st_size if self.proc.log.exists() else 0
        self.proc.start()

        def answering() -> bool:
            self.proc.check_alive()
            started = [e for e in self.entries(seen) if e.get("event") == "controller started"]
            if not started or not self.token_file.exists():
                return False
            self.url = str(started[-1]["api"])
            try:
                self.client().devices("device:none")  # an answer, not a listing of a big fleet
            except ControllerUnreachable:
                return False
            return True

        wait_until(answering, timeout=timeout, what=f"{self.name} answering", log=self.proc.log)
        return self

    def client(self, timeout: float = 30.0) -> ApiClient:
        return ApiClient(self.url, self.token_file.read_text().strip(), timeout=timeout)

    def entries(self, offset: int = 0) -> list[dict[str, object]]:
        """Its JSON log lines written after byte `offset` (lines cut short or not JSON are skipped)."""
        if not self.proc.log.exists():
            return []
        with open(self.proc.log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace") if self.proc.log.exists() else ""

