"""The rollout engine: runs the pure state machine (controller.rollout) against the store and turns its
decisions into assignments and desired states. Level-triggered: each pass decides from the store's
state, so a restarted controller carries on exactly where the last one stood. (Device records are kept
between passes and re-read when the store says they were written: the same state, read for less.)

One pass (`tick`): give devices that joined a group/tag (or appeared) the release their selectors stand
for; step every open rollout; send the desired states that changed. Operator commands (start, pause,
resume, abort) run here too, each in one transaction with the rollout it changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import structlog

from tinyfleet.controller import rollout as machine
from tinyfleet.controller.errors import Conflict, InvalidRequest, NotFound
from tinyfleet.controller.fleet import Fleet, check_app
from tinyfleet.controller.lease import Lease
from tinyfleet.controller.model import Binding, DeviceRecord
from tinyfleet.controller.publisher import Publisher
from tinyfleet.controller.releases import Releases
from tinyfleet.controller.rollout import Amount, Decision, DeviceView, Rollout, RolloutState, Tally, Target
from tinyfleet.controller.selector import Selector
from tinyfleet.controller.store import Store

GATHER_S = 0.02
CHUNK = 250  # a batch that starts many devices is stored and sent this many at a time (see step)
log = structlog.get_logger("controller.engine")
Outbox = list[tuple[str, int, bytes]]


class Engine:
    def __init__(self, store: Store, fleet: Fleet, releases: Releases, publisher: Publisher,
                 clock: Callable[[], float] = time.time, lease: Lease | None = None) -> None:
        self.store = store
        self.lease = lease  # several controllers on one database: only the lease's holder makes passes
        self.fleet = fleet
        self.releases = releases
        self.publisher = publisher
        self.clock = clock
        self.wake = threading.Event()
        self.republish = threading.Event()  # set on each broker (re)connection
        # Every device's record as of the last pass: a pass re-reads only those written since (a rollout of
        # a thousand devices makes a pass per burst of reports, and most devices have not changed).
        self._records: dict[str, DeviceRecord] = {}
        self._view_cache: dict[tuple[str, str], tuple[DeviceRecord, bool, DeviceView]] = {}

    # -- operator commands ----------------------------------------------------------------------

    def start_rollout(self, app: str, release: str | int, selector: str, *, canary: Any = 1, batch: Any = "25%",
                      max_failures: Any = 0, health_timeout: Any = 300.0, offline_deadline: Any = 3600.0) -> Rollout:
        app = check_app(app)
        chosen = Selector.parse(selector)
        r = Rollout(id=0, app=app, release_id=0, image="", platforms=(), selector=str(chosen),
                    canary=_count(canary, "canary"), batch=Amount.parse(batch, "batch"),
                    max_failures=Amount.parse(max_failures, "max failures"),
                    health_timeout=_seconds(health_timeout, "health timeout", 1, 86400),
                    offline_deadline=_seconds(offline_deadline, "offline deadline", 1, 30 * 86400))
        if r.batch.value == 0:
            raise InvalidRequest("batch must be at least 1 device or 1%")
        with self.store.transaction():
            target = self.releases.find(app, release)
            active = self.store.active_rollout(app)
            if active is not None:
                raise Conflict(f"rollout {active} of {app} is still {self.store.rollout(active).state.value}; "  # type: ignore[union-attr]
                               "abort it or let it finish first")
            now = self.clock()
            views = self._views(app, self.store.devices(chosen), now)
            r = replace(r, release_id=target.id, image=target.image,
                        platforms=tuple(p.platform for p in target.platforms), created_at=now,
                        targets=machine.plan_targets(views.values()))
            created = self.store.create_rollout(r)
        log.info("rollout started", rollout=created.id, app=app, release=target.id, selector=str(chosen),
                 targets=len(created.targets))
        self.wake.set()
        return created

    def pause(self, rollout_id: int) -> Rollout:
        return self._set_state(rollout_id, RolloutState.RUNNING, RolloutState.PAUSED)

    def resume(self, rollout_id: int) -> Rollout:
        return self._set_state(rollout_id, RolloutState.PAUSED, RolloutState.RUNNING)

    def _set_state(self, rollout_id: int, expect: RolloutState, new: RolloutState) -> Rollout:
        with self.store.transaction():
            r = self.get(rollout_id)
            if r.state != expect:
                raise Conflict(f"rollout {rollout_id} is {r.state.value}, not {expect.value}")
            self.store.save_rollout(replace(r, state=new), ())
        log.info("rollout " + new.value, rollout=rollout_id)
        self.wake.set()
        return self.get(rollout_id)

    def abort(self, rollout_id: int, *, rollback: bool = True) -> Rollout:
        with self.store.transaction():
            r = self.get(rollout_id)
            if r.state not in machine.OPEN:
                raise Conflict(f"rollout {rollout_id} is already {r.state.value}")
            outbox = self._apply(r, machine.abort(r, self.clock(), "aborted by the operator", rollback=rollback))
        self.publisher.send(outbox)
        self.wake.set()
        return self.get(rollout_id)

    def force_update(self, device_id: str, apps: Sequence[str] = ()) -> dict[str, Any]:
        """Update the device's apps now, whatever their update locks say (a signed desired state with a force
        marker, at a new generation)."""
        for app in apps:
            check_app(app)
        self.fleet.get(device_id)  # unknown device: NotFound
        generation, forced = self.publisher.force(device_id, apps)
        return {"device": device_id, "generation": generation, "forced": list(forced)}

    def summaries(self, app: str | None = None, limit: int = 20) -> list[tuple[Rollout, Tally]]:
        """The newest rollouts, without their targets (counted instead)."""
        return self.store.rollout_summaries(check_app(app) if app else None, limit)

    def get(self, rollout_id: int) -> Rollout:
        r = self.store.rollout(rollout_id)
        if r is None:
            raise NotFound(f"no rollout {rollout_id}")
        return r

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            if self.wake.wait(interval):
                stop.wait(GATHER_S)  # reports arrive in bursts: let the burst land, then make one pass
            self.wake.clear()
            if stop.is_set():
                return
            try:
                if self.lease is None or self.lease.held():
                    self.tick()
            except Exception:  # keep going: a bad pass must not stop rollouts; the next pass retries
                log.exception("engine pass failed")

    def tick(self) -> None:
        if self.republish.is_set():
            self.republish.clear()
            self.publisher.republish_all()
        self.bind_joiners()
        for rollout_id in self.store.open_rollout_ids():
            self.step(rollout_id)
        self.publisher.flush()

    def step(self, rollout_id: int) -> Decision | None:
        with self.store.transaction():
            r = self.store.rollout(rollout_id)
            if r is None or not machine.is_open(r):
                return None
            now = self.clock()
            records = self._fresh_records()
            devices = []
            if r.state in machine.OPEN:  # devices matching the selector now may join
                selector = Selector.parse(r.selector)
                devices = [d for d in records.values() if selector.matches(d.id, d.groups, dict(d.tags))]
            known = {d.id for d in devices}
            devices += [records[t.device_id] for t in r.targets
                        if t.device_id not in known and t.device_id in records]
            decision = machine.next(r, self._views(r.app, devices, now), now)
            # A batch that starts thousands of devices goes out a chunk at a time, each chunk its own
            # transaction: the first devices start while the rest are still being written, and ingest and
            # the API get the store between chunks instead of waiting for the whole batch. Reverts are
            # never split: an abort must be stored whole.
            chunked = decision.rollout.state == RolloutState.RUNNING and len(decision.assign) > CHUNK
            first, rest = (decision.assign[:CHUNK], decision.assign[CHUNK:]) if chunked else (decision.assign, ())
            outbox = self._apply(r, decision, first, later={a.device_id for a in rest})
        self.publisher.send(outbox)
        targets = {t.device_id: t for t in decision.rollout.targets} if rest else {}
        for start in range(0, len(rest), CHUNK):
            with self.store.transaction():
                # Only while the rollout stands where this decision left it: after a pause or an abort in
                # between, the devices not yet started stay pending (and go with the next batch, or are
                # skipped). A crash in between leaves them pending too: the next batch takes them.
                if self.store.rollout_head(rollout_id) != (decision.rollout.state, decision.rollout.batches_started):
                    log.info("rollout changed while its batch went out; the rest waits", rollout=rollout_id,
                             not_started=len(rest) - start)
                    break
                chunk = rest[start:start + CHUNK]
                held = self.store.pinned(decision.rollout.app, [a.device_id for a in chunk])  # pinned meanwhile:
                outbox = self._start_more(decision.rollout, tuple(a for a in chunk if a.device_id not in held),
                                          targets)  # left pending, the next pass skips them
            self.publisher.send(outbox)
        return decision

    def _apply(self, old: Rollout, d: Decision, assign: tuple[machine.Assign, ...] | None = None,
               later: Collection[str] = ()) -> Outbox:
        """Store a decision (inside the caller's transaction): assignments and their documents (all, or
        the first `assign` of them), the generation each target waits for, the rollout itself, and the
        binding when it completed. Targets in `later` are left as they were; _start_more stores them."""
        now = self.clock()
        new = d.rollout
        outbox, generations = self._assign(new, d.assign if assign is None else assign, now)
        if generations:
            new = replace(new, targets=tuple(replace(t, generation=generations[t.device_id])
                                             if t.device_id in generations else t for t in new.targets))
        before = {t.device_id: t for t in old.targets}
        self.store.save_rollout(new, [t for t in new.targets
                                      if before.get(t.device_id) != t and t.device_id not in later])
        if d.bind:
            self.store.bind(Binding(new.selector, new.app, new.release_id, new.id, now))
        for event in d.events:
            log.info(event, rollout=new.id, app=new.app, state=new.state.value)
        return outbox

    def _start_more(self, r: Rollout, assign: tuple[machine.Assign, ...], targets: dict[str, Target]) -> Outbox:
        """The next chunk of a batch the rollout `r` started (inside the caller's transaction); `targets`
        are r's by device."""
        outbox, generations = self._assign(r, assign, self.clock())
        self.store.save_targets(r.id, [replace(targets[a.device_id], generation=generations[a.device_id])
                                       for a in assign])
        return outbox

    def _assign(self, r: Rollout, assign: tuple[machine.Assign, ...], now: float) -> tuple[Outbox, dict[str, int]]:
        """Move devices to releases and store their documents; returns them, and the generation each of
        those devices' targets now waits for."""
        changed = self.store.assign_many(r.app, [(a.device_id, a.release_id) for a in assign], r.id, now)
        outbox: Outbox = self.publisher.materialise_many(changed)
        generations = {device_id: generation for device_id, generation, _ in outbox}
        unchanged = [a.device_id for a in assign if a.device_id not in generations]
        if unchanged:  # already on that release: its current document carries it
            generations.update((i, inputs[0]) for i, inputs in self.store.desired_inputs_many(unchanged).items())
        return outbox, generations

    def bind_joiners(self, chunk: int = 1000) -> int:
        """Devices that appeared or changed groups/tags get, per app, the release of the newest binding
        whose selector they match - unless pinned, or an open rollout of that app will take them.
        One transaction per chunk of devices: a thousand new devices cost one commit, not a thousand."""
        moved = 0
        while True:
            with self.store.transaction():
                ids = self.store.devices_needing_binding(chunk)
                if not ids:
                    return moved
                moved += self._bind(self.store.devices(ids=ids, detail=False))
                self.store.clear_needs_binding(ids)
            if len(ids) < chunk:
                return moved

    def _bind(self, devices: list[DeviceRecord]) -> int:
        bindings = [(Selector.parse(b.selector), b) for b in self.store.bindings()]  # newest first
        if not bindings:
            return 0
        taking: dict[str, Selector | None] = {}  # app -> selector of its open rollout
        moved = 0
        for device in devices:
            tags = dict(device.tags)
            for app in sorted({b.app for _, b in bindings}):
                if app not in taking:
                    active = self.store.active_rollout(app)
                    rollout = self.store.rollout(active) if active is not None else None
                    taking[app] = Selector.parse(rollout.selector) if rollout else None
                open_rollout = taking[app]
                if device.pinned(app) or (open_rollout and open_rollout.matches(device.id, device.groups, tags)):
                    continue
                match = next((b for s, b in bindings if b.app == app and s.matches(device.id, device.groups, tags)),
                             None)
                if match is not None and self.store.assign(device.id, app, match.release_id, match.rollout_id,
                                                           self.clock()):
                    moved += 1
                    log.info("device joined a selector", device=device.id, app=app, selector=match.selector,
                             release=match.release_id)
        return moved

    def _fresh_records(self) -> dict[str, DeviceRecord]:
        """Every device's record, re-reading those written since the last call (call inside a transaction:
        what is read is then what the decision stands on)."""
        changed = self.store.take_changed()
        if changed is None:
            self._records = {d.id: d for d in self.store.devices(detail=False)}
        elif changed:
            self._records.update((d.id, d) for d in self.store.devices(ids=sorted(changed), detail=False))
        return self._records

    def _views(self, app: str, devices: list[DeviceRecord], now: float) -> dict[str, DeviceView]:
        views = {}
        for d in devices:
            online = self.fleet.online(d, now)
            cached = self._view_cache.get((app, d.id))
            if cached is not None and cached[0] is d and cached[1] == online:
                views[d.id] = cached[2]  # the same record (not re-read since): the same view
                continue
            assigned = d.assigned(app)
            release = self.store.release(assigned) if assigned is not None else None
            views[d.id] = view = DeviceView(
                id=d.id, online=online, online_since=d.online_since, platform=d.platform, pinned=d.pinned(app),
                generation=d.reported_generation, rejected_generation=d.rejected_generation,
                error=(d.reported or {}).get("error"), app=d.app_status(app), assigned=assigned,
                assigned_image=release.image if release else None)
            self._view_cache[(app, d.id)] = (d, online, view)
        return views


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise InvalidRequest(f"{what} {value!r} must be a whole number of devices (0 or more)")
    return value


def _seconds(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidRequest(f"{what} {value!r} must be a number of seconds from {lo:g} to {hi:g}")
    return float(value)
