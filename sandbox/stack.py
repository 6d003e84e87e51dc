"""All private services at once - broker, registry, Docker Engine with qemu - for the demo and the
benchmarks. Each can be replaced by an existing one (a URL/host given by the caller)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from sandbox import binfmt
from sandbox.dockerd import Dockerd
from sandbox.mosquitto import Mosquitto
from sandbox.registry import Registry


@dataclass
class Stack:
    broker_url: str | None = None  # existing broker, else a private one
    registry_host: str | None = None
    docker_host: str | None = None
    keep: bool = False  # leave the directory behind (logs) on exit
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tfs", dir="/tmp")))
    _started: list = field(default_factory=list)  # type: ignore[type-arg]

    def __enter__(self) -> Stack:
        try:
            if self.broker_url is None:
                broker = Mosquitto(self.root / "mqtt").start()
                self._started.append(broker)
                self.broker_url = broker.url
            if self.registry_host is None:
                registry = Registry(self.root / "reg").start()
                self._started.append(registry)
                self.registry_host = registry.host
            if self.docker_host is None:
                binfmt.ensure()
                engine = Dockerd(self.root / "d").start()
                self._started.append(engine)
                self.docker_host = engine.url
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def mosquitto(self) -> Mosquitto | None:
        return next((s for s in self._started if isinstance(s, Mosquitto)), None)

    def close(self) -> None:
        for service in reversed(self._started):
            with contextlib.suppress(Exception):
                service.stop()
        self._started.clear()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
