"""plan(desired, observed, facts) as a specification: one row per situation, the steps it must take
and the phase it must report."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.unit.agent.scenario import (
    container,
    desired,
    facts,
    failure,
    observed,
    pull_ref,
    resolved,
    spec,
)
from tinyfleet.agent import steps as s
from tinyfleet.agent.model import AppMemory
from tinyfleet.agent.plan import plan
from tinyfleet.protocol import Phase

A, B = spec(tag="a"), spec(tag="b")
A_PORTS, B_PORTS = spec(tag="a", ports=True), spec(tag="b", ports=True)
SETTLED = AppMemory(promoted=A.spec_hash())


@dataclass
class Row:
    name: str
    desired: object
    observed: object
    facts: object
    steps: list[type]  # the step classes, in order
    phase: Phase | None = None
    error: str | None = None  # a fragment of the reported error
    extra: dict = field(default_factory=dict)


ROWS = [
    Row("nothing accepted yet: adopt, change nothing", None, observed(container(A)), facts(), []),
    Row("new app: verify first", desired(A), observed(), facts(), [s.Verify], Phase.VERIFYING),
    Row("verified: pull the board's manifest", desired(A), observed(),
        facts({"web": AppMemory(resolved=resolved(A))}), [s.Pull], Phase.PULLING),
    Row("pulled: create", desired(A), observed(images=(pull_ref("a"),)),
        facts({"web": AppMemory(resolved=resolved(A))}), [s.Create], Phase.STARTING),
    Row("first install created: start it", desired(A), observed(container(A, state="created", age=1)),
        facts({"web": AppMemory(resolved=resolved(A))}), [s.Start], Phase.STARTING),
    Row("first install healthy: promote", desired(A), observed(container(A, age=3, up=2)),
        facts({"web": AppMemory(resolved=resolved(A))}), [s.Promote], Phase.RUNNING),
    Row("first install still starting: wait", desired(A), observed(container(A, age=3, up=2, health="starting")),
        facts(), [], Phase.STARTING),
    Row("first install unhealthy: remove and fail (nothing to roll back to)", desired(A),
        observed(container(A, age=3, up=2, health="unhealthy")), facts(), [s.Remove, s.RecordFailure],
        Phase.FAILED, "unhealthy"),
    Row("settled and promoted: nothing to do", desired(A), observed(container(A)), facts({"web": SETTLED}), [],
        Phase.RUNNING),
    Row("never judged but past its deadline (state lost): adopt", desired(A),
        observed(container(A, health="unhealthy", restarts=3)), facts(), [s.Promote], Phase.RUNNING),
    Row("promoted but unhealthy: restart it (Docker won't)", desired(A),
        observed(container(A, health="unhealthy")), facts({"web": SETTLED}), [s.Restart], Phase.RUNNING),
    Row("restarted recently and still unhealthy: give it the grace period", desired(A),
        observed(container(A, health="unhealthy")),
        facts({"web": AppMemory(promoted=A.spec_hash(), last_restart_at=1_800_000_000.0 - 5)}), [], Phase.RUNNING),
    Row("promoted but stopped by someone: start it again", desired(A),
        observed(container(A, state="exited", exit_code=0)), facts({"web": SETTLED}), [s.Start], Phase.STARTING),
    Row("update: verify the new image while the old one runs", desired(B), observed(container(A)),
        facts({"web": SETTLED}), [s.Verify], Phase.VERIFYING),
    Row("update verified and pulled: create the candidate beside the old", desired(B),
        observed(container(A), images=(pull_ref("a"), pull_ref("b"))),
        facts({"web": AppMemory(resolved=resolved(B), promoted=A.spec_hash())}), [s.Create], Phase.STARTING),
    Row("hand-over: start the candidate, old keeps running", desired(B),
        observed(container(A), container(B, state="created", age=1)), facts({"web": SETTLED}), [s.Start],
        Phase.STARTING),
    Row("host ports: stop the old one just before starting the candidate", desired(B_PORTS),
        observed(container(A_PORTS), container(B_PORTS, state="created", age=1)),
        facts({"web": AppMemory(promoted=A_PORTS.spec_hash())}), [s.Stop, s.Start], Phase.STARTING),
    Row("candidate healthy: remove the old, promote", desired(B),
        observed(container(A), container(B, age=3, up=2)), facts({"web": SETTLED}), [s.Remove, s.Promote],
        Phase.RUNNING),
    Row("candidate without HEALTHCHECK settling: wait", desired(B),
        observed(container(A), container(B, age=3, up=2, health="none")), facts({"web": SETTLED}), [],
        Phase.STARTING),
    Row("candidate without HEALTHCHECK settled: hand over", desired(B),
        observed(container(A), container(B, age=8, up=7, health="none")), facts({"web": SETTLED}),
        [s.Remove, s.Promote], Phase.RUNNING),
    Row("candidate exits: roll back", desired(B),
        observed(container(A), container(B, age=3, state="exited", exit_code=3)), facts({"web": SETTLED}),
        [s.Remove, s.RecordFailure], Phase.ROLLED_BACK, "exited with code 3"),
    Row("candidate restarting: roll back", desired(B),
        observed(container(A), container(B, age=3, up=1, health="starting", restarts=2, exit_code=1)),
        facts({"web": SETTLED}), [s.Remove, s.RecordFailure], Phase.ROLLED_BACK, "restarted 2"),
    Row("candidate unhealthy: roll back", desired(B),
        observed(container(A), container(B, age=3, up=2, health="unhealthy")), facts({"web": SETTLED}),
        [s.Remove, s.RecordFailure], Phase.ROLLED_BACK, "unhealthy"),
    Row("candidate never healthy by the deadline: roll back", desired(B),
        observed(container(A), container(B, age=61, up=60, health="starting")), facts({"web": SETTLED}),
        [s.Remove, s.RecordFailure], Phase.ROLLED_BACK, "not healthy within 60s"),
    Row("ports: candidate fails, the stopped old one is started again", desired(B_PORTS),
        observed(container(A_PORTS, state="exited", exit_code=0), container(B_PORTS, age=3, up=2,
                                                                            health="unhealthy")),
        facts({"web": AppMemory(promoted=A_PORTS.spec_hash())}), [s.Remove, s.Start, s.RecordFailure],
        Phase.ROLLED_BACK, "unhealthy"),
    Row("failed spec is not retried while it stays desired", desired(B), observed(container(A)),
        facts({"web": AppMemory(failure=failure(B), promoted=A.spec_hash())}), [], Phase.ROLLED_BACK, "it broke"),
    Row("crash during rollback left the candidate: finish the rollback", desired(B),
        observed(container(A), container(B, age=3)),
        facts({"web": AppMemory(failure=failure(B), promoted=A.spec_hash())}), [s.Remove], Phase.ROLLED_BACK,
        "it broke"),
    Row("a new spec clears an old failure", desired(spec(tag="c")), observed(container(A)),
        facts({"web": AppMemory(failure=failure(B), promoted=A.spec_hash())}), [s.ClearFailure, s.Verify],
        Phase.VERIFYING),
    Row("controller reverts to the running spec: nothing to pull", desired(A), observed(container(A)),
        facts({"web": AppMemory(failure=failure(B), promoted=A.spec_hash())}), [s.ClearFailure], Phase.RUNNING),
    Row("duplicates of one spec: keep the running one", desired(A),
        observed(container(A, cid="x1"), container(A, cid="x2", state="exited", age=5)), facts({"web": SETTLED}),
        [s.Remove], Phase.RUNNING),
    Row("not enough space and nothing to prune: refuse before pulling", desired(B), observed(container(A)),
        facts({"web": AppMemory(resolved=resolved(B), promoted=A.spec_hash())}, disk_free=10 * 2**20),
        [s.RecordFailure], Phase.FAILED, "not enough space"),
    Row("not enough space but an unused image: prune first", desired(B), observed(container(A)),
        facts({"web": AppMemory(resolved=resolved(B), promoted=A.spec_hash())}, disk_free=10 * 2**20,
              pulled=frozenset({pull_ref("z")})), [s.RemoveImage], Phase.PULLING, "making room"),
    Row("app no longer desired: remove it and forget it", desired(), observed(container(A)),
        facts({"web": SETTLED}), [s.Remove, s.Forget]),
    Row("images no container or desired app needs are pruned", desired(A), observed(container(A)),
        facts({"web": SETTLED}, pulled=frozenset({pull_ref("a"), pull_ref("z")})), [s.RemoveImage], Phase.RUNNING),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_plan(row: Row) -> None:
    result = plan(row.desired, row.observed, row.facts)  # type: ignore[arg-type]
    assert [type(step) for step in result.steps] == row.steps
    if row.phase is not None:
        (status,) = result.statuses
        assert status.phase == row.phase
        if row.error:
            assert status.error and row.error in status.error
        else:
            assert status.error is None


def test_rollback_reports_the_previous_version_as_current() -> None:
    result = plan(desired(B), observed(container(A), container(B, age=3, up=2, health="unhealthy")),
                  facts({"web": SETTLED}))
    (status,) = result.statuses
    assert status.desired_image == B.image and status.current_image == A.image
    remove = result.steps[0]
    assert isinstance(remove, s.Remove) and remove.container_id == container(B).id


def test_budget_is_the_smaller_of_the_apps_and_the_agents() -> None:
    small = spec(max_bytes=1000)
    (verify,) = plan(desired(small), observed(), facts(budget=5000)).steps
    assert isinstance(verify, s.Verify) and verify.budget == 1000
    (verify,) = plan(desired(spec(max_bytes=9000)), observed(), facts(budget=5000)).steps
    assert verify.budget == 5000  # type: ignore[union-attr]


def test_waiting_plans_say_when_to_look_again() -> None:
    result = plan(desired(B), observed(container(A), container(B, age=3, up=2, health="none")),
                  facts({"web": SETTLED}))
    assert result.idle and result.wake_at is not None
    assert result.wake_at <= facts().now + 3


def test_candidate_names_are_deterministic_per_device_app_and_spec() -> None:
    result = plan(desired(B), observed(container(A), images=(pull_ref("b"),)),
                  facts({"web": AppMemory(resolved=resolved(B), promoted=A.spec_hash())}))
    (create,) = result.steps
    assert isinstance(create, s.Create)
    assert create.name == f"tf-pi-1-web-{B.spec_hash()[:12]}"
