"""Fleet simulator (issue 4): simulated agents - the real agent code with a fake engine and registry -
spread over several processes, against the real broker, registry and controller. Prints figures with
their goals; asserts nothing about speed.

    python -m bench.fleet_sim [--devices 1000] [--processes N] [--rounds 3] [--no-throughput]
    python -m bench.fleet_sim --devices 10000 --store postgresql --controllers 2 --kill-one

raw round trip  the controller's broker adapter publishes one retained QoS 1 desired message to every
                device, back to back; each device (the agent's MQTT adapter, same client id and session,
                wired to a trivial echo) sends the bytes back on its reported topic. Per device: echo
                received - the round's first publish. The figures are the medians over `--rounds` rounds
                of each round's p50/p95/max (max: the whole fleet answered).
convergence     the simulated agents register, a release is created, and a rollout to all of them in one
                batch (canary 0, batch 100%) starts. A subscriber on the broker (bench.wiretap, a process
                of its own) notes when each desired state and each device's first report of the app
                running at the release's digest go by. The issue's measure, timed like the raw round trip:
                per device, its running report - the first desired state on the wire. Goal: p95 <= 5 x the
                raw round trip's p95. The simulated image has no HEALTHCHECK and the release's health
                policy settles after 0 s, so nothing waits on a timer; pulls are instant (fake engine). One
                rollout to a fresh image per round; medians over rounds.
strict          also printed, from the controller's own record of each target: settled_at (it saw the
                running report) - started_at (the batch started, before its desired states were stored
                and sent); and the split batch start -> desired on the wire -> agent's running report on
                the wire -> controller settled.
CPU per device  what each side spent per device in each phase (simulator processes, this process - the
                controller or the round-trip client - and the broker): on two cores simulating a thousand
                boards, the agents' CPU adds up, where on a real fleet each board brings its own.
ingest, fan-out bench.controller_ingest, on a broker of its own after the simulation.
updates         per rollout, each device's own count of the containers of the release its engine created
                (bench.simhost CountingEngine): lost = never updated (or not converged), twice = more than one.
--controllers N `tinyfleet controller` processes on the PostgreSQL (bench.simcontrollers), one MQTT share
                group, one signing key; the API of any of them is used. With --kill-one the engine lease's
                holder is killed -9 once --kill-at of the targets have started (mid-batch) and started again
                --restart-after seconds later, as systemd would: takeover = the kill -> another member's
                "took the lease" log line. Reports the broker queued for the killed member's persistent
                session meanwhile reach it when it is back (Mosquitto keeps dealing it its share).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import controller_ingest, images
from bench.proc import cpu_seconds, machine_busy
from bench.roundtrip import EchoBaseline, RoundTrip, discard_session
from bench.simcontrollers import ControllerGroup
from bench.simfleet import SimFleet, device_ids
from bench.simhost import GIL_SWITCH_S, SIMULATOR_NICE, raise_fd_limit
from bench.wiretap import Wiretap
from sandbox.postgres import Postgres
from sandbox.stack import Stack
from tinyfleet.agent import logs
from tinyfleet.controller.client import ApiClient
from tinyfleet.controller.service import Controller, ControllerConfig
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy
from tinyfleet.protocol.broker import BrokerAddress
from tinyfleet.protocol.codec import encode

APP = "hello"
PLATFORMS = ("linux/arm64", "linux/arm/v7")  # dealt round-robin: a fleet of Pi 4s and Pi 3s
HEALTH = {"settle_seconds": 0.0, "deadline_seconds": 60.0}
DEVICES_PER_PROCESS = 250
CONVERGENCE_GOAL = 3.0  # p95 convergence / p95 raw round trip (issue 14; issue 4 asked 5 at 1,000 devices)
INGEST_GOAL = 5_000.0  # messages/s
FANOUT_GOAL = 10_000.0  # devices/min
TAKEOVER_GOAL = 10.0  # s from killing the lease holder to another controller holding it


@dataclass(frozen=True)
class Figures:
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, samples: list[float]) -> Figures:
        if not samples:
            return cls(math.nan, math.nan, math.nan)
        ordered = sorted(samples)
        return cls(percentile(ordered, 50), percentile(ordered, 95), ordered[-1])

    @classmethod
    def median(cls, rounds: list[Figures]) -> Figures:
        return cls(statistics.median(f.p50 for f in rounds), statistics.median(f.p95 for f in rounds),
                   statistics.median(f.max for f in rounds))

    def __str__(self) -> str:
        return f"p50 {self.p50 * 1000:7.1f} ms   p95 {self.p95 * 1000:7.1f} ms   max {self.max * 1000:7.1f} ms"


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest rank: the smallest sample with at least pct% of the samples at or below it."""
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Cost:
    """CPU seconds spent during one phase."""

    simulator: float  # the simulator processes
    here: float  # this process: the controller, or the round-trip client
    broker: float | None  # None: the broker's process was not given


class CpuMeter:
    def __init__(self, fleet: SimFleet, broker_pid: int | None,
                 here: Callable[[], float] = time.process_time) -> None:
        self.fleet = fleet
        self.broker_pid = broker_pid
        self.here = here  # this process, or the controller processes

    def read(self) -> tuple[float, float, float | None]:
        workers = sum(u["cpu_s"] for u in self.fleet.call("usage"))
        broker = cpu_seconds(self.broker_pid) if self.broker_pid else None
        return workers, self.here(), broker

    @staticmethod
    def since(start: tuple[float, float, float | None], end: tuple[float, float, float | None]) -> Cost:
        broker = end[2] - start[2] if end[2] is not None and start[2] is not None else None
        return Cost(end[0] - start[0], end[1] - start[1], broker)


@dataclass(frozen=True)
class RawRound:
    trip: RoundTrip
    cost: Cost


@dataclass(frozen=True)
class Convergence:
    rollout: dict[str, Any]  # the API's view, targets included
    latencies: list[float]  # settled_at - started_at of each converged target
    api_to_all: float  # the rollout API call -> the last target converged
    cost: Cost
    stages: dict[str, list[float]]  # per-device seconds of each stage, from the wiretap
    updates: dict[str, int]  # per device, the containers of the release its own engine created
    kill: Kill | None = None

    @property
    def converged(self) -> int:
        return self.rollout["counts"]["converged"]


@dataclass(frozen=True)
class Simulation:
    devices: int
    processes: int
    raw: list[RawRound]
    rollouts: list[Convergence]
    controllers: int = 1

    @property
    def all_converged(self) -> bool:
        return bool(self.rollouts) and all(r.converged == self.devices and r.rollout["state"] == "completed"
                                           for r in self.rollouts)


def simulate(broker_url: str, registry_host: str, root: Path, *, devices: int = 1000, processes: int = 4,
             rounds: int = 3, platforms: tuple[str, ...] = PLATFORMS, heartbeat: float = 30.0, timeout: float = 300.0,
             broker_pid: int | None = None, database: str | None = None, controllers: int = 1,
             kill: KillPlan | None = None, progress=print) -> Simulation:  # type: ignore[no-untyped-def]
    """Run the raw round trips and the rollouts. Everything started here is stopped here, and the broker is
    left without these devices' retained messages and sessions (it may be shared with tests).
    controllers > 1: that many `tinyfleet controller` processes on `database` (PostgreSQL); with `kill`,
    the lease holder is killed -9 during each rollout and started again (see KillPlan)."""
    ids = device_ids(devices)
    fleet_devices = [(d, platforms[i % len(platforms)]) for i, d in enumerate(ids)]
    pushed = [images.publish(registry_host, root, "sim/hello", f"v{i + 1}", platforms)[0] for i in range(rounds)]
    with SimFleet(broker_url, fleet_devices, processes, heartbeat) as fleet:
        progress(f"{devices} simulated devices in {fleet.processes} processes; broker {broker_url}")
        meter = CpuMeter(fleet, broker_pid)
        raw = _raw_round_trips(fleet, meter, broker_url, ids, pushed[0], rounds, timeout, progress)
        with _controllers(root, broker_url, database, controllers, heartbeat) as (api, group, sessions):
            if group is not None:
                meter = CpuMeter(fleet, broker_pid, group.cpu_seconds)
            fleet.call("publish_images", {image: list(platforms) for image in pushed})
            started = time.monotonic()
            connected = fleet.total("agents_start", timeout, timeout=timeout + 10)
            _wait_registered(api, devices, timeout)
            progress(f"agents: {connected}/{devices} connected and registered with the controller in "
                     f"{time.monotonic() - started:.1f} s")
            rollouts = []
            tap = Wiretap(broker_url)
            try:
                for i, image in enumerate(pushed):
                    killer = Killer(group, devices, kill) if group is not None and kill is not None else None
                    rollouts.append(_rollout(killer.api() if killer else api, meter, image, timeout, tap, fleet,
                                             killer))
                    progress(f"rollout {i + 1}: {rollouts[-1].converged}/{devices} converged "
                             f"({rollouts[-1].rollout['state']}), {Figures.of(rollouts[-1].latencies)}")
            finally:
                tap.close()
            fleet.total("agents_stop", timeout=60)
            client_ids = sessions()
        fleet.total("forget", 10.0, timeout=120)
    for client_id in client_ids:
        discard_session(BrokerAddress.parse(broker_url), client_id)
    return Simulation(devices, fleet.processes, raw, rollouts, controllers)


@contextlib.contextmanager
def _controllers(root: Path, broker_url: str, database: str | None, count: int,
                 heartbeat: float) -> Iterator[tuple[ApiClient, ControllerGroup | None, Callable[[], list[str]]]]:
    """(an API client, the group of controller processes or None, their MQTT sessions): one controller in
    this process, or `count` `tinyfleet controller` processes on one PostgreSQL."""
    if count > 1:
        if database is None:
            raise ValueError("several controllers need a PostgreSQL database (--store postgresql)")
        with ControllerGroup(root / "ctl", broker_url, database, count, heartbeat) as group:
            yield (group.members[0].client(), group,
                   lambda: [m.client_id for m in group.members if m.client_id])
        return
    controller = Controller(ControllerConfig(db=root / "ctl" / "controller.db", broker=broker_url,
                                             database=database, listen="127.0.0.1:0", heartbeat_interval=heartbeat,
                                             tick_interval=0.2)).start()
    try:
        if not controller.wait_connected(15):
            raise RuntimeError("the controller did not connect to the broker")
        yield (ApiClient(controller.url, controller.token, timeout=60), None,
               lambda: [c for c in [controller.store.meta("mqtt_client_id")] if c])
    finally:
        controller.stop()


@dataclass(frozen=True)
class KillPlan:
    at: float = 0.3  # kill the lease holder once this share of the targets has started
    restart_after: float = 2.0  # then start it again this many seconds later (systemd's RestartSec=2)


@dataclass(frozen=True)
class Kill:
    started: int  # targets started (desired states stored) when the holder was killed
    took_over: float  # seconds from the kill to the survivor's "took the lease" log line
    back_after: float  # seconds from the kill to the killed controller answering again


class Killer:
    """Kills the engine lease's holder -9 once `plan.at` of the rollout's targets have started (mid-batch:
    the batch goes out in chunks), and starts it again `plan.restart_after` seconds later; the rollout is
    watched through another member's API meanwhile."""

    def __init__(self, group: ControllerGroup, devices: int, plan: KillPlan) -> None:
        self.group = group
        self.devices = devices
        self.plan = plan
        self.victim = group.holder()
        self.survivor = next(m for m in group.members if m is not self.victim)
        self.killed_at: float | None = None
        self.started = 0
        self.took: float | None = None  # when another member logged taking the lease after the kill
        self.back: float | None = None
        self.kill: Kill | None = None

    def api(self) -> ApiClient:
        return self.survivor.client()

    def diagnosis(self) -> str:
        return (f"killed {self.victim.root.name} at {self.killed_at}; lease taken at: "
                f"{ {m.root.name: m.took_lease_at() for m in self.group.members} }; back after {self.back}")

    def poll(self, summary: dict[str, Any]) -> None:
        if self.killed_at is None:
            started = self.devices - summary["counts"].get("pending", 0)
            if started >= self.plan.at * self.devices:
                self.killed_at, self.started = time.time(), started  # before: the survivor may take over
                self.victim.kill()  # before kill() has seen the process gone
            return
        if self.took is None:
            took = [at for m in self.group.members if m is not self.victim and (at := m.took_lease_at()) is not None
                    and at > self.killed_at]
            self.took = min(took) if took else None
        if self.back is None and time.time() - self.killed_at >= self.plan.restart_after:
            self.victim.start()
            self.back = time.time() - self.killed_at
        if self.took is not None and self.back is not None:
            self.kill = Kill(self.started, self.took - self.killed_at, self.back)


def _raw_round_trips(fleet: SimFleet, meter: CpuMeter, broker_url: str, ids: list[str], image: str, rounds: int,
                     timeout: float, progress) -> list[RawRound]:  # type: ignore[no-untyped-def]
    connected = fleet.total("echo_start", timeout, timeout=timeout + 10)
    if connected != len(ids):
        raise RuntimeError(f"only {connected}/{len(ids)} echo clients connected")
    results = []
    with EchoBaseline(broker_url) as baseline:
        for i in range(rounds + 1):  # round 0 warms up: every subscription is in place before timing
            spec = AppSpec(APP, image, health=HealthPolicy(**HEALTH))  # a real document: the same size
            payloads = {d: encode(DesiredState(d, i + 1, (spec,), issued_at=time.time())) for d in ids}
            before = meter.read()
            trip = baseline.round(payloads, timeout)
            cost = meter.since(before, meter.read())
            if trip.missing:
                raise RuntimeError(f"raw round trip {i}: {trip.missing} devices did not echo within {timeout:g} s")
            if i:
                results.append(RawRound(trip, cost))
                progress(f"raw round trip {i}: {Figures.of(trip.from_start)}")
        baseline.clear(ids)
        time.sleep(0.5)  # let the echoes take the cleared (empty) retained copies before they disconnect
    fleet.total("echo_stop")
    return results


def _wait_registered(api: ApiClient, devices: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = sum(1 for d in api.devices() if d["online"] and d["platform"])
        if ready >= devices:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ready}/{devices} simulated devices registered within {timeout:g} s")
        time.sleep(0.2)


def _rollout(api: ApiClient, meter: CpuMeter, image: str, timeout: float, tap: Wiretap, fleet: SimFleet,
             killer: Killer | None = None) -> Convergence:
    release = api.create_release(APP, image, health=HEALTH)
    tap.watch(release["image"])
    before = meter.read()
    called = time.time()
    rollout_id = api.start_rollout(APP, release["id"], "all", canary=0, batch="100%", health_timeout=timeout)["id"]
    deadline = time.monotonic() + timeout
    # Poll the light listing (no targets): fetching a thousand targets often would load the controller.
    while True:
        summary = next(r for r in api.rollouts(APP, limit=5) if r["id"] == rollout_id)
        if killer is not None:
            killer.poll(summary)
        if (not summary["open"] and (killer is None or killer.kill is not None)) or time.monotonic() > deadline:
            break
        # each look counts the targets in the store: not too often while the batch goes out
        time.sleep(0.5 if killer is None or killer.killed_at is not None else 0.1)
    cost = meter.since(before, meter.read())
    if killer is not None and killer.kill is None:
        raise RuntimeError(f"the kill did not complete within {timeout:g} s: {killer.diagnosis()}")
    done = api.rollout(rollout_id)
    converged = [t for t in done["targets"] if t["state"] == "converged"]
    latencies = [t["settled_at"] - t["started_at"] for t in converged]
    last = max((t["settled_at"] for t in converged), default=math.nan)
    desired, running = tap.seen()
    seen = [t for t in converged if t["device"] in desired and t["device"] in running]
    first = min((desired[t["device"]] for t in seen), default=math.nan)
    stages = {"batch start -> desired on the wire": [desired[t["device"]] - t["started_at"] for t in seen],
              "agent: desired -> running reported": [running[t["device"]] - desired[t["device"]] for t in seen],
              "controller: report -> settled": [t["settled_at"] - running[t["device"]] for t in seen],
              # the issue's own words, "desired published -> reported running", timed like the raw round
              # trip: from the first desired state on the wire to each device's report
              FIRST_DESIRED: [running[t["device"]] - first for t in seen]}
    updates: dict[str, int] = {}
    for share in fleet.call("updates", release["image"]):
        updates.update(share)
    return Convergence(done, latencies, last - called, cost, stages, updates, killer.kill if killer else None)


FIRST_DESIRED = "first desired -> reported running"


def verdict(ok: bool) -> str:
    return "OK" if ok else "OVER"


def _per_device(costs: list[Cost], devices: int) -> str:
    def ms(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{statistics.median(known) / devices * 1000:5.2f} ms" if known else "    ?"

    return (f"simulator {ms([c.simulator for c in costs])}, this process {ms([c.here for c in costs])}, "
            f"broker {ms([c.broker for c in costs])}")


def report(sim: Simulation) -> float:
    """Print the convergence figures; returns the goal's ratio: p95(desired published -> reported running)
    / p95(raw round trip)."""
    raw = Figures.median([Figures.of(r.trip.from_start) for r in sim.raw])
    own = Figures.median([Figures.of(r.trip.per_message) for r in sim.raw])
    strict = Figures.median([Figures.of(r.latencies) for r in sim.rollouts])
    stages = {stage: Figures.median([Figures.of(r.stages[stage]) for r in sim.rollouts])
              for stage in sim.rollouts[0].stages}
    api_to_all = statistics.median(r.api_to_all for r in sim.rollouts)
    conv = stages[FIRST_DESIRED]
    ratio = conv.p95 / raw.p95
    print(f"\n{sim.devices} devices in {sim.processes} simulator processes; medians over {len(sim.raw)} rounds")
    print(f"raw round trip   first publish -> device echoed     {raw}")
    print(f"                 its own publish -> device echoed   {own}")
    print(f"convergence      {FIRST_DESIRED:<34} {conv}")
    print(f"                 rollout API call -> all converged  {api_to_all * 1000:7.1f} ms;  every round all "
          f"{sim.devices} converged: {'yes' if sim.all_converged else 'NO'}")
    print(f"ratio            p95 convergence / p95 raw          {ratio:5.2f} x   (goal <= {CONVERGENCE_GOAL:g} x)  "
          f"{verdict(ratio <= CONVERGENCE_GOAL)}")
    print(f"strict           batch start -> controller saw it   {strict}   ({strict.p95 / raw.p95:.2f} x)")
    for stage, figures in stages.items():
        if stage != FIRST_DESIRED:
            print(f"{'':<17}{stage:<34} {figures}")
    here = "controllers" if sim.controllers > 1 else "this process"
    print(f"CPU per device   raw round trip: {_per_device([r.cost for r in sim.raw], sim.devices)}")
    print(f"                 convergence:    {_per_device([r.cost for r in sim.rollouts], sim.devices)}"
          f"{'   (this process: the controllers)' if here == 'controllers' else ''}")
    for i, r in enumerate(sim.rollouts, 1):
        print(f"rollout {i}        {_affected(r, sim.devices)}")
        if r.kill is not None:
            k = r.kill
            print(f"                 lease holder killed -9 with {k.started}/{sim.devices} targets started; lease "
                  f"taken over after {k.took_over:.2f} s (goal <= {TAKEOVER_GOAL:g} s) "
                  f"{verdict(k.took_over <= TAKEOVER_GOAL)}; the killed one answered again after {k.back_after:.1f} s")
    return ratio


def _affected(r: Convergence, devices: int) -> str:
    """Lost: never updated by its own count, or not converged; twice: more than one container of the release."""
    lost = sum(1 for n in r.updates.values() if n == 0) + devices - len(r.updates)
    twice = sum(1 for n in r.updates.values() if n > 1)
    return (f"devices' own counts: {devices - lost - twice} updated once, {lost} never (lost), {twice} more than "
            f"once; {r.converged} converged  {verdict(lost == 0 and twice == 0 and r.converged == devices)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=0,
                        help=f"simulator processes (default: one per {DEVICES_PER_PROCESS} devices)")
    parser.add_argument("--rounds", type=int, default=3, help="raw round trips and rollouts, each (default 3)")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="the agents' heartbeat in seconds")
    parser.add_argument("--messages", type=int, default=30_000, help="ingest burst size")
    parser.add_argument("--no-throughput", action="store_true", help="skip the ingest and fan-out figures")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the controller's database (postgresql: a private cluster, durable settings)")
    parser.add_argument("--controllers", type=int, default=1,
                        help="N > 1: that many `tinyfleet controller` processes on PostgreSQL, one MQTT share group")
    parser.add_argument("--kill-one", action="store_true",
                        help="with --controllers: kill -9 the lease holder mid-rollout, start it again after "
                             "--restart-after s")
    parser.add_argument("--kill-at", type=float, default=KillPlan.at,
                        help=f"share of the targets started when it is killed (default {KillPlan.at:g})")
    parser.add_argument("--restart-after", type=float, default=KillPlan.restart_after)
    args = parser.parse_args(argv)
    if args.controllers > 1 and args.store != "postgresql":
        parser.error("--controllers N > 1 needs --store postgresql")
    if args.kill_one and args.controllers < 2:
        parser.error("--kill-one needs --controllers 2 or more")
    logs.configure("warning", json=True)  # as `tinyfleet controller` sets it up, quieter
    busy = machine_busy(1.0)
    print(f"machine: {os.cpu_count()} cores, {busy:.0%} busy before the run (load average "
          f"{os.getloadavg()[0]:.2f}); open files limit {raise_fd_limit()}; simulator GIL switch interval "
          f"{GIL_SWITCH_S * 1000:g} ms, simulator processes at nice {SIMULATOR_NICE}")
    processes = args.processes or max(1, -(-args.devices // DEVICES_PER_PROCESS))
    with Stack(docker_host="unused") as stack:  # broker and registry only: simulated agents need no engine
        mosquitto = stack.mosquitto
        pid = mosquitto.proc.proc.pid if mosquitto and mosquitto.proc.proc else None
        cluster = Postgres(stack.root, durable=True).start() if args.store == "postgresql" else None
        try:
            sim = simulate(stack.broker_url, stack.registry_host, stack.root,  # type: ignore[arg-type]
                           devices=args.devices, processes=processes, rounds=args.rounds, heartbeat=args.heartbeat,
                           broker_pid=pid, database=cluster.create_database("sim") if cluster else None,
                           controllers=args.controllers,
                           kill=KillPlan(args.kill_at, args.restart_after) if args.kill_one else None)
        finally:
            if cluster:
                cluster.stop()
                cluster.remove()
    print(f"store: {args.store}, {args.controllers} controller{'s' if args.controllers > 1 else ''}")
    report(sim)
    if args.no_throughput:
        return
    print()
    t = controller_ingest.measure(args.devices, args.messages, store=args.store)
    print(f"\ningest           {t.ingest_rate:9,.0f} msg/s, {t.lost:.0f} lost   (goal >= {INGEST_GOAL:,.0f}, none "
          f"lost)  {verdict(t.ingest_rate >= INGEST_GOAL and t.lost <= 0)}")
    print(f"fan-out          {t.fanout_per_min:9,.0f} devices/min   (goal >= {FANOUT_GOAL:,.0f})  "
          f"{verdict(t.fanout_per_min >= FANOUT_GOAL)}")
    print(f"machine: {machine_busy(1.0):.0%} busy after the run (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
