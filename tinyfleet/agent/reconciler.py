"""One reconcile: observe -> plan -> execute, repeated until the plan is empty or only waits.

Terminal errors become a recorded failure of the app's desired spec (reported, not retried until the
spec changes); a transient error ends the reconcile so the caller can back off and try again, while
everything that runs keeps running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from tinyfleet.agent import __version__
from tinyfleet.agent.errors import Terminal, Transient
from tinyfleet.agent.executor import Engine, Executor, Verifier, failure_for
from tinyfleet.agent.locks import DEFAULT_LIFETIME_S, Asked, LockDirs, LockEndpoints
from tinyfleet.agent.model import Facts, Observed, UpdateLock
from tinyfleet.agent.plan import Plan, plan
from tinyfleet.agent.state import AgentState, StateStore
from tinyfleet.agent.steps import judges_the_spec, leaves_the_engine_alone
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppStatus, HealthPolicy, Phase, ReportedState

log = structlog.get_logger("agent.reconciler")


@dataclass(frozen=True)
class Settings:
    default_budget: int | None = None
    min_free_bytes: int = 64 * 1024 * 1024
    unhealthy_grace_s: float = 30.0
    default_health: HealthPolicy = HealthPolicy()
    max_passes: int = 50
    lock_lifetime_s: float = DEFAULT_LIFETIME_S  # an update lock without an expiry lasts this long after its mtime


@dataclass(frozen=True)
class Outcome:
    plan: Plan | None  # the last plan; None when the engine could not even be observed
    transient: str | None = None  # why the reconcile stopped early; retry with backoff

    @property
    def wake_at(self) -> float | None:
        return self.plan.wake_at if self.plan else None


class Reconciler:
    def __init__(self, engine: Engine, verifier: Verifier, store: StateStore, device_id: str, platform: Platform,
                 settings: Settings = Settings(), clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.store = store
        self.device_id = device_id
        self.platform = platform
        self.settings = settings
        self.clock = clock
        self.locks = LockDirs(store.path.parent / "locks", settings.lock_lifetime_s)
        self.lock_endpoints = LockEndpoints(settings.lock_lifetime_s)
        self.executor = Executor(engine, verifier, store, device_id, platform, clock, self.locks)
        self.last: Outcome = Outcome(None)
        self._disk_free: int | None = None

    def facts(self, state: AgentState, now: float, observed: Observed | None = None) -> Facts:
        return Facts(device_id=self.device_id, platform=self.platform, now=now,
                     default_budget=self.settings.default_budget, disk_free=self._disk_free,
                     min_free_bytes=self.settings.min_free_bytes, unhealthy_grace_s=self.settings.unhealthy_grace_s,
                     default_health=self.settings.default_health,
                     memory=state.memory, pulled=state.pulled, locks=self._locks(state, observed, now))

    def _locks(self, state: AgentState, observed: Observed | None, now: float) -> dict[str, UpdateLock]:
        """Update locks held now: the lock files, then (for apps without one) the endpoints of running
        containers an update would replace - asked only while a switch is pending."""
        if state.desired is None:
            return {}
        held = self.locks.read([a.name for a in state.desired.apps], now)
        targets = []
        for spec in state.desired.apps:
            endpoint = spec.update_lock.endpoint if spec.update_lock else None
            if endpoint is None or spec.name in held or observed is None:
                continue
            replaced = [c for c in observed.for_app(spec.name) if c.running and c.spec_hash != spec.spec_hash()]
            old = max(replaced, key=lambda c: c.created_at, default=None)
            if old is not None and old.address:
                targets.append(Asked(spec.name, old.id, old.address, endpoint))
        return held | self.lock_endpoints.read(targets, now)

    def reconcile(self) -> Outcome:
        with self.store.batch():  # one state write per reconcile, plus the ones steps ask for
            self.last = self._reconcile()
        return self.last

    def _reconcile(self) -> Outcome:
        current: Plan | None = None
        observed: Observed | None = None
        seen_at = 0.0
        for _ in range(self.settings.max_passes):
            state = self.store.current
            if observed is None:
                try:
                    seen_at = self.clock()
                    observed = self.engine.observe(self.device_id)
                    self._disk_free = self.engine.disk_free()
                except Transient as exc:
                    return Outcome(current, f"engine: {exc}")
            # Judged at the time of the look, even when it is reused: a verdict that depends on the clock
            # (settled, past its deadline) must not pair a later time with what the engine said earlier.
            current = plan(state.desired, observed, self.facts(state, seen_at, observed))
            if current.idle:
                return Outcome(current, None)
            failed: set[str] = set()
            for step in current.steps:
                app = getattr(step, "app", None)
                if app in failed:
                    continue
                try:
                    self.executor.run(step)
                except Transient as exc:
                    log.warning("transient error; will retry", step=type(step).__name__, app=app, error=str(exc))
                    return Outcome(current, str(exc))
                except Terminal as exc:
                    spec = state.desired.app(app) if state.desired and app else None
                    log.warning("step refused", step=type(step).__name__, app=app, error=str(exc))
                    if spec is None or not judges_the_spec(step):
                        return Outcome(current, str(exc))
                    failed.add(spec.name)
                    self.executor.run(failure_for(spec, str(exc)))
            if not all(leaves_the_engine_alone(step) for step in current.steps):
                observed = None  # the engine changed: look again before the next plan
        log.error("reconcile did not settle", passes=self.settings.max_passes)
        return Outcome(current, "reconcile did not settle; will try again")

    def report(self, state: AgentState, outcome: Outcome | None = None) -> ReportedState:
        """The reported state for the controller: per-app status from the last plan (or pending when
        the engine could not be observed), with a transient error shown so nothing stalls silently."""
        outcome = outcome or self.last
        desired = state.desired
        statuses: list[AppStatus] = list(outcome.plan.statuses) if outcome.plan else []
        if desired is not None:
            known = {st.name for st in statuses}
            statuses += [AppStatus(a.name, Phase.PENDING, desired_image=a.image) for a in desired.apps
                         if a.name not in known]
        if outcome.transient:
            note = f"retrying: {outcome.transient}"
            statuses = [st if st.phase in (Phase.RUNNING, Phase.FAILED, Phase.ROLLED_BACK) and st.current_image ==
                        st.desired_image else replace(st, error=st.error or note) for st in statuses]
        rejection = state.rejection
        return ReportedState(device_id=self.device_id, generation=max(state.accepted_generation, 0),
                             apps=tuple(statuses), error=rejection[1] if rejection else None,
                             rejected_generation=rejection[0] if rejection else None,
                             platform=str(self.platform), agent_version=__version__, ts=round(self.clock(), 3))
