"""Desired states: what goes in a document, and the generation rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.controller.records import release, reported, seen
from tinyfleet.controller.publisher import Publisher, next_generation
from tinyfleet.controller.signing import Signer
from tinyfleet.controller.store import Incoming, Store
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import decode, open_envelope
from tinyfleet.protocol.messages import DesiredState
from tinyfleet.protocol.signing import check

SIGNER = Signer.generate()


class Broker:
    """Collects what would have been published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))

    def documents(self) -> list[DesiredState]:
        return [decode(p, DesiredState) for _, p in self.sent]  # type: ignore[misc]


@pytest.mark.parametrize("stored,reported_gen,expected", [
    (0, 0, 1),   # first document
    (4, 4, 5),   # the usual case: one above
    (4, 2, 5),   # the device lags behind: still above the stored one
    (4, 9, 10),  # the device accepted more than the store knows (restored backup): above the device
])
def test_next_generation(stored: int, reported_gen: int, expected: int) -> None:
    assert next_generation(stored, reported_gen) == expected


def fleet(path: Path) -> tuple[Store, Broker, Publisher]:
    store = Store(path)
    broker = Broker()
    return store, broker, Publisher(store, broker, SIGNER, clock=lambda: 1000.0)


def test_a_document_carries_every_assigned_app_in_name_order(store_url: str) -> None:
    store, broker, pub = fleet(store_url)
    seen(store, "pi-1")
    zeta, alpha = store.add_release(release(1, app="zeta")), store.add_release(release(2, app="alpha"))
    store.assign("pi-1", "zeta", zeta.id, None, 1)
    store.assign("pi-1", "alpha", alpha.id, None, 1)
    assert pub.flush() == 1
    [(topic, _)] = broker.sent
    [doc] = broker.documents()
    assert topic == topics.desired("pi-1")
    assert [a.name for a in doc.apps] == ["alpha", "zeta"]
    assert doc.apps[0] == alpha.spec() and doc.generation == 1 and doc.issued_at == 1000.0
    assert pub.flush() == 0  # nothing changed since


def test_generations_keep_growing_across_a_restart(store_url: str) -> None:
    store, broker, pub = fleet(store_url)
    seen(store, "pi-1")
    r1, r2 = store.add_release(release(1)), store.add_release(release(2))
    store.assign("pi-1", "hello", r1.id, None, 1)
    pub.flush()
    store.close()
    store, broker, pub = fleet(store_url)  # a new controller process
    store.assign("pi-1", "hello", r2.id, None, 2)
    pub.flush()
    assert [d.generation for d in broker.documents()] == [2]


def test_a_device_that_reports_a_higher_generation_gets_one_above_it(store_url: str) -> None:
    store, broker, pub = fleet(store_url)
    seen(store, "pi-1")
    r1 = store.add_release(release(1))
    store.assign("pi-1", "hello", r1.id, None, 1)
    pub.flush()
    store.record([Incoming(reported("pi-1", 41, rejected=1), live=True)], now=5, stale_after=3)
    assert pub.flush() == 1
    assert [d.generation for d in broker.documents()] == [1, 42]
    assert broker.documents()[1].apps == broker.documents()[0].apps


def test_an_older_document_is_never_sent_after_a_newer_one(store_url: str) -> None:
    _, broker, pub = fleet(store_url)
    pub.send([("pi-1", 3, b"three")])
    pub.send([("pi-1", 2, b"two"), ("pi-2", 1, b"one")])
    pub.send([("pi-1", 3, b"three")])  # the same one again is fine (a re-delivery)
    assert broker.sent == [(topics.desired("pi-1"), b"three"), (topics.desired("pi-2"), b"one"),
                           (topics.desired("pi-1"), b"three")]


def published(store_url: str) -> tuple[Store, Broker, Publisher]:
    """Devices a and b on release 1, their documents sent."""
    store, broker, pub = fleet(store_url)
    seen(store, "a", "b")
    r1 = store.add_release(release(1))
    for d in ("a", "b"):
        store.assign(d, "hello", r1.id, None, 1)
    pub.flush()
    return store, broker, pub


def test_republishing_sends_the_stored_bytes_unchanged(store_url: str) -> None:
    store, broker, pub = published(store_url)
    first = list(broker.sent)
    broker.sent.clear()
    assert pub.republish_all() == 2
    assert broker.sent == first


def test_after_a_key_rotation_republishing_signs_the_same_documents_with_the_new_key(store_url: str) -> None:
    store, broker, pub = published(store_url)
    before = {topic: decode(payload) for topic, payload in broker.sent}
    new = Signer.generate()
    rotated = Publisher(store, broker, Signer(new.private, new.public, (SIGNER.endorse(new.public),)),
                        clock=lambda: 1000.0)
    broker.sent.clear()
    assert rotated.republish_all() == 2
    for topic, payload in broker.sent:
        envelope = open_envelope(payload)
        assert envelope.message == before[topic], "same generation, same body"
        assert check(envelope.body, envelope.signature, SIGNER.public) == new.public  # old boards follow
        assert check(envelope.body, envelope.signature, new.public) == new.public  # new boards accept
    stored = {d: p for d, _, p in store.desired_payloads()}
    assert sorted(stored.values()) == sorted(p for _, p in broker.sent), "kept signed: done once, not per reconnect"


def test_force_republishes_one_device_signed_at_a_new_generation_and_only_once(store_url: str) -> None:
    store, broker, pub = published(store_url)
    broker.sent.clear()
    generation, forced = pub.force("a")
    (topic, payload), = broker.sent
    envelope = open_envelope(payload)
    assert topic == topics.desired("a") and envelope.message.force == forced == ("hello",)  # type: ignore[union-attr]
    assert envelope.message.generation == generation == 2  # type: ignore[union-attr]
    assert check(envelope.body, envelope.signature, SIGNER.public) == SIGNER.public
    assert pub.flush() == 0  # stored as sent: not materialised again without the marker
    r2 = store.add_release(release(2))
    store.assign("a", "hello", r2.id, None, 2)
    pub.flush()
    assert decode(broker.sent[-1][1]).force == ()  # type: ignore[union-attr]  # the next document lets locks hold


def test_a_release_s_lock_max_wait_reaches_the_board_and_survives_the_store(store_url: str) -> None:
    from dataclasses import replace as with_

    from tinyfleet.protocol import UpdateLockPolicy
    store, broker, pub = fleet(store_url)
    seen(store, "a")
    patient = store.add_release(with_(release(1), lock_max_wait=600.0))
    assert store.same_release(with_(release(1), lock_max_wait=600.0)) == patient
    assert store.same_release(release(1)) is None  # another policy: another release
    store.assign("a", "hello", patient.id, None, 1)
    pub.flush()
    (app,) = decode(broker.sent[-1][1]).apps  # type: ignore[union-attr]
    assert app.update_lock == UpdateLockPolicy(max_wait_seconds=600.0)
    assert app.spec_hash() == release(1).spec().spec_hash()  # the same container either way


def test_a_release_s_lock_endpoint_reaches_the_board_and_survives_the_store(store_url: str) -> None:
    from dataclasses import replace as with_

    from tinyfleet.protocol import LockEndpoint, UpdateLockPolicy
    store, broker, pub = fleet(store_url)
    seen(store, "a")
    endpoint = LockEndpoint(port=8080, path="/busy")
    asks = store.add_release(with_(release(1), lock_endpoint=endpoint))
    assert asks.lock_endpoint == endpoint and asks.to_dict()["lock_endpoint"] == {"port": 8080, "path": "/busy"}
    assert store.same_release(with_(release(1), lock_endpoint=endpoint)) == asks
    assert store.same_release(release(1)) is None  # another policy: another release
    store.assign("a", "hello", asks.id, None, 1)
    pub.flush()
    (app,) = decode(broker.sent[-1][1]).apps  # type: ignore[union-attr]
    assert app.update_lock == UpdateLockPolicy(max_wait_seconds=None, endpoint=endpoint)
