"""Small builders of device messages and releases for the controller's unit tests."""

from __future__ import annotations

from tinyfleet.controller.model import Release, ReleasePlatform
from tinyfleet.controller.store import Incoming, Store
from tinyfleet.protocol.messages import AppStatus, Health, Phase, ReportedState, Status

REPO = "127.0.0.1:5000/acme/hello"


def image(n: int) -> str:
    return f"{REPO}@sha256:{n:064x}"


def release(n: int, app: str = "hello", platforms: tuple[str, ...] = ("linux/arm64", "linux/arm/v7")) -> Release:
    return Release(id=0, app=app, image=image(n), source=f"{REPO}:{n}.0", version=f"{n}.0",
                   platforms=tuple(ReleasePlatform(p, f"sha256:{i:064x}", 1000 * n) for i, p in enumerate(platforms)),
                   created_at=float(n))


def status(device: str, online: bool = True, platform: str | None = "linux/arm64") -> Status:
    return Status(device, online=online, ts=1.0, agent_version="1.0", platform=platform)


def health(device: str) -> Health:
    return Health(device, ts=1.0, uptime_seconds=5, engine_reachable=True, agent_version="1.0", cpu_temp_c=48.5)


def reported(device: str, generation: int, *apps: AppStatus, rejected: int | None = None) -> ReportedState:
    return ReportedState(device, generation, tuple(apps), rejected_generation=rejected, platform="linux/arm64",
                         agent_version="1.0", error="older" if rejected else None)


def running(name: str, img: str) -> AppStatus:
    return AppStatus(name, Phase.RUNNING, img, img, health="healthy")


def seen(store: Store, *devices: str, at: float = 100.0, stale_after: float = 3.0) -> None:
    """The devices say they are online, live."""
    store.record([Incoming(status(d), live=True) for d in devices], now=at, stale_after=stale_after)
