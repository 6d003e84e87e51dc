"""The rollout state machine, pure: `next(rollout, devices, now) -> Decision`. No I/O, no clock.

A rollout moves one app of the targeted devices to one release, canary first, then batch after batch:

    rollout:  running <-> paused            (operator)
              running/paused -> completed   (every target settled, failures within the limit)
              running/paused -> aborted     (failures over the limit, or the operator)

    target:   pending -> updating -> converged | failed
              updating/converged/failed -> reverting -> reverted     (abort puts the previous release back)
              pending -> skipped                                     (pinned, or the rollout was aborted)

A target converges when the device reports (at a generation that carries the release) the app running
the release's exact image, healthy or without a health check. It fails when it reports the release's
image as failed or rolled back, rejects the document, or stays online without converging for
`health_timeout` seconds. An offline device is pending, not failed, until `offline_deadline` seconds
after its desired state was published; it does not hold up the next batch. A device whose app holds its
update lock (it reports the release downloaded and `locked`) is pending too, not failed: its clocks start
again while it is locked and its reason says who holds the lock since when. It still holds up the next
batch - it has proven nothing about the release yet (a canary least of all) - until it settles, or the
operator forces it (`tinyfleet device update --force`).

The next batch starts when no target of the started batches is still in flight on an online device.
Devices matching the selector that appear while the rollout is open join it as pending targets.
The caller (controller.engine) stores the new rollout, turns `assign` into desired states and records
the generation that carried each assignment into its target.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from tinyfleet.controller.errors import InvalidRequest
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol.messages import AppStatus, Phase

HEALTHY = ("healthy", "none")
LOCKED = "locked by "  # the reason of an updating target whose device holds the update for an app's lock


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"


class TargetState(StrEnum):
    PENDING = "pending"
    UPDATING = "updating"
    CONVERGED = "converged"
    FAILED = "failed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    SKIPPED = "skipped"


OPEN = (RolloutState.RUNNING, RolloutState.PAUSED)
SETTLED = (TargetState.CONVERGED, TargetState.FAILED, TargetState.SKIPPED, TargetState.REVERTED)
_AMOUNT_RE = re.compile(r"(\d{1,9})(%?)")


@dataclass(frozen=True)
class Amount:
    """A device count (`5`) or a share of the rollout's targets (`20%`)."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: object, what: str) -> Amount:
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        match = _AMOUNT_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if not match:
            raise InvalidRequest(f"{what} {text!r} must be a count like 5 or a percentage like 20%")
        value, percent = int(match.group(1)), bool(match.group(2))
        if percent and value > 100:
            raise InvalidRequest(f"{what} {text!r} is over 100%")
        return cls(value, percent)

    def floor(self, total: int) -> int:
        return self.value * total // 100 if self.percent else self.value

    def ceil(self, total: int) -> int:
        return math.ceil(self.value * total / 100) if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class Target:
    device_id: str
    state: TargetState = TargetState.PENDING
    previous_release_id: int | None = None  # what the device was assigned before: the rollback target
    previous_image: str | None = None
    batch: int | None = None
    started_at: float | None = None  # when its desired state moved to the release, or last seen locked
    # (None: never published); its timeouts count from here
    generation: int | None = None  # the desired generation that carried the change (set by the engine)
    settled_at: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DeviceView:
    """What the rollout needs to know about one device, for the rollout's app."""

    id: str
    online: bool
    online_since: float | None = None
    platform: str | None = None
    pinned: bool = False
    generation: int = 0  # the newest desired generation the agent accepted
    rejected_generation: int | None = None
    error: str | None = None
    app: AppStatus | None = None  # the device's report for the rollout's app, if any
    assigned: int | None = None  # the release the device is assigned for the app now
    assigned_image: str | None = None


@dataclass(frozen=True)
class Rollout:
    id: int
    app: str
    release_id: int
    image: str  # the release's pinned image, repo@sha256:<index digest>
    platforms: tuple[str, ...]  # what the release's index offers
    selector: str
    canary: int = 1
    batch: Amount = Amount(25, percent=True)
    max_failures: Amount = Amount(0)
    health_timeout: float = 300.0
    offline_deadline: float = 3600.0
    state: RolloutState = RolloutState.RUNNING
    reason: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    batches_started: int = 0
    targets: tuple[Target, ...] = ()

    @property
    def counted(self) -> int:
        """Targets the thresholds are computed over (skipped devices are not part of the rollout)."""
        return sum(t.state != TargetState.SKIPPED for t in self.targets)

    def failure_limit(self) -> int:
        return self.max_failures.floor(self.counted)

    def failures(self) -> int:
        return sum(t.state == TargetState.FAILED or (t.state in (TargetState.REVERTING, TargetState.REVERTED)
                                                     and t.reason is not None and t.reason.startswith("failed:"))
                   for t in self.targets)

    def batch_size(self) -> int:
        size = self.canary if self.batches_started == 0 and self.canary > 0 else self.batch.ceil(self.counted)
        return max(1, size)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in TargetState}
        for t in self.targets:
            out[t.state.value] += 1
        return out

    def to_dict(self, targets: bool = True, tally: Tally | None = None) -> dict[str, Any]:
        """JSON-ready. A listing passes `tally` (counted by the store) for a rollout loaded without its
        targets; otherwise they are counted here."""
        tally = tally or Tally.of(self)
        counts = {s.value: tally.counts.get(s.value, 0) for s in TargetState}
        total = sum(counts.values())
        out: dict[str, Any] = {
            "id": self.id, "app": self.app, "release": self.release_id, "image": self.image,
            "platforms": list(self.platforms), "selector": self.selector, "canary": self.canary,
            "batch": str(self.batch), "max_failures": str(self.max_failures),
            "failure_limit": self.max_failures.floor(total - counts[TargetState.SKIPPED.value]),
            "failures": tally.failures, "health_timeout": self.health_timeout,
            "offline_deadline": self.offline_deadline, "state": self.state.value, "reason": self.reason,
            "created_at": self.created_at, "finished_at": self.finished_at, "batches_started": self.batches_started,
            "total": total, "counts": counts, "locked": sum(locked(t) for t in self.targets),
            "open": self.state in OPEN or counts[TargetState.REVERTING.value] > 0}
        if targets:
            out["targets"] = [{"device": t.device_id, "state": t.state.value, "batch": t.batch,
                               "previous_release": t.previous_release_id, "started_at": t.started_at,
                               "settled_at": t.settled_at, "generation": t.generation, "reason": t.reason}
                              for t in self.targets]
        return out


@dataclass(frozen=True)
class Tally:
    """A rollout's targets counted by state, and its failures (see Rollout.failures)."""

    counts: Mapping[str, int]
    failures: int

    @classmethod
    def of(cls, r: Rollout) -> Tally:
        return cls(r.counts(), r.failures())


@dataclass(frozen=True)
class Assign:
    device_id: str
    release_id: int | None  # None: take the app off the device


@dataclass(frozen=True)
class Decision:
    rollout: Rollout
    assign: tuple[Assign, ...] = ()
    bind: bool = False  # the rollout completed: its selector now stands for its release
    events: tuple[str, ...] = ()


def new_target(view: DeviceView) -> Target:
    if view.pinned:
        return Target(view.id, TargetState.SKIPPED, view.assigned, view.assigned_image, reason="pinned")
    return Target(view.id, TargetState.PENDING, view.assigned, view.assigned_image)


def plan_targets(views: Iterable[DeviceView]) -> tuple[Target, ...]:
    return tuple(new_target(v) for v in sorted(views, key=lambda v: v.id))


def converged(view: DeviceView, image: str, generation: int | None) -> bool:
    app = view.app
    return (generation is not None and view.generation >= generation and app is not None
            and app.phase == Phase.RUNNING and app.current_image == image and app.health in HEALTHY)


def _reverted(view: DeviceView, target: Target) -> bool:
    if target.generation is None or view.generation < target.generation:
        return False
    if target.previous_image is None:
        return view.app is None
    return converged(view, target.previous_image, target.generation)


@functools.lru_cache(maxsize=256)
def _runs_on(platform: str | None, offered: tuple[str, ...]) -> bool:
    if platform is None or not offered:
        return True  # unknown: let the agent decide (it refuses a missing platform and says so)
    try:
        board = Platform.parse(platform)
        return any(board.rank(Platform.parse(p)) is not None for p in offered)
    except ValueError:
        return True


def _evaluate(r: Rollout, t: Target, view: DeviceView | None, now: float) -> Target:
    """Where an updating target stands now."""
    if view is None:
        view = DeviceView(t.device_id, online=False)
    if view.pinned:
        return replace(t, state=TargetState.SKIPPED, settled_at=now, reason="pinned during the rollout")
    if converged(view, r.image, t.generation):
        return replace(t, state=TargetState.CONVERGED, settled_at=now, reason=None)
    reached = t.generation is not None and view.generation >= t.generation
    if t.generation is not None and view.rejected_generation == t.generation and view.generation < t.generation:
        # Refused as malformed or inapplicable. (Refused as *older* than what the device accepted - it
        # reports a higher generation - is not its fault: the publisher re-issues above it; wait.)
        return _failed(t, now, f"device rejected the desired state: {view.error or 'no reason given'}")
    app = view.app
    if reached and app is not None and app.desired_image == r.image and app.phase in (Phase.FAILED,
                                                                                      Phase.ROLLED_BACK):
        return _failed(t, now, f"{app.phase.value}: {app.error or 'no reason given'}")
    started = t.started_at if t.started_at is not None else now
    if not view.online:
        if now - started > r.offline_deadline:
            return _failed(t, now, f"offline for more than the offline deadline of {r.offline_deadline:g}s")
        return t
    if reached and app is not None and app.desired_image == r.image and app.locked is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(app.locked.since))
        return replace(t, started_at=now, reason=f"{LOCKED}{app.locked.holder} since {since}")
    if locked(t):
        t = replace(t, reason=None)  # the lock went: judged from when it was last seen
    since = max(started, view.online_since or started)
    if now - since > r.health_timeout:
        where = f"phase {app.phase.value}, health {app.health}" if app is not None else "no report for the app"
        return _failed(t, now, f"not running and healthy within {r.health_timeout:g}s ({where})")
    return t


def locked(t: Target) -> bool:
    return t.state == TargetState.UPDATING and (t.reason or "").startswith(LOCKED)


def _failed(t: Target, now: float, why: str) -> Target:
    return replace(t, state=TargetState.FAILED, settled_at=now, reason=f"failed: {why}")


def next(rollout: Rollout, devices: Mapping[str, DeviceView], now: float) -> Decision:  # noqa: A001
    """One step. `devices` holds a view of every target and of every device the selector matches now."""
    if rollout.state == RolloutState.COMPLETED:
        return Decision(rollout)
    if rollout.state == RolloutState.ABORTED:
        return _follow_reverts(rollout, devices, now)
    targets = {t.device_id: t for t in rollout.targets}
    events = []
    for device_id in sorted(set(devices) - set(targets)):
        targets[device_id] = new_target(devices[device_id])
        events.append(f"{device_id} joined the rollout")
    for device_id, t in targets.items():
        if t.state == TargetState.UPDATING:
            targets[device_id] = _evaluate(rollout, t, devices.get(device_id), now)
    r = replace(rollout, targets=tuple(targets.values()))
    if r.failures() > r.failure_limit():
        decision = abort(r, now, f"{r.failures()} failed, over the limit of {r.failure_limit()}")
        return replace(decision, events=(*events, *decision.events))
    if r.state == RolloutState.PAUSED:
        return Decision(r, events=tuple(events))
    in_flight = [t for t in r.targets if t.state == TargetState.UPDATING
                 and (view := devices.get(t.device_id)) is not None and view.online]
    pending = [t for t in r.targets if t.state == TargetState.PENDING]
    if not in_flight and pending:
        return _start_batch(r, pending, devices, now, events)
    if not pending and not any(t.state == TargetState.UPDATING for t in r.targets):
        done = replace(r, state=RolloutState.COMPLETED, finished_at=now,
                       reason=f"{r.counts()['converged']} converged, {r.failures()} failed")
        return Decision(done, bind=True, events=(*events, "rollout completed"))
    return Decision(r, events=tuple(events))


def _start_batch(r: Rollout, pending: list[Target], devices: Mapping[str, DeviceView], now: float,
                 events: list[str]) -> Decision:
    def order(t: Target) -> tuple[bool, str]:  # online devices first: a canary that is offline proves nothing
        view = devices.get(t.device_id)
        return (not (view is not None and view.online), t.device_id)

    number = r.batches_started
    chosen = sorted(pending, key=order)[:r.batch_size()]
    targets = {t.device_id: t for t in r.targets}
    assign = []
    for t in chosen:
        view = devices.get(t.device_id) or DeviceView(t.device_id, online=False)
        if view.pinned:
            targets[t.device_id] = replace(t, state=TargetState.SKIPPED, settled_at=now, reason="pinned")
        elif not _runs_on(view.platform, r.platforms):
            targets[t.device_id] = _failed(replace(t, batch=number), now,
                                           f"the release has no image for {view.platform}")
        else:
            targets[t.device_id] = replace(t, state=TargetState.UPDATING, batch=number, started_at=now)
            assign.append(Assign(t.device_id, r.release_id))
    label = "canary" if number == 0 and r.canary > 0 else f"batch {number}"
    names = ", ".join(t.device_id for t in chosen[:5]) + (f" and {len(chosen) - 5} more" if len(chosen) > 5 else "")
    events.append(f"{label}: {names}")
    return Decision(replace(r, targets=tuple(targets.values()), batches_started=number + 1),
                    assign=tuple(assign), events=tuple(events))


def abort(rollout: Rollout, now: float, reason: str, *, rollback: bool = True) -> Decision:
    """Stop the rollout. With `rollback`, every device whose desired state was moved goes back to the
    release it had before (failed ones too: their agent already runs the old image, the desired state
    must say so); devices whose batch never started are skipped."""
    targets = []
    assign = []
    for t in rollout.targets:
        if t.state == TargetState.PENDING:
            t = replace(t, state=TargetState.SKIPPED, settled_at=now, reason="rollout aborted before its batch")
        elif rollback and t.started_at is not None and t.state in (TargetState.UPDATING, TargetState.CONVERGED,
                                                                    TargetState.FAILED):
            if t.previous_release_id == rollout.release_id:
                t = replace(t, state=TargetState.REVERTED, settled_at=now)
            else:
                t = replace(t, state=TargetState.REVERTING, generation=None, settled_at=None)
                assign.append(Assign(t.device_id, t.previous_release_id))
        targets.append(t)
    r = replace(rollout, state=RolloutState.ABORTED, reason=reason, finished_at=now, targets=tuple(targets))
    return Decision(r, assign=tuple(assign), events=(f"rollout aborted: {reason}",))


def _follow_reverts(rollout: Rollout, devices: Mapping[str, DeviceView], now: float) -> Decision:
    targets = []
    for t in rollout.targets:
        view = devices.get(t.device_id)
        if t.state == TargetState.REVERTING and view is not None and _reverted(view, t):
            t = replace(t, state=TargetState.REVERTED, settled_at=now)
        elif t.state == TargetState.REVERTING and view is not None and view.assigned not in (
                t.previous_release_id, rollout.release_id):
            # A later rollout (or a pin) gave the device another release: nothing left to put back, and
            # waiting for the old one would keep this rollout open for ever.
            t = replace(t, state=TargetState.REVERTED, settled_at=now,
                        reason=f"superseded: the device was given release {view.assigned} meanwhile")
        targets.append(t)
    return Decision(replace(rollout, targets=tuple(targets)))


def is_open(rollout: Rollout) -> bool:
    """Whether the engine still has to look at it (an aborted rollout watches its reverts)."""
    return rollout.state in OPEN or any(t.state == TargetState.REVERTING for t in rollout.targets)
