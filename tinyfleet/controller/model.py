"""The controller's records, as the store hands them out: frozen, already validated, JSON-ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinyfleet.protocol.messages import (
    AppSpec,
    AppStatus,
    HealthPolicy,
    LockEndpoint,
    LockHeld,
    Phase,
    UpdateLockPolicy,
)


@dataclass(frozen=True)
class ReleasePlatform:
    platform: str
    digest: str  # the platform manifest's digest
    compressed_size: int


@dataclass(frozen=True)
class Release:
    id: int
    app: str
    image: str  # repo@sha256:<index digest>: exactly what desired states carry
    source: str  # the reference the operator gave (tag or digest)
    version: str  # the tag, or the short digest when the operator gave a digest
    platforms: tuple[ReleasePlatform, ...]
    max_bytes: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    health: HealthPolicy | None = None  # None: the agent's own defaults
    created_at: float = 0.0
    lock_max_wait: float | None = None  # seconds an app's update lock may hold it back; None: until it goes
    lock_endpoint: LockEndpoint | None = None  # where the app answers whether it holds its lock (HTTP), if it does

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]

    def spec(self) -> AppSpec:
        policy: dict[str, Any] = {"health": self.health} if self.health is not None else {}  # else the default
        if self.lock_max_wait is not None or self.lock_endpoint is not None:
            policy["update_lock"] = UpdateLockPolicy(max_wait_seconds=self.lock_max_wait, endpoint=self.lock_endpoint)
        return AppSpec(name=self.app, image=self.image, max_bytes=self.max_bytes, env=self.env, **policy)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "app": self.app, "image": self.image, "digest": self.digest, "source": self.source,
                "version": self.version, "max_bytes": self.max_bytes, "env": dict(self.env),
                "health": self.health.to_dict() if self.health else None, "created_at": self.created_at,
                "lock_max_wait": self.lock_max_wait,
                "lock_endpoint": self.lock_endpoint.to_dict() if self.lock_endpoint else None,
                "platforms": [{"platform": p.platform, "digest": p.digest, "compressed_size": p.compressed_size}
                              for p in self.platforms]}


@dataclass(frozen=True)
class DeviceRecord:
    """One device as stored. `online` is not stored: it depends on the clock (see controller.fleet)."""

    id: str
    first_seen: float
    last_seen: float | None = None  # last sign of life (a live message), controller clock
    online_since: float | None = None
    status_online: bool = False  # what the device's retained status (or its last will) says
    platform: str | None = None
    agent_version: str | None = None
    status: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    health_at: float | None = None
    reported: dict[str, Any] | None = None
    reported_at: float | None = None
    desired_generation: int = 0
    desired: dict[str, Any] | None = None
    groups: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    pins: tuple[tuple[str, int | None], ...] = ()  # (app or "*", release id or None = hold where it is)
    assignments: tuple[tuple[str, int], ...] = ()  # (app, release id)

    @property
    def reported_generation(self) -> int:
        return int(self.reported["generation"]) if self.reported else 0

    @property
    def rejected_generation(self) -> int | None:
        return self.reported.get("rejected_generation") if self.reported else None

    def app_status(self, app: str) -> AppStatus | None:
        for entry in (self.reported or {}).get("apps", ()):
            if entry["name"] == app:
                return app_status(entry)
        return None

    def pinned(self, app: str) -> bool:
        return any(a in (app, "*") for a, _ in self.pins)

    def assigned(self, app: str) -> int | None:
        return next((r for a, r in self.assignments if a == app), None)


def app_status(d: dict[str, Any]) -> AppStatus:
    """Rebuild an AppStatus from a stored, already validated report (no second validation pass)."""
    return AppStatus(name=d["name"], phase=Phase(d["phase"]), desired_image=d.get("desired_image"),
                     current_image=d.get("current_image"), error=d.get("error"),
                     restart_count=d.get("restart_count", 0), health=d.get("health", "none"),
                     generation=d.get("generation"),
                     locked=LockHeld(**d["locked"]) if d.get("locked") else None)


@dataclass(frozen=True)
class Binding:
    """A selector stands for a release of an app: devices that come to match it later get that release."""

    selector: str
    app: str
    release_id: int
    rollout_id: int | None
    bound_at: float
