"""plan(desired, observed, facts) -> Plan: the agent's every decision, pure and synchronous.

No I/O and no clock: time comes in `facts.now`. The service applies the steps and plans again until
the plan is empty (or only waiting), so each plan only needs to make the next move per app.

Update of one app from old spec to new spec (the candidate):
  verify -> pull -> create candidate -> start candidate -> candidate healthy? -> remove old
                                                        \\-> failed/deadline -> remove candidate,
                                                             old keeps running (or is started again)
The old container keeps running beside the candidate (hand-over) unless the app publishes host ports,
which two containers cannot share: then the old one is stopped just before the candidate starts.

Update locks (agent.locks): while the running app holds its lock, an update is verified and pulled but
the candidate is not created; the app is reported pending and `locked` (holder, since, until when). The
update goes ahead when the lock is released or expires, when the release's `update_lock.max_wait_seconds`
have passed since the lock first held this spec back, or when the desired state forces the app. A lock
taken before the running container (last) started was left by a process that is gone, and holds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyfleet.agent import steps as s
from tinyfleet.agent.model import ContainerView, Facts, Observed
from tinyfleet.protocol import AppSpec, AppStatus, DesiredState, HealthPolicy, LockHeld, Phase, RestartPolicy

POLL_S = 1.0  # how often to look at a candidate whose health is still settling
LOCK_POLL_S = 5.0  # how often to look whether an update lock was released (one stat, but a look at the engine)
# The engine notes a container's start time after its process runs: a lock taken at once can look older.
LOCK_START_SLACK_S = 2.0
SPACE_FACTOR = 3  # room needed for a pull: compressed download + extracted layers, with margin


@dataclass(frozen=True)
class Plan:
    steps: tuple[s.Step, ...]
    statuses: tuple[AppStatus, ...]
    wake_at: float | None = None  # when time alone can change the plan (settle end, deadline)

    @property
    def idle(self) -> bool:
        return not self.steps


def container_name(device_id: str, app: str, spec_hash: str) -> str:
    """Deterministic, so a create repeated after a crash collides instead of duplicating."""
    return f"tf-{device_id}-{app}-{spec_hash[:12]}"


def budget_for(spec: AppSpec, facts: Facts) -> int | None:
    budgets = [b for b in (spec.max_bytes, facts.default_budget) if b is not None]
    return min(budgets) if budgets else None


def _newest(containers: tuple[ContainerView, ...] | list[ContainerView]) -> ContainerView:
    """Best container to keep: running first, then the most recently created."""
    return max(containers, key=lambda c: (c.running, c.created_at))


def _verdict(c: ContainerView, policy: HealthPolicy, now: float) -> tuple[str, str | None, float | None]:
    """('healthy' | 'failed' | 'wait', reason, wake_at) for a candidate container."""
    deadline = c.created_at + policy.deadline_seconds
    if c.state in ("exited", "dead"):
        return "failed", f"new container exited with code {c.exit_code}", None
    if c.restart_count > 0 or c.state == "restarting":
        restarts = max(c.restart_count, 1)
        return "failed", f"new container restarted {restarts} time(s) (last exit code {c.exit_code})", None
    if c.health == "unhealthy":
        return "failed", "new container reported unhealthy by its HEALTHCHECK", None
    if c.health == "healthy":
        return "healthy", None, None
    if c.health == "starting":
        if now >= deadline:
            return "failed", f"new container not healthy within {policy.deadline_seconds:g}s", None
        return "wait", None, min(now + POLL_S, deadline)
    settled_at = (c.started_at or c.created_at) + policy.settle_seconds
    if now >= settled_at:
        return "healthy", None, None
    if now >= deadline:
        return "failed", f"new container did not run {policy.settle_seconds:g}s within the deadline", None
    return "wait", None, min(settled_at, deadline, now + POLL_S)


def _status(spec: AppSpec, phase: Phase, active: ContainerView | None, *, error: str | None = None,
            health: str | None = None, extra_restarts: int = 0, locked: LockHeld | None = None) -> AppStatus:
    return AppStatus(name=spec.name, phase=phase, desired_image=spec.image,
                     current_image=active.image if active else None, error=error,
                     restart_count=(active.restart_count if active else 0) + extra_restarts,
                     health=health or (active.health if active else "none"),
                     generation=active.generation if active else None, locked=locked)


def _hold_for_lock(spec: AppSpec, old: ContainerView | None, facts: Facts,
                   forced: bool) -> tuple[list[s.Step], AppStatus, float] | None:
    """Steps, status and wake time while the running app's update lock holds this spec back; None: go ahead."""
    lock = facts.locks.get(spec.name)
    if lock is None or forced or old is None or not old.running:
        return None
    if old.started_at is not None and lock.since < old.started_at - LOCK_START_SLACK_S:
        return None  # taken before the running process started: left by a process that is gone (a crash, a restart)
    spec_hash = spec.spec_hash()
    held = facts.remembered(spec.name).held
    out: list[s.Step] = []
    if held is None or held.spec_hash != spec_hash:
        out.append(s.HoldForLock(spec.name, spec_hash))
        since = facts.now
    else:
        since = held.since
    max_wait = spec.update_lock.max_wait_seconds if spec.update_lock else None
    until = lock.expires if max_wait is None else min(lock.expires, since + max_wait)
    if facts.now >= until:
        return None
    locked = LockHeld(lock.holder, lock.since, until)
    return out, _status(spec, Phase.PENDING, old, locked=locked), min(until, facts.now + LOCK_POLL_S)


def _keep_one_running(app: str, containers: list[ContainerView]) -> tuple[list[s.Step], ContainerView | None]:
    """Of the containers of earlier specs, keep the best one (started if stopped), remove the rest."""
    if not containers:
        return [], None
    keep = _newest(containers)
    out: list[s.Step] = [s.Remove(app, c.id) for c in containers if c is not keep]
    if keep.state in ("created", "exited"):
        out.append(s.Start(app, keep.id))
    return out, keep


def _plan_app(spec: AppSpec, generation: int, observed: Observed, facts: Facts,
              prunable: bool, forced: bool = False) -> tuple[list[s.Step], AppStatus, float | None]:
    memory = facts.remembered(spec.name)
    spec_hash = spec.spec_hash()
    mine = observed.for_app(spec.name)
    current = [c for c in mine if c.spec_hash == spec_hash]
    others = [c for c in mine if c.spec_hash != spec_hash]
    out: list[s.Step] = []

    if memory.failure and memory.failure.spec_hash != spec_hash:
        out.append(s.ClearFailure(spec.name))  # the spec changed: a new chance
    elif memory.failure:
        # This spec failed here before: make sure it is gone and the previous version runs.
        out += [s.Remove(spec.name, c.id) for c in current]
        keep_steps, old = _keep_one_running(spec.name, others)
        out += keep_steps
        return out, _status(spec, memory.failure.phase, old, error=memory.failure.reason), None

    if current:
        candidate = _newest(current)
        out += [s.Remove(spec.name, c.id) for c in current if c is not candidate]
        if others:
            return _plan_handover(spec, candidate, others, out, facts)
        return _plan_active(spec, candidate, out, facts)

    # No container for this spec yet: verify, pull, create.
    old = _newest(others) if others else None
    resolved = memory.resolved if memory.resolved and memory.resolved.image == spec.image else None
    if resolved is None:
        out.append(s.Verify(spec.name, spec.image, budget_for(spec, facts)))
        return out, _status(spec, Phase.VERIFYING, old), None
    if resolved.pull_ref not in observed.images:
        need = resolved.compressed_size * SPACE_FACTOR + facts.min_free_bytes
        if facts.disk_free is not None and facts.disk_free < need:
            if prunable:  # unused images go first (they are removed by this same plan); then try again
                return out, _status(spec, Phase.PULLING, old, error="making room: removing unused images"), None
            reason = (f"not enough space to pull: need {need} bytes free ({resolved.compressed_size} compressed "
                      f"x{SPACE_FACTOR} + {facts.min_free_bytes} reserve), have {facts.disk_free}")
            out.append(s.RecordFailure(spec.name, spec_hash, spec.image, Phase.FAILED, reason))
            return out, _status(spec, Phase.FAILED, old, error=reason), None
        out.append(s.Pull(spec.name, spec.image, resolved.pull_ref, resolved.platform))
        return out, _status(spec, Phase.PULLING, old), None
    holding = _hold_for_lock(spec, old, facts, forced)
    if holding is not None:
        return out + holding[0], holding[1], holding[2]
    out.append(s.Create(spec.name, spec, generation, resolved.pull_ref,
                        container_name(facts.device_id, spec.name, spec_hash)))
    return out, _status(spec, Phase.STARTING, old), None


def _plan_handover(spec: AppSpec, candidate: ContainerView, others: list[ContainerView], out: list[s.Step],
                   facts: Facts) -> tuple[list[s.Step], AppStatus, float | None]:
    old = _newest(others)
    if candidate.state == "created" and candidate.created_at + facts.health(spec).deadline_seconds > facts.now:
        if spec.ports:  # host ports cannot be shared: stop the old one first (it is kept for a rollback)
            out += [s.Stop(spec.name, c.id) for c in others if c.running]
        out.append(s.Start(spec.name, candidate.id, candidate=True))
        return out, _status(spec, Phase.STARTING, old, health="starting"), None
    verdict, reason, wake_at = _verdict(candidate, facts.health(spec), facts.now)
    if candidate.state == "created":
        verdict, reason = "failed", "new container was never started before its deadline"
    if verdict == "healthy":
        out += [s.Remove(spec.name, c.id) for c in others]
        out.append(s.Promote(spec.name, spec.spec_hash()))
        return out, _status(spec, Phase.RUNNING, candidate), None
    if verdict == "failed":
        out.append(s.Remove(spec.name, candidate.id))
        keep_steps, kept = _keep_one_running(spec.name, others)
        out += keep_steps
        full = f"{reason}; previous version restored"
        out.append(s.RecordFailure(spec.name, spec.spec_hash(), spec.image, Phase.ROLLED_BACK, full))
        return out, _status(spec, Phase.ROLLED_BACK, kept, error=full), None
    return out, _status(spec, Phase.STARTING, old, health=candidate.health), wake_at


def _plan_active(spec: AppSpec, active: ContainerView, out: list[s.Step],
                 facts: Facts) -> tuple[list[s.Step], AppStatus, float | None]:
    memory = facts.remembered(spec.name)
    spec_hash = spec.spec_hash()
    extra = memory.agent_restarts
    if memory.promoted != spec_hash:
        # A first install (nothing to hand over from) is judged like a candidate until promoted; a running
        # container past its deadline that was never judged (state lost, agent down) is adopted as it is.
        deadline_passed = facts.now >= active.created_at + facts.health(spec).deadline_seconds
        if active.state == "created" and not deadline_passed:
            out.append(s.Start(spec.name, active.id, candidate=True))
            return out, _status(spec, Phase.STARTING, None, health="starting"), None
        if active.running and deadline_passed:
            out.append(s.Promote(spec.name, spec_hash))
            return out, _status(spec, Phase.RUNNING, active, extra_restarts=extra), None
        verdict, reason, wake_at = _verdict(active, facts.health(spec), facts.now)
        if active.state == "created":
            verdict, reason = "failed", "container was never started before its deadline"
        if verdict == "healthy":
            out.append(s.Promote(spec.name, spec_hash))
            return out, _status(spec, Phase.RUNNING, active), None
        if verdict == "failed":
            out.append(s.Remove(spec.name, active.id))
            out.append(s.RecordFailure(spec.name, spec_hash, spec.image, Phase.FAILED, reason or "failed"))
            return out, _status(spec, Phase.FAILED, None, error=reason), None
        return out, _status(spec, Phase.STARTING, None, health=active.health), wake_at
    if active.state in ("created", "exited"):
        if active.state == "created" or spec.restart in (RestartPolicy.ALWAYS, RestartPolicy.UNLESS_STOPPED):
            out.append(s.Start(spec.name, active.id))
            return out, _status(spec, Phase.STARTING, active, extra_restarts=extra), None
        if active.exit_code:
            return out, _status(spec, Phase.FAILED, active, error=f"exited with code {active.exit_code}",
                                extra_restarts=extra), None
        return out, _status(spec, Phase.RUNNING, active, extra_restarts=extra), None
    wake_at = None
    if active.running and active.health == "unhealthy":
        # Docker never restarts an unhealthy container outside Swarm (moby#28400): the agent does,
        # at most once per grace period so a container that needs long to recover gets the time.
        since = memory.last_restart_at
        if since is None or facts.now - since >= facts.unhealthy_grace_s:
            out.append(s.Restart(spec.name, active.id))
        else:
            wake_at = since + facts.unhealthy_grace_s
    return out, _status(spec, Phase.RUNNING, active, extra_restarts=extra), wake_at


def plan(desired: DesiredState | None, observed: Observed, facts: Facts) -> Plan:
    if desired is None:  # nothing accepted yet: adopt what runs, change nothing
        return Plan((), ())
    wanted = {a.name for a in desired.apps}
    needed = {c.pull_ref for c in observed.containers}
    for app in desired.apps:
        resolved = facts.remembered(app.name).resolved
        if resolved and resolved.image == app.image:
            needed.add(resolved.pull_ref)
    prunable = sorted(facts.pulled - needed)
    steps: list[s.Step] = []
    statuses: list[AppStatus] = []
    wakes: list[float] = []
    for app in desired.apps:
        app_steps, status, wake_at = _plan_app(app, desired.generation, observed, facts, bool(prunable),
                                               app.name in desired.force)
        steps += app_steps
        statuses.append(status)
        if wake_at is not None:
            wakes.append(wake_at)
    for c in observed.containers:
        if c.app not in wanted:
            steps.append(s.Remove(c.app, c.id))
    steps += [s.Forget(name) for name in sorted(set(facts.memory) - wanted)]
    steps += [s.RemoveImage(ref) for ref in prunable]
    return Plan(tuple(steps), tuple(statuses), min(wakes) if wakes else None)
