"""The fleet simulator's controllers when there are several: `tinyfleet controller` processes on one
PostgreSQL and one broker, as an operator runs them - one signing key (copied from the first), one MQTT
share group (they split the reports), each with its own directory, API token, MQTT session and log. One
of them can be killed -9 and started again (what systemd's Restart=on-failure does for a crashed one).

The lease holder and the moment a survivor took the lease over are read from the controllers' own
JSON logs (the line's timestamp, not when this process noticed it).
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path

from bench.proc import cpu_seconds
from sandbox.controller import ControllerProcess
from tinyfleet.controller.signing import KEY_FILE

TOOK = "took the rollout engine's lease"
SHARE_GROUP = "fleetsim"


class SimController(ControllerProcess):
    """A fleet member: the sandbox's controller process, plus what the simulator reads of it."""

    def took_lease_at(self) -> float | None:
        """Wall-clock time of this controller's latest "took the lease" line, None if it never took it."""
        took = [e for e in self.entries() if str(e.get("event", "")).startswith(TOOK)]
        return datetime.fromisoformat(str(took[-1]["timestamp"])).timestamp() if took else None

    @property
    def client_id(self) -> str | None:
        path = self.root / "mqtt-client-id"
        return path.read_text().strip() if path.exists() else None

    def cpu_seconds(self) -> float:
        proc = self.proc.proc
        return cpu_seconds(proc.pid) if proc is not None and self.proc.alive() else 0.0


class ControllerGroup:
    """`count` controllers on `database`; the first one creates the signing key the others copy."""

    def __init__(self, root: Path, broker_url: str, database: str, count: int, heartbeat: float,
                 tick: float = 0.2) -> None:
        self.members = [SimController(root / f"ctl-{i}", broker_url, database=database, share_group=SHARE_GROUP,
                                      heartbeat=heartbeat, tick=tick, name=f"controller ctl-{i}")
                        for i in range(count)]

    def __enter__(self) -> ControllerGroup:
        try:
            first, *others = self.members
            first.start(timeout=60)
            for member in others:
                member.root.mkdir(parents=True, exist_ok=True)
                for name in (KEY_FILE, f"{KEY_FILE}.pub"):  # one fleet, one signing key
                    shutil.copy2(first.root / name, member.root / name)
                member.start(timeout=60)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def holder(self, timeout: float = 30.0) -> SimController:
        """The member that holds the engine's lease now (the latest to take it among the living)."""
        deadline = time.monotonic() + timeout
        while True:
            living = [(m.took_lease_at(), m) for m in self.members if m.proc.alive()]
            taken = [(at, m) for at, m in living if at is not None]
            if taken:
                return max(taken, key=lambda pair: pair[0])[1]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no controller took the engine's lease within {timeout:g} s")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        return sum(m.cpu_seconds() for m in self.members)

    def close(self) -> None:
        for member in self.members:
            member.stop()
