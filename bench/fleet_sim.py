"""Fleet simulator (issue 4): simulated agents - the real agent code with a fake engine and registry -
spread over several processes, against the real broker, registry and controller. Prints figures with
their goals; asserts nothing about speed.

    python -m bench.fleet_sim [--devices 1000] [--processes N] [--rounds 3] [--no-throughput]

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
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import controller_ingest, images
from bench.proc import cpu_seconds, machine_busy
from bench.roundtrip import EchoBaseline, RoundTrip, discard_session
from bench.simfleet import SimFleet, device_ids
from bench.simhost import GIL_SWITCH_S, raise_fd_limit
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
CONVERGENCE_GOAL = 5.0  # p95 convergence / p95 raw round trip
INGEST_GOAL = 5_000.0  # messages/s
FANOUT_GOAL = 10_000.0  # devices/min


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
    def __init__(self, fleet: SimFleet, broker_pid: int | None) -> None:
        self.fleet = fleet
        self.broker_pid = broker_pid

    def read(self) -> tuple[float, float, float | None]:
        workers = sum(u["cpu_s"] for u in self.fleet.call("usage"))
        broker = cpu_seconds(self.broker_pid) if self.broker_pid else None
        return workers, time.process_time(), broker

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

    @property
    def converged(self) -> int:
        return self.rollout["counts"]["converged"]


@dataclass(frozen=True)
class Simulation:
    devices: int
    processes: int
    raw: list[RawRound]
    rollouts: list[Convergence]

    @property
    def all_converged(self) -> bool:
        return bool(self.rollouts) and all(r.converged == self.devices and r.rollout["state"] == "completed"
                                           for r in self.rollouts)


def simulate(broker_url: str, registry_host: str, root: Path, *, devices: int = 1000, processes: int = 4,
             rounds: int = 3, platforms: tuple[str, ...] = PLATFORMS, heartbeat: float = 30.0, timeout: float = 300.0,
             broker_pid: int | None = None, database: str | None = None,
             progress=print) -> Simulation:  # type: ignore[no-untyped-def]
    """Run the raw round trips and the rollouts. Everything started here is stopped here, and the broker is
    left without these devices' retained messages and sessions (it may be shared with tests)."""
    ids = device_ids(devices)
    fleet_devices = [(d, platforms[i % len(platforms)]) for i, d in enumerate(ids)]
    pushed = [images.publish(registry_host, root, "sim/hello", f"v{i + 1}", platforms)[0] for i in range(rounds)]
    with SimFleet(broker_url, fleet_devices, processes, heartbeat) as fleet:
        progress(f"{devices} simulated devices in {fleet.processes} processes; broker {broker_url}")
        meter = CpuMeter(fleet, broker_pid)
        raw = _raw_round_trips(fleet, meter, broker_url, ids, pushed[0], rounds, timeout, progress)
        controller = Controller(ControllerConfig(db=root / "ctl" / "controller.db", broker=broker_url,
                                                 database=database, listen="127.0.0.1:0", heartbeat_interval=heartbeat,
                                                 tick_interval=0.2)).start()
        try:
            if not controller.wait_connected(15):
                raise RuntimeError("the controller did not connect to the broker")
            api = ApiClient(controller.url, controller.token, timeout=60)
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
                    rollouts.append(_rollout(api, meter, image, timeout, tap))
                    progress(f"rollout {i + 1}: {rollouts[-1].converged}/{devices} converged "
                             f"({rollouts[-1].rollout['state']}), {Figures.of(rollouts[-1].latencies)}")
            finally:
                tap.close()
            fleet.total("agents_stop", timeout=60)
            session = controller.store.meta("mqtt_client_id")
        finally:
            controller.stop()
        fleet.total("forget", 10.0, timeout=120)
    if session:
        discard_session(BrokerAddress.parse(broker_url), session)
    return Simulation(devices, fleet.processes, raw, rollouts)


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


def _rollout(api: ApiClient, meter: CpuMeter, image: str, timeout: float, tap: Wiretap) -> Convergence:
    release = api.create_release(APP, image, health=HEALTH)
    tap.watch(release["image"])
    before = meter.read()
    called = time.time()
    rollout_id = api.start_rollout(APP, release["id"], "all", canary=0, batch="100%", health_timeout=timeout)["id"]
    deadline = time.monotonic() + timeout
    # Poll the light listing (no targets): fetching a thousand targets often would load the controller.
    while any(r["open"] for r in api.rollouts(APP, limit=5) if r["id"] == rollout_id):
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    cost = meter.since(before, meter.read())
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
    return Convergence(done, latencies, last - called, cost, stages)


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
    print(f"CPU per device   raw round trip: {_per_device([r.cost for r in sim.raw], sim.devices)}")
    print(f"                 convergence:    {_per_device([r.cost for r in sim.rollouts], sim.devices)}")
    return ratio


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
    args = parser.parse_args(argv)
    logs.configure("warning", json=True)  # as `tinyfleet controller` sets it up, quieter
    busy = machine_busy(1.0)
    print(f"machine: {os.cpu_count()} cores, {busy:.0%} busy before the run (load average "
          f"{os.getloadavg()[0]:.2f}); open files limit {raise_fd_limit()}; simulator GIL switch interval "
          f"{GIL_SWITCH_S * 1000:g} ms")
    processes = args.processes or max(1, -(-args.devices // DEVICES_PER_PROCESS))
    with Stack(docker_host="unused") as stack:  # broker and registry only: simulated agents need no engine
        mosquitto = stack.mosquitto
        pid = mosquitto.proc.proc.pid if mosquitto and mosquitto.proc.proc else None
        cluster = Postgres(stack.root, durable=True).start() if args.store == "postgresql" else None
        try:
            sim = simulate(stack.broker_url, stack.registry_host, stack.root,  # type: ignore[arg-type]
                           devices=args.devices, processes=processes, rounds=args.rounds, heartbeat=args.heartbeat,
                           broker_pid=pid, database=cluster.create_database("sim") if cluster else None)
        finally:
            if cluster:
                cluster.stop()
                cluster.remove()
    print(f"store: {args.store}")
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
