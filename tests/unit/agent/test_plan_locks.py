"""Update locks in plan(): one row per situation. While the running app holds its lock an update is
verified and pulled but not switched to; it goes ahead when the lock goes, expires, the release's max
wait is over, or the desired state forces the app."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from tests.unit.agent.scenario import NOW, container, desired, facts, lock, observed, pull_ref, resolved, spec
from tinyfleet.agent import steps as s
from tinyfleet.agent.model import AppMemory, Held
from tinyfleet.agent.plan import LOCK_POLL_S, plan
from tinyfleet.protocol import Phase, UpdateLockPolicy

A, B = spec(tag="a"), spec(tag="b")
B_WAIT_60 = replace(B, update_lock=UpdateLockPolicy(max_wait_seconds=60))
PULLED = observed(container(A), images=(pull_ref("a"), pull_ref("b")))


def ready(app=B, held: Held | None = None) -> dict[str, AppMemory]:  # type: ignore[no-untyped-def]
    """B verified (and pulled, with PULLED) while A runs, promoted."""
    return {"web": AppMemory(resolved=resolved(app), promoted=A.spec_hash(), held=held)}


@dataclass
class Row:
    name: str
    desired: object
    observed: object
    facts: object
    steps: list[type]
    locked: bool  # reported locked (phase pending, holder and since)
    wake_in: float | None = None  # seconds from now the plan asks to be woken


ROWS = [
    Row("held: verify the update all the same", desired(B), observed(container(A)),
        facts({"web": AppMemory(promoted=A.spec_hash())}, locks={"web": lock()}), [s.Verify], False),
    Row("held: pull the update all the same", desired(B), observed(container(A)),
        facts(ready(), locks={"web": lock()}), [s.Pull], False),
    Row("held, update pulled: note when it was first held, do not create", desired(B), PULLED,
        facts(ready(), locks={"web": lock()}), [s.HoldForLock], True, LOCK_POLL_S),
    Row("held and noted: wait, look again soon", desired(B), PULLED,
        facts(ready(held=Held(B.spec_hash(), NOW - 30)), locks={"web": lock()}), [], True, LOCK_POLL_S),
    Row("held for an earlier update: the new one is noted afresh", desired(B), PULLED,
        facts(ready(held=Held("0" * 16, NOW - 9999)), locks={"web": lock()}), [s.HoldForLock], True, LOCK_POLL_S),
    Row("lock expires before the next look: wake at the expiry", desired(B), PULLED,
        facts(ready(held=Held(B.spec_hash(), NOW - 30)), locks={"web": lock(expires_in=2)}), [], True, 2),
    Row("released (no lock): the update lands", desired(B), PULLED,
        facts(ready(held=Held(B.spec_hash(), NOW - 30))), [s.Create], False),
    Row("release's max wait not over: wait", desired(B_WAIT_60), PULLED,
        facts(ready(B_WAIT_60, Held(B.spec_hash(), NOW - 59)), locks={"web": lock()}), [], True, 1),
    Row("release's max wait over: go ahead despite the lock", desired(B_WAIT_60), PULLED,
        facts(ready(B_WAIT_60, Held(B.spec_hash(), NOW - 60)), locks={"web": lock()}), [s.Create], False),
    Row("forced by the operator: go ahead despite the lock", desired(B, force=("web",)), PULLED,
        facts(ready(held=Held(B.spec_hash(), NOW - 30)), locks={"web": lock()}), [s.Create], False),
    Row("another app forced: this one still waits", desired(B, force=("db",)), PULLED,
        facts(ready(held=Held(B.spec_hash(), NOW - 30)), locks={"web": lock()}), [], True, LOCK_POLL_S),
    Row("a lock taken before the running container last started was left by a dead process: ignored", desired(B),
        observed(container(A, up=30), images=(pull_ref("a"), pull_ref("b"))),
        facts(ready(), locks={"web": lock(age=60)}), [s.Create], False),
    Row("first install: nothing to interrupt, the lock does not hold it", desired(B),
        observed(images=(pull_ref("b"),)), facts(ready(), locks={"web": lock()}), [s.Create], False),
    Row("old version not running: nothing to interrupt", desired(B),
        observed(container(A, state="exited", exit_code=0), images=(pull_ref("a"), pull_ref("b"))),
        facts(ready(), locks={"web": lock()}), [s.Create], False),
    Row("the running version itself is not held back (the lock is about updates)", desired(A),
        observed(container(A)), facts({"web": AppMemory(promoted=A.spec_hash())}, locks={"web": lock()}), [],
        False),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_plan_with_update_locks(row: Row) -> None:
    result = plan(row.desired, row.observed, row.facts)  # type: ignore[arg-type]
    assert [type(step) for step in result.steps] == row.steps
    (status,) = result.statuses
    if row.locked:
        assert status.phase == Phase.PENDING and status.locked is not None
        assert status.locked.holder == "print-job-42" and status.locked.since == NOW - 60
        assert status.current_image == A.image and status.desired_image == B.image
    else:
        assert status.locked is None
    if row.wake_in is not None:
        assert result.wake_at == pytest.approx(NOW + row.wake_in)


def test_a_locked_report_says_when_the_agent_goes_ahead_anyway() -> None:
    result = plan(desired(B_WAIT_60), PULLED, facts(ready(B_WAIT_60, Held(B.spec_hash(), NOW - 20)),
                                                    locks={"web": lock(expires_in=3600)}))
    (status,) = result.statuses
    assert status.locked is not None and status.locked.expires == pytest.approx(NOW + 40)  # the max wait ends first
