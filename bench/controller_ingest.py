"""Controller throughput on the real broker: ingest rate and rollout fan-out, with baselines from the
same run. Prints figures; asserts nothing about speed.

    python -m bench.controller_ingest [--devices 1000] [--messages 30000] [--publishers 4]

ingest    N publisher processes send a mix of device messages (60% health QoS 0, 30% reported QoS 1
          retained, 10% status QoS 1 retained) for `--devices` devices as fast as they can; the figure is
          messages written to the store per second, from the first publish to the last write, and how
          many were lost (sent - written - dropped). Baseline: a bare paho subscriber receiving the same
          burst (what the broker and one paho client can do at all).
fan-out   a rollout of one release to every device in one batch: time from the API call to the last
          desired state arriving at a subscriber, as devices per minute.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sandbox.mosquitto import Mosquitto
from sandbox.postgres import Postgres
from tinyfleet.controller.model import Release, ReleasePlatform
from tinyfleet.controller.service import Controller, ControllerConfig
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import encode
from tinyfleet.protocol.messages import AppStatus, Health, Phase, ReportedState, Status

IMAGE = "127.0.0.1:5000/bench/hello@sha256:" + "b" * 64


def _messages(devices: int, count: int, offset: int, stride: int) -> list[tuple[str, bytes, int, bool]]:
    out = []
    for i in range(offset, count, stride):
        device = f"bench-{i % devices:05d}"
        kind = i % 10
        if kind < 6:
            msg = Health(device, ts=time.time(), uptime_seconds=i, engine_reachable=True, agent_version="bench",
                         cpu_temp_c=45.0, mem_available_bytes=100_000_000)
            out.append((topics.health(device), encode(msg), 0, False))
        elif kind < 9:
            app = AppStatus("hello", Phase.RUNNING, IMAGE, IMAGE, health="healthy")
            msg = ReportedState(device, 0, (app,), platform="linux/arm64", agent_version="bench")
            out.append((topics.reported(device), encode(msg), 1, True))
        else:
            msg = Status(device, online=True, agent_version="bench", platform="linux/arm64")
            out.append((topics.status(device), encode(msg), 1, True))
    return out


def _publisher(port: int, devices: int, count: int, offset: int, stride: int, start: mp.Event) -> None:
    batch = _messages(devices, count, offset, stride)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{offset}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start.wait()
    infos = [client.publish(t, p, qos=q, retain=r) for t, p, q, r in batch]
    for info in infos:
        if info.rc == 0 and info.mid:
            info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def _burst(port: int, devices: int, count: int, publishers: int) -> tuple[float, list[mp.Process]]:
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_publisher, args=(port, devices, count, i, publishers, start))
             for i in range(publishers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # connected and encoded
    began = time.perf_counter()
    start.set()
    return began, procs


class Counter:
    def __init__(self, port: int, pattern: str, qos: int = 1) -> None:
        self.count = 0
        self.last = 0.0
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{pattern.replace('/', '_')}")
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(pattern, qos)
        self.client.loop_start()
        time.sleep(0.3)

    def _on(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        if msg.retain:
            return  # history from an earlier phase
        with self.lock:
            self.count += 1
            self.last = time.perf_counter()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(check, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _written(controller: Controller) -> float:
    return sum(s.value for s in controller.metrics.ingested.collect()[0].samples if s.name.endswith("_total"))


def _dropped(controller: Controller) -> float:
    return sum(s.value for s in controller.metrics.dropped.collect()[0].samples if s.name.endswith("_total"))


@dataclass(frozen=True)
class Throughput:
    baseline_rate: float  # msg/s a bare paho subscriber received
    ingest_rate: float  # msg/s the controller wrote
    lost: float  # sent - written - dropped
    fanout_devices: int
    fanout_per_min: float  # devices whose desired state reached a subscriber, per minute


def measure(devices: int = 1000, messages: int = 30_000, publishers: int = 4, store: str = "sqlite") -> Throughput:
    """Both figures on a private broker of their own; prints them as it goes. `store` "postgresql": the
    controller on a private PostgreSQL with its durable defaults (fsync, synchronous commit), as SQLite's
    synchronous=FULL."""
    root = Path(tempfile.mkdtemp(prefix="tfb", dir="/tmp"))
    broker = Mosquitto(root / "mqtt").start()
    cluster = Postgres(root, durable=True).start() if store == "postgresql" else None
    try:
        return run(broker, root, argparse.Namespace(devices=devices, messages=messages, publishers=publishers,
                                                    database=cluster.create_database("bench") if cluster else None))
    finally:
        if cluster:
            cluster.stop()
            cluster.remove()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the controller's database (postgresql: a private cluster, durable settings)")
    args = parser.parse_args()
    measure(args.devices, args.messages, args.publishers, args.store)


def run(broker: Mosquitto, root: Path, args: argparse.Namespace) -> Throughput:
    n, m = args.devices, args.messages
    database = getattr(args, "database", None)
    print(f"{n} devices, {m} messages from {args.publishers} publisher processes, broker {broker.url}, "
          f"store {'PostgreSQL' if database else 'SQLite'}")

    raw = Counter(broker.port, f"{topics.PREFIX}/+/+")
    began, procs = _burst(broker.port, n, m, args.publishers)
    for p in procs:
        p.join()
    _wait(lambda: raw.count >= m, 60)
    raw.stop()
    raw_rate = raw.count / (raw.last - began)
    print(f"baseline  bare paho subscriber: {raw.count}/{m} received, {raw_rate:,.0f} msg/s")

    controller = Controller(ControllerConfig(db=root / "ctl" / "controller.db", broker=broker.url, database=database,
                                             listen="127.0.0.1:0", heartbeat_interval=30, tick_interval=0.5)).start()
    try:
        controller.wait_connected(10)
        _wait(lambda: controller.ingest.wait_idle(0) and _written(controller) > 0, 30)  # retained from baseline
        before = _written(controller) + _dropped(controller)
        began, procs = _burst(broker.port, n, m, args.publishers)
        for p in procs:
            p.join()
        _wait(lambda: _written(controller) + _dropped(controller) - before >= m, 120)
        elapsed = time.perf_counter() - began
        written = _written(controller) + _dropped(controller) - before
        rate = written / elapsed
        print(f"ingest    controller: {written:.0f}/{m} written ({m - written:.0f} lost, {_dropped(controller):.0f} "
              f"dropped) in {elapsed:.2f} s = {rate:,.0f} msg/s ({rate / raw_rate:.2f} x baseline; goal >= 5,000)")

        store = controller.store
        release = store.add_release(Release(0, "hello", IMAGE, IMAGE, "bench", (ReleasePlatform(
            "linux/arm64", "sha256:" + "c" * 64, 1000),)))
        known = len(store.device_ids())
        desired = Counter(broker.port, f"{topics.PREFIX}/+/desired")
        began = time.perf_counter()
        controller.engine.start_rollout("hello", release.id, "all", canary=0, batch="100%")
        _wait(lambda: desired.count >= known, 120)
        elapsed = desired.last - began
        desired.stop()
        print(f"fan-out   rollout to {known} devices in one batch: {desired.count} desired states at a subscriber "
              f"in {elapsed:.2f} s = {desired.count / elapsed * 60:,.0f} devices/min (goal >= 10,000)")
        return Throughput(raw_rate, rate, m - written, known, desired.count / elapsed * 60)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
