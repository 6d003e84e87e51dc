"""Helpers for controller integration tests: demo images in the real registry, the controller in-process
or as the real `tinyfleet controller` command, and emulated devices that clean up after themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sandbox.controller import ControllerProcess as ControllerProcess  # the tests' name for it, from the kit
from sandbox.images import publish_demo
from tests.support.emulated_device import EmulatedDevice
from tests.support.wait import eventually
from tinyfleet.controller.client import ApiClient
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
