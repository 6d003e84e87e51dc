"""Carries out plan steps: one `do_<step>` per step class, looked up by type. No decisions here -
each handler performs its I/O and records what it learned; errors propagate as agent.errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import structlog

from tinyfleet.agent import model
from tinyfleet.agent import steps as s
from tinyfleet.agent.locks import MOUNT_POINT, LockDirs
from tinyfleet.agent.model import Failure, Held, Observed, Resolved
from tinyfleet.agent.state import StateStore
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, Phase

log = structlog.get_logger("agent.executor")


class Engine(Protocol):
    """What the agent needs from a container engine (agent.engine.DockerEngine; agent.testing.FakeEngine)."""

    def observe(self, device_id: str) -> Observed: ...
    def pull(self, pull_ref: str, platform: Platform) -> None: ...
    def create(self, name: str, spec: AppSpec, pull_ref: str, labels: dict[str, str],
               binds: dict[str, str] | None = None) -> str: ...
    def start(self, container_id: str) -> None: ...
    def stop(self, container_id: str) -> None: ...
    def restart(self, container_id: str) -> None: ...
    def remove(self, container_id: str) -> None: ...
    def remove_image(self, pull_ref: str) -> None: ...
    def disk_free(self) -> int | None: ...


class Verifier(Protocol):
    """Resolves a pinned image for a platform within a budget, touching manifests only."""

    def select(self, image: str, platform: Platform, budget: int | None) -> Resolved: ...


class Executor:
    def __init__(self, engine: Engine, verifier: Verifier, store: StateStore, device_id: str, platform: Platform,
                 clock: Callable[[], float] = time.time, locks: LockDirs | None = None) -> None:
        self.engine = engine
        self.locks = locks
        self.verifier = verifier
        self.store = store
        self.device_id = device_id
        self.platform = platform
        self.clock = clock
        self._handlers: dict[type, Callable[[s.Step], None]] = {
            s.Verify: self.do_verify, s.Pull: self.do_pull, s.Create: self.do_create, s.Start: self.do_start,
            s.Stop: self.do_stop, s.Restart: self.do_restart, s.Remove: self.do_remove,
            s.RecordFailure: self.do_record_failure, s.Promote: self.do_promote,
            s.ClearFailure: self.do_clear_failure, s.Forget: self.do_forget, s.RemoveImage: self.do_remove_image,
            s.HoldForLock: self.do_hold_for_lock,
        }

    def run(self, step: s.Step) -> None:
        log.info("step", step=type(step).__name__, **{k: v for k, v in vars(step).items() if k != "spec"})
        self._handlers[type(step)](step)

    def do_verify(self, step: s.Verify) -> None:  # type: ignore[override]
        resolved = self.verifier.select(step.image, self.platform, step.budget)
        self.store.update(lambda st: st.with_app(step.app, resolved=resolved))

    def do_pull(self, step: s.Pull) -> None:
        # Written ahead: an image pulled just before a crash must still be pruned one day. Noting it
        # before the pull costs nothing extra (one write either way; it also carries the newly accepted
        # desired state), and pruning an image that never arrived is a no-op.
        self.store.update(lambda st: replace(st, pulled=st.pulled | {step.pull_ref}))
        self.store.flush()
        self.engine.pull(step.pull_ref, Platform.parse(step.platform))

    def do_create(self, step: s.Create) -> None:
        labels = {
            model.LABEL_OWNER: model.OWNER, model.LABEL_DEVICE: self.device_id, model.LABEL_APP: step.app,
            model.LABEL_GENERATION: str(step.generation), model.LABEL_SPEC_HASH: step.spec.spec_hash(),
            model.LABEL_IMAGE: step.spec.image, model.LABEL_PULL_REF: step.pull_ref,
            model.LABEL_CREATED: f"{self.clock():.3f}",
        }
        # The app's update-lock directory (agent.locks), so it can say "not now" to the next update.
        binds = {str(self.locks.dir_for(step.app)): MOUNT_POINT} if self.locks else None
        self.engine.create(step.name, step.spec, step.pull_ref, labels, binds)

    def do_start(self, step: s.Start) -> None:
        self.engine.start(step.container_id)

    def do_stop(self, step: s.Stop) -> None:
        self.engine.stop(step.container_id)

    def do_restart(self, step: s.Restart) -> None:
        self.engine.restart(step.container_id)
        now = self.clock()
        self.store.update(lambda st: st.with_app(step.app, last_restart_at=now,
                                                 agent_restarts=st.app(step.app).agent_restarts + 1))

    def do_remove(self, step: s.Remove) -> None:
        self.engine.remove(step.container_id)

    def do_record_failure(self, step: s.RecordFailure) -> None:
        failure = Failure(step.spec_hash, step.image, step.phase, step.reason, self.clock())
        log.warning("app failed", app=step.app, image=step.image, phase=step.phase.value, reason=step.reason)
        self.store.update(lambda st: st.with_app(step.app, failure=failure))
        self.store.flush()  # a version that failed here must not be tried again after a crash

    def do_promote(self, step: s.Promote) -> None:
        self.store.update(lambda st: st.with_app(step.app, promoted=step.spec_hash))

    def do_hold_for_lock(self, step: s.HoldForLock) -> None:
        held = Held(step.spec_hash, self.clock())
        log.info("update held by the app's lock", app=step.app)
        self.store.update(lambda st: st.with_app(step.app, held=held))

    def do_clear_failure(self, step: s.ClearFailure) -> None:
        self.store.update(lambda st: st.with_app(step.app, failure=None))

    def do_forget(self, step: s.Forget) -> None:
        self.store.update(lambda st: replace(st, memory={k: v for k, v in st.memory.items() if k != step.app}))

    def do_remove_image(self, step: s.RemoveImage) -> None:
        self.engine.remove_image(step.pull_ref)
        self.store.update(lambda st: replace(st, pulled=st.pulled - {step.pull_ref}))


def failure_for(app: AppSpec, reason: str) -> s.RecordFailure:
    """The step recording a terminal error of any step of `app` against its desired spec."""
    return s.RecordFailure(app.name, app.spec_hash(), app.image, Phase.FAILED, reason)
