"""Online/offline, and what operators may do to devices."""

from __future__ import annotations

import pytest

from tests.unit.controller.records import release, seen
from tinyfleet.controller.errors import InvalidRequest, NotFound
from tinyfleet.controller.fleet import Fleet, is_online
from tinyfleet.controller.model import DeviceRecord
from tinyfleet.controller.store import Store


@pytest.mark.parametrize("status_online,last_seen,now,online", [
    (True, 100.0, 101.0, True),     # heard from a second ago
    (True, 100.0, 103.0, True),     # exactly at the limit
    (True, 100.0, 103.5, False),    # missed heartbeats, no will (yet)
    (False, 100.0, 100.5, False),   # its last will said so
    (True, None, 100.0, False),     # only retained history so far
])
def test_online_needs_a_live_status_and_a_recent_sign_of_life(status_online: bool, last_seen: float | None,
                                                              now: float, online: bool) -> None:
    device = DeviceRecord("pi", first_seen=1.0, last_seen=last_seen, status_online=status_online)
    assert is_online(device, now, offline_after=3.0) is online


@pytest.fixture
def fleet(store_url: str) -> Fleet:
    store = Store(store_url)
    seen(store, "pi-1", at=100)
    return Fleet(store, offline_after=3, clock=lambda: 101.0)


def test_the_fleet_view_shows_liveness_memberships_and_apps(fleet: Fleet) -> None:
    fleet.tag("pi-1", "site", "berlin")
    fleet.join("pi-1", "kitchen")
    [d] = fleet.list("tag:site=berlin")
    assert (d["id"], d["online"], d["groups"], d["tags"]) == ("pi-1", True, ["kitchen"], {"site": "berlin"})
    assert fleet.list("group:hall") == []
    assert fleet.count() == (1, 1)
    assert fleet.groups() == [{"name": "kitchen", "devices": 1}]


def test_pins_hold_an_app_or_the_whole_device(fleet: Fleet) -> None:
    r1 = fleet.store.add_release(release(1))
    d = fleet.pin("pi-1", "hello", r1.id)
    assert d.pins == (("hello", r1.id),) and d.assignments == (("hello", r1.id),)
    assert fleet.pin("pi-1", "*", None).pinned("other")
    fleet.unpin("pi-1", "*")
    assert fleet.store.devices_needing_binding() == ["pi-1"]  # unpinned: it follows its groups again


@pytest.mark.parametrize("action,error,message", [
    (lambda f: f.get("nope"), NotFound, "no device 'nope'"),
    (lambda f: f.get("bad/id"), InvalidRequest, "may hold only"),
    (lambda f: f.tag("nope", "k", "v"), NotFound, "no device"),
    (lambda f: f.tag("pi-1", "bad key", "v"), InvalidRequest, "tag key"),
    (lambda f: f.tag("pi-1", "k", "bad value"), InvalidRequest, "tag value"),
    (lambda f: f.untag("pi-1", "absent"), NotFound, "has no tag"),
    (lambda f: f.join("pi-1", ""), InvalidRequest, "group name"),
    (lambda f: f.leave("pi-1", "never"), NotFound, "not in group"),
    (lambda f: f.pin("pi-1", "hello", 999), NotFound, "no release 999"),
    (lambda f: f.pin("pi-1", "Hello!", None), InvalidRequest, "app name"),
    (lambda f: f.pin("pi-1", "*", 1), InvalidRequest, "whole-device pin"),
    (lambda f: f.unpin("pi-1", "hello"), NotFound, "has no pin"),
])
def test_bad_operator_actions_are_refused(fleet: Fleet, action, error: type, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        action(fleet)


def test_a_release_of_another_app_cannot_be_pinned(fleet: Fleet) -> None:
    other = fleet.store.add_release(release(1, app="other"))
    with pytest.raises(InvalidRequest, match="of app 'other'"):
        fleet.pin("pi-1", "hello", other.id)
