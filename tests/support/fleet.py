"""Helpers for controller integration tests: demo images in the real registry, the controller in-process
or as the real `tinyfleet controller` command, and emulated devices that clean up after themselves."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.images import publish_demo
from sandbox.process import ManagedProcess
from tests.support.emulated_device import EmulatedDevice
from tests.support.wait import eventually
from tinyfleet.controller.client import ApiClient, ControllerUnreachable
from tinyfleet.controller.service import Controller, ControllerConfig
from tinyfleet.oci.platform import Platform

HEARTBEAT = 0.5  # emulated devices beat this often; controllers under test expect 1 s (offline after 3 s)


def push_demo_image(registry_host: str, repo: str, tag: str, binaries: dict[Platform, Path], *,
                    version: str, broken: bool = False, platforms: tuple[str, ...] | None = None,
                    broken_on: tuple[str, ...] = ()) -> str:
    """The demo app, alive lines every second, pushed under `tag`; returns the tag reference."""
    return publish_demo(registry_host, repo, tag, binaries, version=version, env=(("TINYHELLO_INTERVAL", "1"),),
                        broken=broken, broken_on=broken_on, platforms=platforms).tag_ref


def controller_config(db: Path, broker_url: str, **overrides: object) -> ControllerConfig:
    settings: dict[str, object] = {"db": db, "broker": broker_url, "listen": "127.0.0.1:0",
                                   "heartbeat_interval": 1.0, "tick_interval": 0.2}
    settings.update(overrides)
    return ControllerConfig(**settings)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_controller(db: Path, broker_url: str, **overrides: object) -> Iterator[Controller]:
    controller = Controller(controller_config(db, broker_url, **overrides)).start()
    try:
        assert controller.wait_connected(10), "the controller did not connect to the broker"
        yield controller
    finally:
        controller.stop()


def client_of(controller: Controller) -> ApiClient:
    return ApiClient(controller.url, controller.token)


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

        eventually(answering, timeout=30, interval=0.1, what="tinyfleet controller answering")
        return self

    def client(self) -> ApiClient:
        return ApiClient(self.url, self.token_file.read_text().strip(), timeout=30)

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace") if self.proc.log.exists() else ""


@contextlib.contextmanager
def emulated_fleet(broker_port: int, prefix: str, platforms: list[str]) -> Iterator[list[EmulatedDevice]]:
    """Emulated devices named PREFIX-0, PREFIX-1, ... that leave nothing retained behind."""
    devices: list[EmulatedDevice] = []
    try:
        for i, platform in enumerate(platforms):
            devices.append(EmulatedDevice(broker_port, f"{prefix}-{i}", platform=platform, heartbeat=HEARTBEAT).start())
        yield devices
    finally:
        for device in devices:
            device.stop()


def rollout_held_at_batch_1(api: ApiClient, devices: list[EmulatedDevice], prefix: str,
                            image: str) -> tuple[dict, dict, EmulatedDevice]:  # type: ignore[type-arg]
    """Tag the devices, release `image` and roll it out one by one (canary 1, batch 1), with batch 1's
    device held at "pulling" until the test sets its `release`: (release, rollout, that device)."""
    for d in devices:
        api.tag(d.device_id, "ring", prefix)
    v1 = api.create_release("hello", image)
    slow = devices[1]
    slow.release.clear()
    r = api.start_rollout("hello", v1["id"], f"tag:ring={prefix}", canary=1, batch=1, health_timeout=60)
    eventually(lambda: slow.received, what="batch 1 under way")
    return v1, r, slow


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
