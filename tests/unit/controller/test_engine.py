"""The engine on a real store with a recording broker: operator commands, a rollout driven by reports,
late joiners, pins. (The state machine's own rules are in test_rollout.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.controller.records import health, release, reported, running, seen
from tests.unit.controller.test_publisher import Broker
from tinyfleet.controller import engine as engine_module
from tinyfleet.controller.engine import Engine
from tinyfleet.controller.errors import Conflict, InvalidRequest, NotFound
from tinyfleet.controller.fleet import Fleet
from tinyfleet.controller.publisher import Publisher
from tinyfleet.controller.releases import Releases
from tinyfleet.controller.rollout import RolloutState, TargetState
from tinyfleet.controller.signing import Signer
from tinyfleet.controller.store import Incoming, Store
from tinyfleet.oci.registry import RegistryClient
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import decode
from tinyfleet.protocol.messages import DesiredState

SIGNER = Signer.generate()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, path: str | Path) -> None:
        self.clock = Clock()
        self.store = Store(path)
        self.broker = Broker()
        self.publisher = Publisher(self.store, self.broker, SIGNER, self.clock)
        self.fleet = Fleet(self.store, offline_after=3, clock=self.clock)
        self.releases = Releases(self.store, RegistryClient(), self.clock)
        self.engine = Engine(self.store, self.fleet, self.releases, self.publisher, self.clock)

    def online(self, *devices: str) -> None:
        seen(self.store, *devices, at=self.clock.now)

    def docs(self, device: str) -> list[DesiredState]:
        return [decode(p, DesiredState) for t, p in self.broker.sent if t == topics.desired(device)]  # type: ignore[misc]

    def converge(self, device: str) -> None:
        """The device runs whatever its newest document says, healthy."""
        doc = self.docs(device)[-1]
        apps = [running(a.name, a.image) for a in doc.apps]
        self.store.record([Incoming(reported(device, doc.generation, *apps), live=True)], now=self.clock.now,
                          stale_after=3)

    def heartbeat(self, *devices: str) -> None:
        self.store.record([Incoming(health(d), live=True) for d in devices], now=self.clock.now, stale_after=3)


@pytest.fixture
def world(store_url: str) -> World:
    return World(store_url)


def test_a_staged_rollout_walks_canary_then_batches_as_devices_converge(world: World) -> None:
    world.online("a", "b", "c")
    for d in "abc":
        world.store.add_to_group(d, "g")
    r1 = world.store.add_release(release(1))
    r = world.engine.start_rollout("hello", r1.id, "group:g", canary=1, batch=2)
    assert [t.state for t in r.targets] == [TargetState.PENDING] * 3
    world.engine.tick()
    assert [len(world.docs(d)) for d in "abc"] == [1, 0, 0]
    world.engine.tick()  # the canary has not converged: nothing more
    assert [len(world.docs(d)) for d in "abc"] == [1, 0, 0]
    world.converge("a")
    world.engine.tick()
    assert [len(world.docs(d)) for d in "abc"] == [1, 1, 1]
    step = world.engine.get(r.id)
    assert {t.device_id: (t.batch, t.generation) for t in step.targets} == {"a": (0, 1), "b": (1, 1), "c": (1, 1)}
    world.converge("b")
    world.converge("c")
    world.engine.tick()
    done = world.engine.get(r.id)
    assert done.state == RolloutState.COMPLETED and done.counts()["converged"] == 3
    assert [(b.selector, b.release_id) for b in world.store.bindings()] == [("group:g", r1.id)]


def test_a_late_joiner_gets_the_release_its_group_stands_for(world: World) -> None:
    world.online("a")
    world.store.add_to_group("a", "g")
    r1 = world.store.add_release(release(1))
    world.engine.start_rollout("hello", r1.id, "group:g")
    world.engine.tick()
    world.converge("a")
    world.engine.tick()
    world.online("late")
    world.engine.tick()
    assert world.docs("late") == []  # not in the group yet
    world.fleet.join("late", "g")
    world.engine.tick()
    [doc] = world.docs("late")
    assert doc.apps[0].image == r1.image


def test_a_device_joining_during_a_rollout_becomes_one_of_its_targets(world: World) -> None:
    world.online("a", "b")
    world.store.add_to_group("a", "g")
    world.store.add_release(release(1))
    r = world.engine.start_rollout("hello", "1.0", "group:g")
    world.engine.tick()
    world.fleet.join("b", "g")
    world.engine.tick()
    assert {t.device_id: t.state for t in world.engine.get(r.id).targets} == {"a": TargetState.UPDATING,
                                                                              "b": TargetState.PENDING}
    world.converge("a")
    world.engine.tick()
    world.converge("b")
    world.engine.tick()
    assert world.engine.get(r.id).state == RolloutState.COMPLETED


def test_abort_puts_devices_back_on_their_previous_release(world: World) -> None:
    world.online("a", "b")
    r1, r2 = world.store.add_release(release(1)), world.store.add_release(release(2))
    first = world.engine.start_rollout("hello", r1.id, "all", canary=0, batch="100%")
    world.engine.tick()
    world.converge("a")
    world.converge("b")
    world.engine.tick()
    assert world.engine.get(first.id).state == RolloutState.COMPLETED
    second = world.engine.start_rollout("hello", r2.id, "all", canary=0, batch="100%")
    world.engine.tick()
    world.converge("a")
    aborted = world.engine.abort(second.id)
    assert aborted.state == RolloutState.ABORTED
    assert [d.apps[0].image for d in world.docs("a")] == [r1.image, r2.image, r1.image]
    assert [d.generation for d in world.docs("a")] == [1, 2, 3]
    world.converge("a")
    world.converge("b")
    world.engine.tick()
    final = world.engine.get(second.id)
    assert {t.state for t in final.targets} == {TargetState.REVERTED}
    assert world.store.open_rollout_ids() == []


def test_pinned_devices_are_skipped_and_a_pin_to_a_release_moves_the_device(world: World) -> None:
    world.online("a", "b")
    r1, r2 = world.store.add_release(release(1)), world.store.add_release(release(2))
    world.fleet.pin("a", "hello", r1.id)
    world.engine.tick()
    assert [d.apps[0].image for d in world.docs("a")] == [r1.image]
    r = world.engine.start_rollout("hello", r2.id, "all", canary=0, batch="100%")
    assert {t.device_id: t.state for t in r.targets} == {"a": TargetState.SKIPPED, "b": TargetState.PENDING}
    world.engine.tick()
    assert len(world.docs("a")) == 1


def test_an_offline_device_stays_pending_then_fails_at_the_deadline(world: World) -> None:
    world.online("a", "b")
    r1 = world.store.add_release(release(1))
    r = world.engine.start_rollout("hello", r1.id, "all", canary=0, batch="100%", max_failures=1,
                                   offline_deadline=60)
    world.engine.tick()
    world.clock.now += 10  # b went silent; a keeps beating and converges
    world.heartbeat("a")
    world.converge("a")
    world.engine.tick()
    mid = {t.device_id: t.state for t in world.engine.get(r.id).targets}
    assert mid == {"a": TargetState.CONVERGED, "b": TargetState.UPDATING}
    assert world.engine.get(r.id).state == RolloutState.RUNNING
    world.clock.now += 55
    world.engine.tick()
    end = world.engine.get(r.id)
    assert end.state == RolloutState.COMPLETED
    assert {t.device_id: t.state for t in end.targets} == {"a": TargetState.CONVERGED, "b": TargetState.FAILED}


@pytest.mark.parametrize("kwargs,error,message", [
    ({"release": 99}, NotFound, "no release '99'"),
    ({"release": "9.9"}, NotFound, "no release '9.9'"),
    ({"app": "other"}, NotFound, "app 'other' has no release"),
    ({"app": "Bad_Name"}, InvalidRequest, "app name"),
    ({"selector": "everything"}, InvalidRequest, "selector"),
    ({"canary": -1}, InvalidRequest, "canary"),
    ({"canary": True}, InvalidRequest, "canary"),
    ({"batch": "0"}, InvalidRequest, "batch must be at least"),
    ({"batch": "150%"}, InvalidRequest, "over 100%"),
    ({"max_failures": "x"}, InvalidRequest, "max failures"),
    ({"health_timeout": 0}, InvalidRequest, "health timeout"),
    ({"offline_deadline": "soon"}, InvalidRequest, "offline deadline"),
])
def test_bad_rollout_requests_are_refused(world: World, kwargs: dict, error: type, message: str) -> None:  # type: ignore[type-arg]
    world.store.add_release(release(1))
    args = {"app": "hello", "release": "1.0", "selector": "all", **kwargs}
    with pytest.raises(error, match=message):
        world.engine.start_rollout(args.pop("app"), args.pop("release"), args.pop("selector"), **args)


def test_one_active_rollout_per_app_and_state_changes_must_make_sense(world: World) -> None:
    world.online("a")
    world.store.add_release(release(1))
    r = world.engine.start_rollout("hello", "1.0", "all")
    with pytest.raises(Conflict, match="still running"):
        world.engine.start_rollout("hello", "1.0", "all")
    with pytest.raises(Conflict, match="not paused"):
        world.engine.resume(r.id)
    assert world.engine.pause(r.id).state == RolloutState.PAUSED
    with pytest.raises(Conflict, match="not running"):
        world.engine.pause(r.id)
    assert world.engine.resume(r.id).state == RolloutState.RUNNING
    world.engine.abort(r.id)
    with pytest.raises(Conflict, match="already aborted"):
        world.engine.abort(r.id)
    with pytest.raises(NotFound):
        world.engine.pause(12345)


# -- a big batch goes out a chunk at a time ---------------------------------------------------------------

FIVE = ("a", "b", "c", "d", "e")


def big_batch(world: World, monkeypatch: pytest.MonkeyPatch) -> int:
    """Five devices, one batch for all of them, two per chunk: three chunks."""
    monkeypatch.setattr(engine_module, "CHUNK", 2)
    world.online(*FIVE)
    r1 = world.store.add_release(release(1))
    return world.engine.start_rollout("hello", r1.id, "all", canary=0, batch="100%").id


def test_a_big_batch_is_stored_and_sent_a_chunk_at_a_time(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout_id = big_batch(world, monkeypatch)
    sends: list[int] = []
    world.publisher.on_sent = sends.append
    world.engine.tick()
    assert sends[:3] == [2, 2, 1]  # three chunks, each sent after its own commit
    r = world.engine.get(rollout_id)
    assert {t.device_id: (t.state, t.batch, t.generation) for t in r.targets} == {
        d: (TargetState.UPDATING, 0, 1) for d in FIVE}
    for d in FIVE:
        world.converge(d)
    world.engine.tick()
    assert world.engine.get(rollout_id).state == RolloutState.COMPLETED


def test_a_pause_between_chunks_holds_the_rest_of_the_batch(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout_id = big_batch(world, monkeypatch)
    real_send = world.publisher._send

    def operator_pauses_after_the_first_chunk(topic: str, payload: bytes) -> None:
        real_send(topic, payload)
        if world.engine.get(rollout_id).state == RolloutState.RUNNING:
            world.engine.pause(rollout_id)

    world.publisher._send = operator_pauses_after_the_first_chunk  # type: ignore[method-assign]
    world.engine.tick()
    world.publisher._send = real_send  # type: ignore[method-assign]
    r = world.engine.get(rollout_id)
    states = {t.device_id: t.state for t in r.targets}
    assert states == {"a": TargetState.UPDATING, "b": TargetState.UPDATING, "c": TargetState.PENDING,
                      "d": TargetState.PENDING, "e": TargetState.PENDING}
    assert [d for d in FIVE if world.docs(d)] == ["a", "b"]  # nothing went out for the held devices
    world.engine.resume(rollout_id)
    world.converge("a"), world.converge("b")
    world.engine.tick()  # the rest go as the next batch
    assert {t.device_id: t.batch for t in world.engine.get(rollout_id).targets if t.device_id in "cde"} == {
        "c": 1, "d": 1, "e": 1}
    for d in "cde":
        world.converge(d)
    world.engine.tick()
    assert world.engine.get(rollout_id).state == RolloutState.COMPLETED


def test_a_controller_that_dies_between_chunks_starts_the_rest_after_a_restart(
        world: World, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout_id = big_batch(world, monkeypatch)

    class Died(BaseException):
        pass

    def dies_after_the_first_chunk(topic: str, payload: bytes) -> None:
        world.broker(topic, payload)
        if len(world.broker.sent) == 2:
            raise Died

    world.publisher._send = dies_after_the_first_chunk  # type: ignore[method-assign]
    with pytest.raises(Died):
        world.engine.tick()
    world.store.close()
    again = World(store_url)  # the restarted controller, on the same database
    again.broker.sent = world.broker.sent
    again.clock.now = world.clock.now
    again.engine.tick()
    r = again.engine.get(rollout_id)
    assert {t.device_id: t.state for t in r.targets if t.state == TargetState.UPDATING} == {
        "a": TargetState.UPDATING, "b": TargetState.UPDATING}  # the first chunk is in flight: wait for it
    again.converge("a"), again.converge("b")
    again.engine.tick()
    again.engine.tick()
    for d in "cde":
        assert again.docs(d), d
        again.converge(d)
    again.engine.tick()
    done = again.engine.get(rollout_id)
    assert done.state == RolloutState.COMPLETED and done.counts()["converged"] == 5


def test_a_device_pinned_between_chunks_keeps_its_pin(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout_id = big_batch(world, monkeypatch)
    r2 = world.store.add_release(release(2))
    real_send = world.publisher._send

    def operator_pins_e_after_the_first_chunk(topic: str, payload: bytes) -> None:
        real_send(topic, payload)
        if not world.store.pinned("hello", ["e"]):
            world.fleet.pin("e", "hello", r2.id)

    world.publisher._send = operator_pins_e_after_the_first_chunk  # type: ignore[method-assign]
    world.engine.tick()
    world.publisher._send = real_send  # type: ignore[method-assign]
    assert world.docs("e")[-1].apps[0].image == r2.image  # the pin's release, not the rollout's
    for d in "abcd":
        world.converge(d)
    world.engine.tick()
    done = world.engine.get(rollout_id)
    assert {t.device_id: t.state for t in done.targets}["e"] == TargetState.SKIPPED
    assert world.store.device("e").assigned("hello") == r2.id  # type: ignore[union-attr]
