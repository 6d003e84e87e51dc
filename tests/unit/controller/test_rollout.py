"""The rollout state machine, as scenario tables: given a rollout, what the devices report and the
time, what the next step is."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tinyfleet.controller import rollout as machine
from tinyfleet.controller.errors import InvalidRequest
from tinyfleet.controller.rollout import Amount, Assign, DeviceView, Rollout, RolloutState, Target, TargetState
from tinyfleet.protocol.messages import AppStatus, LockHeld, Phase

NEW = "reg.example/acme/hello@sha256:" + "b" * 64
OLD = "reg.example/acme/hello@sha256:" + "a" * 64
P, U, C, F = TargetState.PENDING, TargetState.UPDATING, TargetState.CONVERGED, TargetState.FAILED
RV, RD, S = TargetState.REVERTING, TargetState.REVERTED, TargetState.SKIPPED


def view(device_id: str, *, online: bool = True, gen: int = 1, phase: Phase | None = Phase.RUNNING,
         current: str | None = OLD, desired: str | None = None, health: str = "healthy", since: float = 0.0,
         platform: str | None = "linux/arm64", pinned: bool = False, rejected: int | None = None) -> DeviceView:
    app = None if phase is None else AppStatus("hello", phase, desired or current, current, health=health,
                                               error="boom" if phase in (Phase.FAILED, Phase.ROLLED_BACK) else None)
    return DeviceView(device_id, online=online, online_since=since, platform=platform, pinned=pinned, generation=gen,
                      rejected_generation=rejected, error="too old" if rejected else None, app=app, assigned=1,
                      assigned_image=OLD)


def locked_new(device_id: str, gen: int = 2, **kw: object) -> DeviceView:
    """The release downloaded, held back by the app's update lock: the old version runs."""
    v = view(device_id, gen=gen, phase=Phase.PENDING, desired=NEW, **kw)  # type: ignore[arg-type]
    return replace(v, app=replace(v.app, locked=LockHeld("print-job-42", 0.0)))  # type: ignore[arg-type]


def running_new(device_id: str, gen: int = 2, **kw: object) -> DeviceView:
    return view(device_id, gen=gen, current=NEW, desired=NEW, **kw)  # type: ignore[arg-type]


def target(device_id: str, state: TargetState = P, *, batch: int | None = None, started: float | None = None,
           gen: int | None = None, reason: str | None = None) -> Target:
    if state != P and started is None and state != S:
        started = 0.0
    return Target(device_id, state, previous_release_id=1, previous_image=OLD, batch=batch, started_at=started,
                  generation=gen if gen is not None or state == P else 2, reason=reason)


def rollout(*targets: Target, **kw: object) -> Rollout:
    base = Rollout(id=7, app="hello", release_id=2, image=NEW, platforms=("linux/arm64", "linux/arm/v7"),
                   selector="group:g", canary=1, batch=Amount(1), max_failures=Amount(0), health_timeout=300,
                   offline_deadline=600, targets=targets)
    return replace(base, **kw)  # type: ignore[arg-type]


def states(r: Rollout) -> dict[str, TargetState]:
    return {t.device_id: t.state for t in r.targets}


# -- starting batches ---------------------------------------------------------------------------------

BATCHES = [
    # name, rollout, views, expected states, devices assigned the new release
    ("the canary goes first, alone",
     rollout(target("a"), target("b"), target("c")),
     {d: view(d) for d in "abc"}, {"a": U, "b": P, "c": P}, ["a"]),
    ("the canary is an online device",
     rollout(target("a"), target("b")),
     {"a": view("a", online=False), "b": view("b")}, {"a": P, "b": U}, ["b"]),
    ("nothing new starts while the canary is in flight",
     rollout(target("a", U, batch=0), target("b"), batches_started=1),
     {"a": view("a", gen=2, phase=Phase.PULLING, desired=NEW), "b": view("b")}, {"a": U, "b": P}, []),
    ("a converged canary lets the next batch start",
     rollout(target("a", U, batch=0), target("b"), target("c"), target("d"), batches_started=1, batch=Amount(2)),
     {"a": running_new("a"), **{d: view(d) for d in "bcd"}}, {"a": C, "b": U, "c": U, "d": P}, ["b", "c"]),
    ("a batch given in percent is rounded up",
     rollout(*(target(d) for d in "abcdefg"), batches_started=1, batch=Amount(20, percent=True)),
     {d: view(d) for d in "abcdefg"}, {"a": U, "b": U, **{d: P for d in "cdefg"}}, ["a", "b"]),
    ("canary 0 starts with a full batch",
     rollout(target("a"), target("b"), target("c"), canary=0, batch=Amount(2)),
     {d: view(d) for d in "abc"}, {"a": U, "b": U, "c": P}, ["a", "b"]),
    ("an offline device in flight does not hold up the next batch",
     rollout(target("a", U, batch=0), target("b"), batches_started=1),
     {"a": view("a", online=False), "b": view("b")}, {"a": U, "b": U}, ["b"]),
    ("a canary held by an update lock holds up the next batch: it has proven nothing yet",
     rollout(target("a", U, batch=0, reason="locked by print-job-42 since 1970-01-01 00:00:00Z"), target("b"),
             batches_started=1),
     {"a": locked_new("a"), "b": view("b")}, {"a": U, "b": P}, []),
    ("a device pinned before its batch is skipped",
     rollout(target("a"), target("b")),
     {"a": view("a", pinned=True), "b": view("b")}, {"a": S, "b": P}, []),
    ("a device whose platform the release lacks fails without being touched",
     rollout(target("a"), target("b")),
     {"a": view("a", platform="linux/arm/v6"), "b": view("b")}, {"a": F, "b": P}, []),
    ("a device that appears matching the selector joins as pending",
     rollout(target("a", U, batch=0), batches_started=1),
     {"a": view("a", gen=2, phase=Phase.PULLING, desired=NEW), "z": view("z")}, {"a": U, "z": P}, []),
]


@pytest.mark.parametrize("name,r,views,expected,assigned", BATCHES, ids=[b[0] for b in BATCHES])
def test_batches(name: str, r: Rollout, views: dict[str, DeviceView], expected: dict[str, TargetState],
                 assigned: list[str]) -> None:
    d = machine.next(r, views, now=10.0)
    assert states(d.rollout) == expected
    assert d.assign == tuple(Assign(x, 2) for x in assigned)
    assert d.rollout.state == RolloutState.RUNNING


# -- judging devices in flight ------------------------------------------------------------------------

JUDGE = [
    # name, view of device "a" (updating since t=0, waiting for generation 2), now, expected state
    ("running the release healthy at the new generation: converged", running_new("a"), 10, C),
    ("running it with no health check: converged", running_new("a", health="none"), 10, C),
    ("right image but an older generation: still updating", running_new("a", gen=1), 10, U),
    ("health check still starting: still updating", running_new("a", health="starting"), 10, U),
    ("unhealthy: still updating until the agent decides", running_new("a", health="unhealthy"), 10, U),
    ("rolled back from the release: failed", view("a", gen=2, phase=Phase.ROLLED_BACK, desired=NEW), 10, F),
    ("refused before pulling: failed", view("a", gen=2, phase=Phase.FAILED, current=None, desired=NEW), 10, F),
    ("a failure report from before this generation: ignored",
     view("a", gen=1, phase=Phase.FAILED, current=None, desired=NEW), 10, U),
    ("the document was rejected as malformed: failed", view("a", gen=1, rejected=2), 10, F),
    ("rejected as older than what the device accepted: still updating (it is re-issued above)",
     view("a", gen=5, rejected=2), 10, U),
    ("...and converged once it runs the re-issued document", running_new("a", gen=6, rejected=2), 10, C),
    ("online and not converged within the health timeout: failed",
     view("a", gen=2, phase=Phase.PULLING, desired=NEW), 301, F),
    ("the health clock starts again when the device comes back online",
     view("a", gen=1, since=250), 301, U),
    ("held by an update lock past the health timeout: pending, not failed", locked_new("a"), 3000, U),
    ("locked, but at an older generation: the health timeout applies",
     replace(locked_new("a"), generation=1), 301, F),
    ("offline: pending until the offline deadline", view("a", online=False), 599, U),
    ("offline past the deadline: failed", view("a", online=False), 601, F),
]


@pytest.mark.parametrize("name,v,now,expected", JUDGE, ids=[j[0] for j in JUDGE])
def test_judging_a_device_in_flight(name: str, v: DeviceView, now: float, expected: TargetState) -> None:
    r = rollout(target("a", U, batch=0), target("b"), batches_started=1, max_failures=Amount(1))
    d = machine.next(r, {"a": v, "b": view("b", online=False)}, now=now)
    got = next(t for t in d.rollout.targets if t.device_id == "a")
    assert got.state == expected, got.reason
    if expected == F:
        assert got.reason and got.reason.startswith("failed: ")


def test_a_device_pinned_while_updating_is_skipped() -> None:
    r = rollout(target("a", U, batch=0), batches_started=1)
    d = machine.next(r, {"a": view("a", gen=2, pinned=True)}, now=5)
    assert states(d.rollout) == {"a": S}


# -- thresholds, abort and rollback --------------------------------------------------------------------

def test_failures_over_the_limit_abort_and_put_touched_devices_back() -> None:
    r = rollout(target("a", C, batch=0), target("b", U, batch=1), target("c", U, batch=1), target("d"),
                batches_started=2, max_failures=Amount(0))
    views = {"a": running_new("a"), "b": view("b", gen=2, phase=Phase.ROLLED_BACK, desired=NEW),
             "c": view("c", gen=2, phase=Phase.PULLING, desired=NEW), "d": view("d")}
    d = machine.next(r, views, now=20)
    assert d.rollout.state == RolloutState.ABORTED
    assert d.rollout.reason == "1 failed, over the limit of 0"
    assert states(d.rollout) == {"a": RV, "b": RV, "c": RV, "d": S}
    assert set(d.assign) == {Assign("a", 1), Assign("b", 1), Assign("c", 1)}
    assert not d.bind


@pytest.mark.parametrize("limit,failed,aborts", [
    (Amount(1), 1, False), (Amount(1), 2, True),
    (Amount(20, percent=True), 2, False), (Amount(20, percent=True), 3, True),  # 20% of 10 = 2
    (Amount(0, percent=True), 1, True),
])
def test_failure_limit(limit: Amount, failed: int, aborts: bool) -> None:
    targets = [target(f"f{i}", F, batch=0, reason="failed: x") for i in range(failed)]
    targets += [target(f"p{i}") for i in range(10 - failed)]
    d = machine.next(rollout(*targets, max_failures=limit, batches_started=1), {}, now=1)
    assert (d.rollout.state == RolloutState.ABORTED) is aborts


def test_a_paused_rollout_starts_no_batch_but_still_aborts_on_failures() -> None:
    r = rollout(target("a", C, batch=0), target("b"), batches_started=1, state=RolloutState.PAUSED)
    calm = machine.next(r, {"a": running_new("a"), "b": view("b")}, now=5)
    assert states(calm.rollout) == {"a": C, "b": P} and not calm.assign
    r = rollout(target("a", U, batch=0), target("b"), batches_started=1, state=RolloutState.PAUSED)
    failing = machine.next(r, {"a": view("a", gen=2, phase=Phase.ROLLED_BACK, desired=NEW), "b": view("b")}, now=5)
    assert failing.rollout.state == RolloutState.ABORTED


def test_operator_abort_without_rollback_leaves_devices_where_they_are() -> None:
    r = rollout(target("a", C, batch=0), target("b"), batches_started=1)
    d = machine.abort(r, now=3, reason="operator", rollback=False)
    assert states(d.rollout) == {"a": C, "b": S} and not d.assign
    assert not machine.is_open(d.rollout)


def test_abort_leaves_a_device_that_already_had_the_release_alone() -> None:
    already = replace(target("a", C, batch=0), previous_release_id=2, previous_image=NEW)
    d = machine.abort(rollout(already, target("b", U, batch=1)), now=3, reason="x")
    assert states(d.rollout) == {"a": RD, "b": RV}
    assert d.assign == (Assign("b", 1),)


def test_a_first_release_is_rolled_back_by_taking_the_app_off() -> None:
    fresh = replace(target("a", U, batch=0), previous_release_id=None, previous_image=None)
    d = machine.abort(rollout(fresh), now=3, reason="x")
    assert d.assign == (Assign("a", None),)
    reverting = replace(d.rollout.targets[0], generation=3)
    aborted = replace(d.rollout, targets=(reverting,))
    app_taken_off = replace(running_new("a", gen=3), assigned=None, assigned_image=None)  # agent not there yet
    still_there = machine.next(aborted, {"a": app_taken_off}, now=4)
    assert states(still_there.rollout) == {"a": RV}
    gone = machine.next(aborted, {"a": view("a", gen=3, phase=None)}, now=4)
    assert states(gone.rollout) == {"a": RD}


def test_an_aborted_rollout_follows_its_reverts_until_done() -> None:
    r = rollout(target("a", RV, batch=0, gen=3), target("b", RV, batch=0, gen=3), state=RolloutState.ABORTED)
    d = machine.next(r, {"a": view("a", gen=3), "b": running_new("b", gen=2)}, now=9)
    assert states(d.rollout) == {"a": RD, "b": RV}
    assert machine.is_open(d.rollout)
    done = machine.next(d.rollout, {"b": view("b", gen=3)}, now=10)
    assert not machine.is_open(done.rollout)


def test_a_revert_superseded_by_a_later_release_stops_waiting() -> None:
    r = rollout(target("a", RV, batch=0, gen=3), state=RolloutState.ABORTED)
    moved_on = replace(running_new("a", gen=4), assigned=5, assigned_image=NEW)
    d = machine.next(r, {"a": moved_on}, now=9)
    assert states(d.rollout) == {"a": RD} and "superseded" in (d.rollout.targets[0].reason or "")
    assert not machine.is_open(d.rollout)
    not_yet_applied = replace(view("a", gen=2), assigned=2)  # still on the aborted release: wait
    assert states(machine.next(r, {"a": not_yet_applied}, now=9).rollout) == {"a": RV}


# -- completion ----------------------------------------------------------------------------------------

def test_it_completes_when_every_target_settled_and_binds_its_selector() -> None:
    r = rollout(target("a", C, batch=0), target("b", U, batch=1), target("c", S), batches_started=2)
    d = machine.next(r, {"a": running_new("a"), "b": running_new("b")}, now=30)
    assert d.rollout.state == RolloutState.COMPLETED and d.bind
    assert d.rollout.finished_at == 30
    assert d.rollout.reason == "2 converged, 0 failed"


def test_a_locked_device_shows_who_holds_it_and_gets_its_time_once_released() -> None:
    r = rollout(target("a", U, batch=0), target("b", C, batch=1), batches_started=2)
    d = machine.next(r, {"a": locked_new("a"), "b": running_new("b")}, now=1000)
    (a, _) = d.rollout.targets
    assert a.state == U and a.reason == "locked by print-job-42 since 1970-01-01 00:00:00Z"
    assert d.rollout.state == RolloutState.RUNNING and d.rollout.to_dict()["locked"] == 1
    released = view("a", gen=2, phase=Phase.STARTING, desired=NEW, health="starting")
    d = machine.next(d.rollout, {"a": released, "b": running_new("b")}, now=1299)  # < health_timeout after
    (a, _) = d.rollout.targets
    assert a.state == U and a.reason is None
    d = machine.next(d.rollout, {"a": running_new("a"), "b": running_new("b")}, now=1300)
    assert d.rollout.state == RolloutState.COMPLETED


def test_it_waits_for_an_offline_device_before_completing() -> None:
    r = rollout(target("a", C, batch=0), target("b", U, batch=1), batches_started=2)
    d = machine.next(r, {"a": running_new("a"), "b": view("b", online=False)}, now=30)
    assert d.rollout.state == RolloutState.RUNNING


def test_a_rollout_with_no_targets_completes_at_once() -> None:
    d = machine.next(rollout(), {}, now=1)
    assert d.rollout.state == RolloutState.COMPLETED and d.bind


def test_a_completed_rollout_never_moves() -> None:
    r = rollout(target("a", C, batch=0), state=RolloutState.COMPLETED)
    assert machine.next(r, {"a": view("a"), "z": view("z")}, now=1).rollout == r


def test_plan_targets_skips_pinned_devices_and_remembers_what_to_roll_back_to() -> None:
    targets = machine.plan_targets([view("b"), view("a", pinned=True)])
    assert [(t.device_id, t.state, t.previous_release_id, t.previous_image) for t in targets] == [
        ("a", S, 1, OLD), ("b", P, 1, OLD)]


# -- amounts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [("5", Amount(5)), (3, Amount(3)), ("20%", Amount(20, True)),
                                           (" 0 ", Amount(0)), ("100%", Amount(100, True))])
def test_amounts_parse(text: object, expected: Amount) -> None:
    assert Amount.parse(text, "batch") == expected


@pytest.mark.parametrize("text", ["", "-1", "abc", "101%", "5.5", True, None, "1e3", "%"])
def test_bad_amounts_are_refused_with_the_field_named(text: object) -> None:
    with pytest.raises(InvalidRequest, match="batch"):
        Amount.parse(text, "batch")


def test_amount_rounding() -> None:
    assert Amount(25, True).ceil(10) == 3 and Amount(25, True).floor(10) == 2
    assert Amount(4).ceil(10) == Amount(4).floor(10) == 4
