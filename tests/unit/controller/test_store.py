"""The store against both real databases - a SQLite file and a private PostgreSQL (`store_url`): schema
versions, liveness bookkeeping, generations, rollouts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.controller.records import health, release, reported, running, seen, status
from tinyfleet.controller.dialect import Location
from tinyfleet.controller.errors import StoreError
from tinyfleet.controller.model import Binding
from tinyfleet.controller.rollout import Amount, Rollout, RolloutState, Target, TargetState
from tinyfleet.controller.selector import Selector
from tinyfleet.controller.store import ROWS_PER_STATEMENT, SCHEMA_VERSION, Incoming, Store
from tinyfleet.protocol.messages import AppSpec, HealthPolicy


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def test_a_new_database_gets_the_current_schema_and_keeps_it_on_reopen(store_url: str) -> None:
    s = Store(store_url)
    assert s.schema_version() == SCHEMA_VERSION
    seen(s, "pi-1")
    s.close()
    again = Store(store_url)
    assert again.schema_version() == SCHEMA_VERSION
    assert again.device_ids() == ["pi-1"]
    again.close()


def test_a_database_from_a_newer_tinyfleet_is_refused(store_url: str) -> None:
    s = Store(store_url)
    s.set_meta("schema_version", "99")
    s.close()
    with pytest.raises(StoreError, match="newer than this tinyfleet"):
        Store(store_url)


def test_the_sqlite_database_runs_in_wal_mode(tmp_path: Path) -> None:
    assert Store(tmp_path / "f.db")._one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]


@pytest.mark.parametrize(("location", "kind", "shown"), [
    ("/var/lib/tinyfleet/controller.db", "sqlite", "/var/lib/tinyfleet/controller.db"),
    ("sqlite:///var/lib/tinyfleet/controller.db", "sqlite", "/var/lib/tinyfleet/controller.db"),
    ("postgresql://fleet:s3cret@db.example:5432/fleet", "postgresql", "postgresql://fleet:***@db.example:5432/fleet"),
    ("postgres://db.example/fleet", "postgresql", "postgres://db.example/fleet"),
])
def test_the_database_location_picks_the_store(location: str, kind: str, shown: str) -> None:
    parsed = Location.parse(location)
    assert (parsed.kind, str(parsed)) == (kind, shown)


@pytest.mark.parametrize("location", ["sqlite://relative.db", "mysql://db.example/fleet"])
def test_a_database_location_that_is_neither_is_refused(location: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///PATH"):
        Location.parse(location)


# -- liveness -----------------------------------------------------------------------------------------

def test_a_device_appears_with_its_first_message(store: Store) -> None:
    store.record([Incoming(health("pi-1"), live=True)], now=10, stale_after=3)
    d = store.device("pi-1")
    assert d is not None and d.first_seen == 10 and d.last_seen == 10 and d.online_since == 10 and d.status_online
    assert d.health and d.health["cpu_temp_c"] == 48.5


def test_retained_history_is_not_a_sign_of_life(store: Store) -> None:
    store.record([Incoming(status("pi-1"), live=False), Incoming(reported("pi-1", 3), live=False)], now=10,
                 stale_after=3)
    d = store.device("pi-1")
    assert d is not None and d.status_online and d.last_seen is None and d.online_since is None
    assert d.reported_generation == 3 and d.platform == "linux/arm64"


def test_online_since_restarts_only_after_an_absence(store: Store) -> None:
    seen(store, "pi-1", at=10)
    store.record([Incoming(health("pi-1"), live=True)], now=12, stale_after=3)
    assert store.device("pi-1").online_since == 10  # type: ignore[union-attr]
    store.record([Incoming(health("pi-1"), live=True)], now=20, stale_after=3)  # 8 s of silence
    assert store.device("pi-1").online_since == 20  # type: ignore[union-attr]
    store.record([Incoming(status("pi-1", online=False), live=True)], now=21, stale_after=3)  # its last will
    d = store.device("pi-1")
    assert d is not None and not d.status_online and d.last_seen == 20
    seen(store, "pi-1", at=22)
    assert store.device("pi-1").online_since == 22  # type: ignore[union-attr]


# -- memberships and selection ------------------------------------------------------------------------

def test_selection_by_group_tag_and_id(store: Store) -> None:
    seen(store, "a", "b", "c")
    store.add_to_group("a", "kitchen")
    store.add_to_group("b", "kitchen")
    store.set_tag("b", "site", "berlin")
    store.set_tag("c", "site", "paris")
    assert store.device_ids(Selector.parse("group:kitchen")) == ["a", "b"]
    assert store.device_ids(Selector.parse("tag:site=berlin")) == ["b"]
    assert store.device_ids(Selector.parse("device:c,zz")) == ["c"]
    assert store.device_ids(Selector.parse("all")) == ["a", "b", "c"]
    assert store.groups() == [("kitchen", 2)]
    b = store.device("b")
    assert b is not None and b.groups == ("kitchen",) and b.tags == (("site", "berlin"),)


def test_joining_a_group_or_tagging_asks_for_a_binding_pass(store: Store) -> None:
    seen(store, "a")
    assert store.devices_needing_binding() == ["a"]  # new devices too
    store.clear_needs_binding(["a"])
    assert store.devices_needing_binding() == []
    store.add_to_group("a", "g")
    assert store.devices_needing_binding() == ["a"]


# -- assignments and generations ----------------------------------------------------------------------

def test_assignments_report_whether_they_changed_and_flag_the_device_for_publishing(store: Store) -> None:
    seen(store, "a")
    r1 = store.add_release(release(1))
    assert store.assign("a", "hello", r1.id, None, 1.0) is True
    assert store.assign("a", "hello", r1.id, None, 2.0) is False
    assert store.devices_needing_publish() == ["a"]
    assert store.desired_inputs_many(["a"])["a"] == (0, 0, [r1])
    store.save_desired_many([("a", 1, b"doc")])
    assert store.devices_needing_publish() == []
    assert store.assign("a", "hello", None, None, 3.0) is True
    assert store.desired_inputs_many(["a"])["a"][2] == []


def test_every_write_to_a_device_record_is_counted_as_a_change_for_readers_that_keep_records(store: Store) -> None:
    assert store.take_changed() is None  # nothing known yet: a reader loads everything
    r1 = store.add_release(release(1))
    writes = {
        "seen": lambda: seen(store, "a"),
        "health": lambda: store.record([Incoming(health("a"), live=True)], now=101, stale_after=3),
        "report": lambda: store.record([Incoming(reported("a", 1), live=True)], now=101, stale_after=3),
        "tag": lambda: store.set_tag("a", "site", "x"), "untag": lambda: store.remove_tag("a", "site"),
        "join": lambda: store.add_to_group("a", "g"), "leave": lambda: store.remove_from_group("a", "g"),
        "pin": lambda: store.set_pin("a", "hello", None), "unpin": lambda: store.remove_pin("a", "hello"),
        "assign": lambda: store.assign("a", "hello", r1.id, None, 1.0),
        "document": lambda: store.save_desired_many([("a", 7, b"doc")]),
    }
    assert store.take_changed() == set()
    for what, write in writes.items():
        write()
        assert store.take_changed() == {"a"}, what
        assert store.take_changed() == set(), what
    store.assign("a", "hello", r1.id, None, 2.0)  # no change, nothing to re-read
    assert store.take_changed() == set()


def test_a_generation_never_goes_back(store: Store) -> None:
    seen(store, "a")
    store.save_desired_many([("a", 5, b"five")])
    with pytest.raises(StoreError, match="not above"):
        store.save_desired_many([("a", 5, b"again")])
    assert store.desired_payloads() == [("a", 5, b"five")]


@pytest.mark.parametrize(("announced", "sent_again", "due"), [
    (0, [("a", 5, b"five")], []),  # a board that lost its state, or never got the document
    (4, [("a", 5, b"five")], []),
    (5, [], []),  # up to date: nothing to answer
    (9, [], ["a"]),  # above what the store holds (an old backup): a new document above it is due
])
def test_a_board_announcing_its_generation_on_connect_is_answered_from_the_stored_document(
        store: Store, announced: int, sent_again: list, due: list[str]) -> None:  # type: ignore[type-arg]
    seen(store, "a", "b")
    store.save_desired_many([("a", 5, b"five")])
    hello = replace(status("a"), generation=announced)
    store.record([Incoming(hello, live=True)], now=101, stale_after=3)
    assert store.documents_newer_than({"a": announced, "b": 0}) == sent_again  # b has no document
    assert store.devices_needing_publish() == due


def test_a_batch_of_assignments_applies_in_order_and_names_only_the_devices_that_changed(store: Store) -> None:
    seen(store, "a", "b", "c")
    r1, r2 = store.add_release(release(1)), store.add_release(release(2))
    store.assign("a", "hello", r1.id, None, 1.0)
    store.save_desired_many([("a", 1, b"doc")])
    changed = store.assign_many("hello", [("a", r1.id), ("b", r1.id), ("c", r1.id), ("c", r2.id)], 7, 2.0)
    assert changed == ["b", "c"]  # a already had r1; for c the last word counts
    assert sorted(store.devices_needing_publish()) == ["b", "c"]
    assert {d: inputs[2] for d, inputs in store.desired_inputs_many(["a", "b", "c"]).items()} == {
        "a": [r1], "b": [r1], "c": [r2]}
    assert store.assign_many("hello", [("b", None), ("a", r1.id)], None, 3.0) == ["b"]
    assert store.desired_inputs_many(["b"])["b"][2] == []
    assert store.assign_many("hello", [], None, 4.0) == []


def test_a_batch_larger_than_one_statement_is_stored_whole_and_byte_exact(store: Store) -> None:
    devices = [f"pi-{i:04d}" for i in range(ROWS_PER_STATEMENT * 2 + 7)]
    seen(store, *devices)
    r1 = store.add_release(release(1))
    assert store.assign_many("hello", [(d, r1.id) for d in devices], 3, 5.0) == devices
    odd = b"it's 100% \\x00 ? \x00\xff"  # quotes, percent, backslash, placeholder, NUL: all plain bytes
    store.save_desired_many([(d, 1, odd + d.encode()) for d in devices])
    assert store.desired_payloads() == [(d, 1, odd + d.encode()) for d in devices]
    assert store.devices_needing_publish() == []
    assert {d: inputs[2] for d, inputs in store.desired_inputs_many(devices).items()} == {d: [r1] for d in devices}


def test_documents_for_many_devices_are_stored_all_or_none(store: Store) -> None:
    seen(store, "a", "b")
    store.save_desired_many([("b", 5, b"five")])
    with pytest.raises(StoreError, match="b is not above"):
        store.save_desired_many([("a", 1, b"one"), ("b", 5, b"again")])
    assert store.desired_payloads() == [("b", 5, b"five")]  # a's document went with the failed batch
    store.save_desired_many([("a", 1, b"one"), ("b", 6, b"six")])
    assert store.desired_payloads() == [("a", 1, b"one"), ("b", 6, b"six")]
    with pytest.raises(StoreError, match="ghost is not in the store"):
        store.desired_inputs_many(["a", "ghost"])


def test_a_report_ahead_of_the_stored_generation_asks_for_a_new_document(store: Store) -> None:
    seen(store, "a")
    store.save_desired_many([("a", 2, b"two")])
    store.record([Incoming(reported("a", 2), live=True)], now=101, stale_after=3)
    assert store.devices_needing_publish() == []
    store.record([Incoming(reported("a", 7), live=True)], now=102, stale_after=3)
    assert store.devices_needing_publish() == ["a"]


# -- releases, rollouts, bindings ---------------------------------------------------------------------

def test_releases_round_trip_and_the_same_release_is_found(store: Store) -> None:
    r1 = store.add_release(release(1))
    r2 = store.add_release(release(2))
    assert store.release(r1.id) == r1 and r1.id != r2.id
    assert [r.id for r in store.releases()] == [r2.id, r1.id]
    assert store.release_by_version("hello", "2.0") == r2
    assert store.same_release(release(1)) == r1
    assert store.same_release(release(3)) is None
    assert store.release(999) is None


def test_rollouts_round_trip_with_their_targets(store: Store) -> None:
    rel = store.add_release(release(1))
    r = Rollout(id=0, app="hello", release_id=rel.id, image=rel.image, platforms=(), selector="group:g", canary=2,
                batch=Amount(30, True), max_failures=Amount(1), health_timeout=60, offline_deadline=120,
                created_at=5, targets=(Target("a"), Target("b", TargetState.SKIPPED, reason="pinned")))
    created = store.create_rollout(r)
    assert created.id > 0 and created.image == rel.image
    assert created.platforms == ("linux/arm64", "linux/arm/v7")
    assert (created.batch, created.max_failures, created.canary) == (Amount(30, True), Amount(1), 2)
    assert store.open_rollout_ids() == [created.id] and store.active_rollout("hello") == created.id
    moved = Target("a", TargetState.UPDATING, batch=0, started_at=6, generation=3)
    done = Rollout(**{**created.__dict__, "state": RolloutState.COMPLETED, "batches_started": 1,
                      "targets": (moved, created.targets[1])})
    store.save_rollout(done, [moved])
    again = store.rollout(created.id)
    assert again is not None and again.targets == (moved, created.targets[1]) and again.state == RolloutState.COMPLETED
    assert store.open_rollout_ids() == [] and store.active_rollout("hello") is None
    assert store.rollout_states() == {"completed": 1}


def test_a_rollout_listing_counts_targets_in_the_store_exactly_as_the_rollout_counts_them(store: Store) -> None:
    rel = store.add_release(release(1))
    targets = (Target("a", TargetState.CONVERGED), Target("b", TargetState.FAILED, reason="failed: crashed"),
               Target("c", TargetState.REVERTING, reason="failed: unhealthy"), Target("d", TargetState.REVERTING),
               Target("e", TargetState.REVERTED, reason="failed: rejected"), Target("f", TargetState.SKIPPED),
               Target("g", TargetState.REVERTED, reason="superseded: the device was given release 9 meanwhile"))
    base = Rollout(id=0, app="hello", release_id=rel.id, image=rel.image, platforms=(), selector="all",
                   max_failures=Amount(50, True), targets=targets)
    aborted = store.create_rollout(replace(base, state=RolloutState.ABORTED))
    # the operator aborted: everything reverts, and no target has a reason (SQL's SUM over them is NULL)
    reverting = store.create_rollout(replace(base, state=RolloutState.ABORTED, targets=(
        Target("a", TargetState.REVERTING), Target("b", TargetState.REVERTED, settled_at=3.0))))
    quiet = store.create_rollout(replace(base, app="other", targets=()))
    listed = {r.id: r.to_dict(targets=False, tally=t) for r, t in store.rollout_summaries()}
    for full in (aborted, reverting, quiet):
        assert listed[full.id] == full.to_dict(targets=False)
    assert listed[reverting.id]["failures"] == 0
    # and loaded whole, each has all its targets
    assert [len(store.rollout(r.id).targets) for r, _ in store.rollout_summaries()] == [0, 2, 7]  # type: ignore[union-attr]
    assert listed[aborted.id]["failures"] == 3 and listed[aborted.id]["failure_limit"] == 3
    assert listed[aborted.id]["open"] is True and listed[quiet.id]["total"] == 0
    assert [r.id for r, _ in store.rollout_summaries("other")] == [quiet.id]


def test_bindings_are_listed_newest_first_and_rebinding_replaces(store: Store) -> None:
    r1, r2 = store.add_release(release(1)), store.add_release(release(2))
    store.bind(Binding("group:g", "hello", r1.id, None, 1.0))
    store.bind(Binding("all", "hello", r1.id, None, 2.0))
    store.bind(Binding("group:g", "hello", r2.id, None, 3.0))
    assert [(b.selector, b.release_id) for b in store.bindings()] == [("group:g", r2.id), ("all", r1.id)]


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    seen(store, "a")
    with pytest.raises(RuntimeError), store.transaction():
        store.set_tag("a", "k", "v")
        raise RuntimeError("half-way")
    assert store.device("a").tags == ()  # type: ignore[union-attr]


def test_reported_apps_come_back_as_statuses(store: Store) -> None:
    img = release(1).image
    store.record([Incoming(reported("a", 4, running("hello", img)), live=True)], now=1, stale_after=3)
    d = store.device("a")
    assert d is not None and d.reported_generation == 4
    assert d.app_status("hello") == running("hello", img) and d.app_status("other") is None
    from dataclasses import replace

    from tinyfleet.protocol.messages import LockHeld, Phase
    held = replace(running("hello", img), phase=Phase.PENDING, locked=LockHeld("print-job-42", 1.0, 60.0))
    store.record([Incoming(reported("a", 5, held), live=True)], now=2, stale_after=3)
    assert store.device("a").app_status("hello") == held  # type: ignore[union-attr]  # the lock, for the rollout


def test_a_release_carries_a_health_policy_only_when_the_operator_gave_one(store: Store) -> None:
    plain = store.add_release(release(1))
    assert plain.health is None
    assert plain.spec() == AppSpec(name="hello", image=plain.image)  # whatever the contract's default is
    tuned = store.add_release(replace(release(2), health=HealthPolicy(2.0, 20.0), max_bytes=5000))
    assert store.release(tuned.id) == tuned
    assert tuned.spec().health == HealthPolicy(2.0, 20.0) and tuned.spec().max_bytes == 5000
