"""Real `tinyfleet-agent` processes acting as boards of a chosen platform against one Docker Engine
(ARM containers run under qemu). For the demo, the tests and the benchmarks."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.process import ManagedProcess


@dataclass
class AgentProcess:
    device_id: str
    platform: str
    broker: str
    docker_host: str
    root: Path
    heartbeat_seconds: float = 1.0
    settle_seconds: float = 2.0
    deadline_seconds: float = 60.0
    max_image_bytes: int | None = None
    controller_key: str | None = None  # ed25519:...; None: run with --insecure-accept-unsigned
    extra_env: dict[str, str] = field(default_factory=dict)
    executable: Path | None = None  # another installation's tinyfleet-agent (e.g. an agent-only venv)
    proc: ManagedProcess | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / self.device_id / "state"

    @property
    def log(self) -> Path:
        return self.root / self.device_id / "agent.log"

    def argv(self) -> list[str]:
        exe = self.executable or Path(sys.executable).parent / "tinyfleet-agent"
        argv = [str(exe), "--device-id", self.device_id, "--broker", self.broker, "--docker-host", self.docker_host,
                "--platform", self.platform, "--state-dir", str(self.state_dir),
                "--heartbeat-seconds", str(self.heartbeat_seconds)]
        if self.max_image_bytes is not None:
            argv += ["--max-image-bytes", str(self.max_image_bytes)]
        argv += ["--controller-key", self.controller_key] if self.controller_key else ["--insecure-accept-unsigned"]
        return argv

    def start(self) -> AgentProcess:
        env = {"TINYFLEET_SETTLE_SECONDS": str(self.settle_seconds),
               "TINYFLEET_DEADLINE_SECONDS": str(self.deadline_seconds),
               "TINYFLEET_CONFIG": os.devnull, **self.extra_env}
        self.proc = ManagedProcess(f"agent {self.device_id}", self.argv(), self.log, env=env)
        self.proc.start()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill(self) -> None:
        """kill -9: no goodbye, no cleanup - what a power cut looks like to the broker."""
        if self.proc is not None:
            self.proc.kill()
