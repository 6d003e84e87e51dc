"""The controller on the real broker and registry, driving EMULATED devices (tests/support/
emulated_device.py: the real protocol, scripted outcomes). The same scenarios with real agents on
dockerd come with the agent."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sandbox.registry import Registry
from tests.support.emulated_device import EmulatedDevice
from tests.support.fleet import client_of, emulated_fleet, push_demo_image, running_controller
from tests.support.wait import eventually
from tests.unit.controller.records import reported, status
from tinyfleet.controller.client import ApiClient, ApiError
from tinyfleet.controller.service import Controller
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import encode

REPO = "it/ctl-hello"


@pytest.fixture(scope="module")
def images(registry, demo_binaries) -> dict[str, str]:  # type: ignore[no-untyped-def]
    push = push_demo_image
    return {"v1": push(registry.host, REPO, "1.0", demo_binaries, version="1"),
            "v2": push(registry.host, REPO, "2.0", demo_binaries, version="2"),
            "v3": push(registry.host, REPO, "3.0", demo_binaries, version="3", broken=True),
            "v7only": push(registry.host, REPO, "v7only", demo_binaries, version="7", platforms=("linux/arm/v7",))}


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


@pytest.fixture
def ctl(tmp_path: Path, mosquitto, store_url: str) -> Iterator[Controller]:  # type: ignore[no-untyped-def]
    """A controller on each store in turn (SQLite, PostgreSQL)."""
    with running_controller(tmp_path / "ctl" / "controller.db", mosquitto.url, database=store_url) as controller:
        yield controller


def online(api: ApiClient, devices: list[EmulatedDevice]) -> None:
    ids = ",".join(d.device_id for d in devices)
    eventually(lambda: [d["online"] for d in api.devices(f"device:{ids}")] == [True] * len(devices),
               timeout=15, what="emulated devices online")


def in_group(api: ApiClient, devices: list[EmulatedDevice], group: str) -> None:
    online(api, devices)
    for d in devices:
        api.join(d.device_id, group)


def settled(api: ApiClient, rollout_id: int, timeout: float = 30) -> dict:  # type: ignore[type-arg]
    return api.wait_rollout(rollout_id, timeout=timeout, interval=0.1)


def by_device(r: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {t["device"]: t["state"] for t in r["targets"]}


def test_a_staged_rollout_goes_canary_first_then_batch_by_batch(ctl, mosquitto, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    platforms = ["linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/arm64", "linux/arm/v7"]
    with emulated_fleet(mosquitto.port, prefix, platforms) as devices:
        in_group(api, devices, prefix)
        v1 = api.create_release("hello", images["v1"])
        canary = devices[0]
        canary.release.clear()  # the canary holds at "pulling" until the test lets it go
        r = api.start_rollout("hello", v1["id"], f"group:{prefix}", canary=1, batch=2, health_timeout=30)
        eventually(lambda: canary.received, what="the canary's desired state")
        time.sleep(1.0)  # several engine passes
        assert [len(d.received) for d in devices[1:]] == [0, 0, 0, 0], "nothing moves before the canary converges"
        assert api.rollout(r["id"])["counts"]["updating"] == 1
        canary.release.set()
        done = settled(api, r["id"])
        assert done["state"] == "completed", done
        batches = Counter(t["batch"] for t in done["targets"])
        assert sorted(batches.items()) == [(0, 1), (1, 2), (2, 2)]
        targets = done["targets"]
        for t in targets:
            before = [u for u in targets if u["batch"] == t["batch"] - 1]
            assert all(u["settled_at"] <= t["started_at"] for u in before), "a batch started before the last settled"
        for d in devices:
            assert d.runs("hello") == v1["image"]
            assert d.received[0].desired.apps[0].image == v1["image"]
        shown = {d["id"]: d for d in api.devices(f"group:{prefix}")}
        assert all(d["apps"][0]["phase"] == "running" and d["apps"][0]["release"] == v1["id"] for d in shown.values())


def test_a_failing_release_aborts_by_itself_and_puts_devices_back(ctl, mosquitto, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    with emulated_fleet(mosquitto.port, prefix, ["linux/arm64"] * 5) as devices:
        in_group(api, devices, prefix)
        v1 = api.create_release("hello", images["v1"])
        v3 = api.create_release("hello", images["v3"])
        first = api.start_rollout("hello", v1["id"], f"group:{prefix}", canary=0, batch="100%")
        assert settled(api, first["id"])["state"] == "completed"
        for d in devices[1:3]:  # v3 fails its health check on these two: the agent rolls back to v1
            d.fail_images.add(v3["image"])
        r = api.start_rollout("hello", v3["id"], f"group:{prefix}", canary=1, batch=2, max_failures=1,
                              health_timeout=30)
        done = settled(api, r["id"])
        assert done["state"] == "aborted" and done["reason"] == "2 failed, over the limit of 1"
        ids = [d.device_id for d in devices]
        assert by_device(done) == {ids[0]: "reverted", ids[1]: "reverted", ids[2]: "reverted",
                                   ids[3]: "skipped", ids[4]: "skipped"}
        failed = [t["reason"] for t in done["targets"] if t["device"] in ids[1:3]]
        assert all(reason.startswith("failed: rolled_back: health check failed") for reason in failed)
        for d in devices[:3]:  # the converged canary and both failures: back on v1
            assert [x.desired.apps[0].image for x in d.received] == [v1["image"], v3["image"], v1["image"]]
            assert d.runs("hello") == v1["image"]
        for d in devices[3:]:  # their batch never started
            assert [x.desired.apps[0].image for x in d.received] == [v1["image"]]


def test_an_offline_device_is_pending_until_the_deadline_then_failed(ctl, mosquitto, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    with emulated_fleet(mosquitto.port, prefix, ["linux/arm64"] * 3) as devices:
        in_group(api, devices, prefix)
        v1 = api.create_release("hello", images["v1"])
        back_soon, gone = devices[1], devices[2]
        back_soon.drop_connection()
        gone.drop_connection()
        eventually(lambda: not api.device(gone.device_id)["online"], timeout=10, what="the will marks it offline")
        r = api.start_rollout("hello", v1["id"], f"group:{prefix}", canary=1, batch=2, max_failures=1,
                              offline_deadline=6)
        mid = eventually(lambda: (x := api.rollout(r["id"]))["counts"]["updating"] == 2 and x, timeout=15)
        assert by_device(mid)[gone.device_id] == "updating" and mid["counts"]["failed"] == 0
        back_soon.reconnect()  # the retained desired state is waiting for it
        done = settled(api, r["id"], timeout=20)
        assert done["state"] == "completed"
        assert by_device(done) == {devices[0].device_id: "converged", back_soon.device_id: "converged",
                                   gone.device_id: "failed"}
        reason = next(t["reason"] for t in done["targets"] if t["device"] == gone.device_id)
        assert "offline for more than the offline deadline of 6s" in reason
        assert back_soon.runs("hello") == v1["image"]


def test_a_device_that_joins_the_group_later_gets_the_groups_release(ctl, mosquitto, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    with emulated_fleet(mosquitto.port, prefix, ["linux/arm64", "linux/arm/v6"]) as devices:
        in_group(api, devices[:1], prefix)
        v2 = api.create_release("hello", images["v2"])
        assert settled(api, api.start_rollout("hello", v2["id"], f"group:{prefix}")["id"])["state"] == "completed"
        late = devices[1]
        online(api, [late])
        time.sleep(0.5)
        assert late.received == [], "not in the group: nothing for it"
        api.join(late.device_id, prefix)
        eventually(lambda: late.runs("hello") == v2["image"], what="the late joiner running the group's release")
        shown = api.device(late.device_id)
        assert shown["apps"][0]["release"] == v2["id"] and shown["desired"]["apps"][0]["image"] == v2["image"]


def test_a_board_that_connects_behind_is_sent_its_document_without_the_retained_copy(ctl, mosquitto, images,  # type: ignore[no-untyped-def]
                                                                                      prefix) -> None:
    """The connect handshake (protocol 1.3): the board says which generation it has and the controller
    answers. Here the broker lost the retained document and the board its state (both start afresh)."""
    api = client_of(ctl)
    with emulated_fleet(mosquitto.port, prefix, ["linux/arm64"]) as [device]:
        device.handshake = True
        in_group(api, [device], prefix)
        v1 = api.create_release("hello", images["v1"])
        assert settled(api, api.start_rollout("hello", v1["id"], f"group:{prefix}")["id"])["state"] == "completed"
        device.drop_connection()
        clear = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        clear.connect("127.0.0.1", mosquitto.port)
        clear.loop_start()
        clear.publish(topics.desired(device.device_id), b"", qos=1, retain=True).wait_for_publish(5)
        clear.disconnect()
        clear.loop_stop()
        device.accepted, device.current = 0, {}
        device.reconnect()
        eventually(lambda: device.runs("hello") == v1["image"], what="the document sent again on connect")
        assert device.generations() == [1, 1], "the same document again, not a new generation"


def test_release_create_checks_the_fleets_platforms_and_the_budget(ctl, mosquitto, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    with emulated_fleet(mosquitto.port, prefix, ["linux/arm/v6", "linux/arm64"]) as devices:
        online(api, devices)
        with pytest.raises(ApiError) as missing:
            api.create_release("hello", images["v7only"])
        assert (missing.value.status, missing.value.code) == (422, "platform_missing")
        assert "no image for linux/arm/v6 (1 device)" in missing.value.message
        assert "linux/arm64 (1 device)" in missing.value.message
        with pytest.raises(ApiError) as over:
            api.create_release("hello", images["v1"], max_bytes=1000)
        assert over.value.code == "over_budget" and "linux/arm/v6 is" in over.value.message
        fits = api.create_release("hello", images["v1"], max_bytes=10**6)
        assert fits["image"].endswith(fits["digest"]) and fits["max_bytes"] == 10**6
        assert {p["platform"] for p in fits["platforms"]} == {"linux/amd64", "linux/arm64", "linux/arm/v7",
                                                              "linux/arm/v6"}
        again = api.create_release("hello", images["v1"], max_bytes=10**6)
        assert again["id"] == fits["id"], "creating the same release twice gives the same release"
        with pytest.raises(ApiError) as absent:
            api.create_release("hello", f"{images['v1'].rsplit(':', 1)[0]}:no-such-tag")
        assert absent.value.code == "image_not_found"


def test_a_registry_outage_during_release_create_is_a_clear_error(ctl, demo_binaries, tmp_path) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    flaky = Registry(tmp_path / "flaky").start()
    ref = push_demo_image(flaky.host, "it/outage", "1.0", demo_binaries, version="1")
    flaky.stop()
    with pytest.raises(ApiError) as outage:
        api.create_release("hello", ref)
    assert (outage.value.status, outage.value.code) == (503, "registry_unavailable")
    assert f"cannot reach the registry {flaky.host}" in outage.value.message
    assert "try again" in outage.value.message
    assert not any(r["source"] == ref for r in api.releases())
    flaky.start()
    try:
        assert api.create_release("hello", ref)["source"] == ref, "the same request works once it is back"
    finally:
        flaky.stop()


def test_malformed_forged_and_huge_messages_are_counted_and_dropped(ctl, mosquitto, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-attacker")
    sender.connect("127.0.0.1", mosquitto.port)
    sender.loop_start()
    victim, liar = f"{prefix}-victim", f"{prefix}-liar"
    try:
        sends = [(topics.reported(liar), b"{not json"),
                 (topics.status(liar), encode(status(victim))),  # forged: the body speaks for another device
                 (topics.reported(liar), encode(reported(victim, 9))),
                 (topics.health(liar), b"[" * 100_000),  # over the 64 KiB cap
                 (topics.status(liar), b'{"v": "9.0", "kind": "status", "body": {}}'),
                 (f"{topics.PREFIX}/{liar}/status/extra", encode(status(liar)))]
        for topic, payload in sends:
            sender.publish(topic, payload, qos=1).wait_for_publish(5)

        def counted() -> dict[str, float]:
            found = {}
            for line in api.metrics().splitlines():
                if line.startswith("tinyfleet_ingest_dropped_total"):
                    reason = line.split('reason="')[1].split('"')[0]
                    found[reason] = float(line.rsplit(" ", 1)[1])
            return found

        eventually(lambda: (c := counted())["malformed"] >= 2 and c["forged"] >= 2 and c["oversized"] >= 1 and c,
                   timeout=30, what="dropped messages counted")
        assert api.devices(f"device:{victim},{liar}") == [], "no device was created from bad messages"
        sender.publish(topics.status(liar), encode(status(liar)), qos=1).wait_for_publish(5)
        eventually(lambda: api.devices(f"device:{liar}"), what="a good message after the bad ones is ingested")
    finally:
        for topic in (topics.status(liar), topics.reported(liar)):
            sender.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        sender.disconnect()
        sender.loop_stop()


def test_missed_heartbeats_mark_a_device_offline_without_a_will(ctl, mosquitto, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    with emulated_fleet(mosquitto.port, prefix, ["linux/arm64"]) as [device]:
        online(api, [device])
        device.go_silent()
        started = time.monotonic()
        eventually(lambda: not api.device(device.device_id)["online"], timeout=10, what="offline by heartbeats")
        assert time.monotonic() - started >= 2.0, "offline only after about three missed 1 s heartbeats"
        assert api.device(device.device_id)["status"]["online"] is True, "its retained status still says online"
