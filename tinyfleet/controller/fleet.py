"""The fleet: devices as operators see them, and what operators do to them (tags, groups, pins).

A device is online when its retained status says so (its last will says otherwise) and its last sign
of life - any live message - is younger than `offline_after` (a few heartbeat intervals): a board that
lost power without the broker noticing yet goes offline by missed heartbeats alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tinyfleet.controller.errors import InvalidRequest, NotFound
from tinyfleet.controller.model import DeviceRecord
from tinyfleet.controller.selector import Selector, check_name, check_tag_value
from tinyfleet.controller.store import Store
from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.messages import APP_NAME_RE
from tinyfleet.protocol.topics import validate_device_id

ALL_APPS = "*"  # a pin on "*" holds every app of the device where it is


def is_online(device: DeviceRecord, now: float, offline_after: float) -> bool:
    return device.status_online and device.last_seen is not None and now - device.last_seen <= offline_after


class Fleet:
    def __init__(self, store: Store, offline_after: float, clock: Callable[[], float] = time.time,
                 changed: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.offline_after = offline_after
        self.clock = clock
        self.changed = changed  # wakes the engine: memberships and pins decide releases

    # -- reading --------------------------------------------------------------------------------

    def online(self, device: DeviceRecord, now: float | None = None) -> bool:
        return is_online(device, self.clock() if now is None else now, self.offline_after)

    def count(self) -> tuple[int, int]:
        """(online, total)"""
        now = self.clock()
        rows = self.store.liveness()
        online = sum(1 for status, seen in rows if status and seen is not None and now - seen <= self.offline_after)
        return online, len(rows)

    def get(self, device_id: str) -> DeviceRecord:
        device = self.store.device(_device_id(device_id))
        if device is None:
            raise NotFound(f"no device {device_id!r}; devices appear when they first report")
        return device

    def list(self, selector: str | None = None) -> list[dict[str, Any]]:
        chosen = Selector.parse(selector) if selector else None
        now = self.clock()
        return [self.summary(d, now) for d in self.store.devices(chosen)]

    def summary(self, d: DeviceRecord, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        assigned = dict(d.assignments)
        apps = []
        for name in sorted(set(assigned) | {a["name"] for a in (d.reported or {}).get("apps", ())}):
            status = d.app_status(name)
            apps.append({"name": name, "release": assigned.get(name),
                         "phase": status.phase.value if status else None, "health": status.health if status else None,
                         "current_image": status.current_image if status else None,
                         "error": status.error if status else None,
                         "locked": status.locked.to_dict() if status and status.locked else None})
        health = d.health or {}
        return {"id": d.id, "online": self.online(d, now), "platform": d.platform, "agent_version": d.agent_version,
                "first_seen": d.first_seen, "last_seen": d.last_seen, "online_since": d.online_since,
                "groups": list(d.groups), "tags": dict(d.tags), "pins": {a: r for a, r in d.pins}, "apps": apps,
                "desired_generation": d.desired_generation, "reported_generation": d.reported_generation,
                "error": (d.reported or {}).get("error"),
                "health": {k: health.get(k) for k in ("cpu_temp_c", "load", "mem_available_bytes", "disk_free_bytes",
                                                      "throttled", "uptime_seconds", "engine_reachable",
                                                      "agent_rss_bytes")}}

    def detail(self, device_id: str) -> dict[str, Any]:
        d = self.get(device_id)
        return {**self.summary(d), "status": d.status, "health": d.health, "health_at": d.health_at,
                "reported": d.reported, "reported_at": d.reported_at, "desired": d.desired}

    def groups(self) -> list[dict[str, Any]]:
        return [{"name": n, "devices": c} for n, c in self.store.groups()]

    # -- operator actions -----------------------------------------------------------------------

    def tag(self, device_id: str, key: str, value: str) -> DeviceRecord:
        key, value = check_name(key, "tag key"), check_tag_value(value)
        with self.store.transaction():
            self.get(device_id)
            self.store.set_tag(device_id, key, value)
        self.changed()
        return self.get(device_id)

    def untag(self, device_id: str, key: str) -> DeviceRecord:
        with self.store.transaction():
            self.get(device_id)
            if not self.store.remove_tag(device_id, check_name(key, "tag key")):
                raise NotFound(f"device {device_id} has no tag {key!r}")
        return self.get(device_id)

    def join(self, device_id: str, group: str) -> DeviceRecord:
        group = check_name(group, "group name")
        with self.store.transaction():
            self.get(device_id)
            self.store.add_to_group(device_id, group)
        self.changed()
        return self.get(device_id)

    def leave(self, device_id: str, group: str) -> DeviceRecord:
        with self.store.transaction():
            self.get(device_id)
            if not self.store.remove_from_group(device_id, check_name(group, "group name")):
                raise NotFound(f"device {device_id} is not in group {group!r}")
        return self.get(device_id)

    def pin(self, device_id: str, app: str, release_id: int | None) -> DeviceRecord:
        """Hold one app (or, with app "*", the whole device) where it is, or move it to `release_id`
        and hold it there; rollouts skip what is pinned."""
        app = check_app(app, allow_all=True)
        with self.store.transaction():
            device = self.get(device_id)
            if release_id is not None:
                if app == ALL_APPS:
                    raise InvalidRequest("a whole-device pin holds every app where it is; give an app to pin "
                                         "to a release")
                release = self.store.release(release_id)
                if release is None:
                    raise NotFound(f"no release {release_id}")
                if release.app != app:
                    raise InvalidRequest(f"release {release_id} is of app {release.app!r}, not {app!r}")
                self.store.assign(device.id, app, release_id, None, self.clock())
            self.store.set_pin(device.id, app, release_id)
        self.changed()
        return self.get(device_id)

    def unpin(self, device_id: str, app: str) -> DeviceRecord:
        app = check_app(app, allow_all=True)
        with self.store.transaction():
            self.get(device_id)
            if not self.store.remove_pin(device_id, app):
                raise NotFound(f"device {device_id} has no pin for {app!r}")
        self.changed()
        return self.get(device_id)


def _device_id(device_id: str) -> str:
    try:
        return validate_device_id(device_id)
    except ProtocolError as exc:
        raise InvalidRequest(str(exc)) from exc


def check_app(app: object, *, allow_all: bool = False) -> str:
    if allow_all and app == ALL_APPS:
        return ALL_APPS
    if not isinstance(app, str) or not APP_NAME_RE.fullmatch(app):
        raise InvalidRequest(f"app name {app!r} must be 1-63 lowercase letters, digits or '-', starting with a "
                             "letter or digit")
    return app
