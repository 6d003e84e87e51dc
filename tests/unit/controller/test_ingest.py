"""What ingest keeps and what it drops (and why), and that the writer never stops on bad input."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest

from tests.unit.controller.records import health, reported, status
from tinyfleet.controller.ingest import CLEARED, Dropped, Ingest, classify
from tinyfleet.controller.metrics import Metrics
from tinyfleet.controller.store import Store
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import MAX_PAYLOAD_BYTES, encode
from tinyfleet.protocol.messages import DesiredState, Health, ReportedState, Status

GOOD = encode(status("pi-1"))


def envelope(kind: str, body: dict, v: str = "1.0") -> bytes:  # type: ignore[type-arg]
    return json.dumps({"v": v, "kind": kind, "body": body, "sig": None}).encode()


@pytest.mark.parametrize("topic,payload,kind", [
    (topics.status("pi-1"), GOOD, Status),
    (topics.health("pi-1"), encode(health("pi-1")), Health),
    (topics.reported("pi-1"), encode(reported("pi-1", 3)), ReportedState),
])
def test_valid_messages_are_kept(topic: str, payload: bytes, kind: type) -> None:
    assert isinstance(classify(topic, payload), kind)


@pytest.mark.parametrize("name,topic,payload,reason", [
    ("huge payload", topics.status("pi-1"), b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", "oversized"),
    ("not our prefix", "other/v1/devices/pi-1/status", GOOD, "bad_topic"),
    ("extra level", topics.PREFIX + "/pi-1/status/x", GOOD, "bad_topic"),
    ("invalid device id", topics.PREFIX + "/pi 1/status", GOOD, "bad_topic"),
    ("unknown channel", topics.PREFIX + "/pi-1/telemetry", GOOD, "bad_topic"),
    ("a desired document sent to the controller", topics.desired("pi-1"), GOOD, "bad_topic"),
    ("not JSON", topics.status("pi-1"), b"{not json", "malformed"),
    ("not UTF-8", topics.status("pi-1"), b"\xff\xfe", "malformed"),
    ("a JSON list", topics.status("pi-1"), b"[]", "malformed"),
    ("wrong kind for the channel", topics.status("pi-1"), encode(health("pi-1")), "malformed"),
    ("a desired document on reported", topics.reported("pi-1"), encode(DesiredState("pi-1", 1)), "malformed"),
    ("unknown major version", topics.status("pi-1"), envelope("status", {"device_id": "pi-1", "online": True}, "2.0"),
     "malformed"),
    ("unknown field at our minor", topics.status("pi-1"),
     envelope("status", {"device_id": "pi-1", "online": True, "extra": 1}), "malformed"),
    ("wrong type", topics.status("pi-1"), envelope("status", {"device_id": "pi-1", "online": "yes"}), "malformed"),
    ("device id of another device", topics.status("pi-2"), GOOD, "forged"),
    ("reported for another device", topics.reported("pi-2"), encode(reported("pi-1", 1)), "forged"),
])
def test_bad_messages_are_dropped_with_a_reason(name: str, topic: str, payload: bytes, reason: str) -> None:
    verdict = classify(topic, payload)
    assert isinstance(verdict, Dropped) and verdict.reason == reason, verdict


def test_an_empty_retained_payload_is_a_deletion_not_a_message() -> None:
    assert classify(topics.status("pi-1"), b"") is CLEARED


def test_the_writer_stores_good_messages_counts_bad_ones_and_keeps_going(store_url: str) -> None:
    store = Store(store_url)
    metrics = Metrics()
    woken = []
    ingest = Ingest(store, metrics, stale_after=3, on_written=woken.append, clock=lambda: 50.0)
    ingest.submit(topics.status("pi-1"), GOOD, retained=False)
    ingest.submit(topics.status("pi-2"), GOOD, retained=False)  # forged
    ingest.submit(topics.health("pi-1"), b"\x00" * 10, retained=False)
    ingest.submit(topics.reported("pi-1"), b"x" * (MAX_PAYLOAD_BYTES + 1), retained=False)
    ingest.submit(topics.health("pi-3"), encode(health("pi-3")), retained=False)
    assert ingest.drain() == 2
    assert store.device_ids() == ["pi-1", "pi-3"]
    dropped = {s.labels["reason"]: s.value for s in metrics.dropped.collect()[0].samples if s.name.endswith("_total")}
    assert dropped == {"oversized": 1, "bad_topic": 0, "malformed": 1, "forged": 1, "overload": 0}
    assert woken == [True]  # a status arrived: the engine is woken


def test_boards_that_connect_live_announcing_a_generation_are_handed_to_the_handshake(store_url: str) -> None:
    hellos: list[dict[str, int]] = []
    ingest = Ingest(Store(store_url), Metrics(), stale_after=3, on_hello=hellos.append, clock=lambda: 50.0)
    ingest.submit(topics.status("new"), encode(replace(status("new"), generation=3)), retained=False)
    ingest.submit(topics.status("old"), encode(replace(status("old"), generation=1)), retained=True)  # history
    ingest.submit(topics.status("pre13"), encode(status("pre13")), retained=False)  # an agent before 1.3
    ingest.submit(topics.status("gone"), encode(replace(status("gone", online=False), generation=2)), retained=False)
    assert ingest.drain() == 4
    assert hellos == [{"new": 3}]


def test_a_full_queue_drops_and_counts_instead_of_growing(store_url: str) -> None:
    metrics = Metrics()
    ingest = Ingest(Store(store_url), metrics, stale_after=3, max_queue=2)
    for _ in range(5):
        ingest.submit(topics.status("pi-1"), GOOD, retained=False)
    assert metrics.dropped.labels("overload")._value.get() == 3


def test_messages_submitted_before_stop_are_written(store_url: str) -> None:
    store = Store(store_url)
    ingest = Ingest(store, Metrics(), stale_after=3, max_batch=7)
    for i in range(50):
        ingest.submit(topics.status(f"d{i:02d}"), encode(status(f"d{i:02d}")), retained=True)
    stop = threading.Event()
    stop.set()
    ingest.run(stop)
    assert len(store.device_ids()) == 50
    assert ingest.wait_idle(0)


def test_a_delivery_is_acknowledged_to_the_broker_only_once_written_and_not_when_the_write_fails(
        store_url: str) -> None:
    store = Store(store_url)
    ingest = Ingest(store, Metrics(), stale_after=3, clock=lambda: 50.0)
    acked: list[str] = []
    ingest.submit(topics.status("pi-1"), GOOD, retained=False, ack=lambda: acked.append("good"))
    ingest.submit(topics.status("pi-2"), GOOD, retained=False, ack=lambda: acked.append("forged"))  # dropped: ours too
    assert acked == []  # queued, not yet written: a controller killed now gets them again from the broker
    assert ingest.drain() == 1
    assert acked == ["good", "forged"]

    store.close()  # the database fails
    ingest.submit(topics.health("pi-1"), encode(health("pi-1")), retained=False, ack=lambda: acked.append("later"))
    assert ingest.drain() == 0
    assert acked == ["good", "forged"]  # kept for the retry, unacknowledged
