"""Does the agent stay flat? The agent's own reconcile code (planner, executor, state file, reports)
driven through many updates against the shipped FakeEngine, in this process: memory after a warm-up
(the baseline) against memory after many more updates. Goal: no growth (balena-supervisor grew to
321 MB over 100 days, #2193)."""

from __future__ import annotations

import gc
import os
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

from bench.proc import rss_bytes
from tinyfleet.agent import logs
from tinyfleet.agent.reconciler import Reconciler
from tinyfleet.agent.state import StateStore
from tinyfleet.agent.testing import FakeClock, FakeEngine, FakeImage, FakeRegistry
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy

WARMUP, UPDATES, WINDOWS = 300, 6000, 12
V7 = Platform.parse("linux/arm/v7")


def main() -> None:
    logs.configure("warning")
    clock = FakeClock()
    registry = FakeRegistry()
    engine = FakeEngine(registry, clock)
    images = [f"127.0.0.1:5000/soak/app@sha256:{i:064x}" for i in range(1, 9)]
    for i, image in enumerate(images):
        registry.publish(image, {"linux/arm/v7": FakeImage(V7, behaviour="unhealthy" if i == 7 else "ok")})
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp))
        reconciler = Reconciler(engine, registry, store, "soak-1", V7, clock=clock)

        def update(n: int) -> None:
            apps = (AppSpec("web", images[n % len(images)], health=HealthPolicy(1, 20)),
                    AppSpec("side", images[(n // 3) % len(images)], health=HealthPolicy(1, 20)))
            store.update(lambda st: replace(st, accepted_generation=n, desired=DesiredState("soak-1", n, apps)))
            engine.pulls.clear()  # the fake's own bookkeeping, not the agent's
            for _ in range(100):
                outcome = reconciler.reconcile()
                reconciler.report(store.current, outcome)
                if outcome.wake_at is None:
                    return
                clock.now = max(clock.now + 0.5, outcome.wake_at)

        pid = os.getpid()
        for n in range(1, WARMUP + 1):
            update(n)
        gc.collect()
        tracemalloc.start()
        marks = [(rss_bytes(pid), tracemalloc.get_traced_memory()[0])]
        start = time.perf_counter()
        n = WARMUP
        for _ in range(WINDOWS):
            for _ in range(UPDATES // WINDOWS):
                n += 1
                update(n)
            gc.collect()
            marks.append((rss_bytes(pid), tracemalloc.get_traced_memory()[0]))
        elapsed = time.perf_counter() - start
        tracemalloc.stop()
    kib = 1024
    per_window = UPDATES // WINDOWS
    print(f"{UPDATES} updates of 2 apps after {WARMUP} warm-up updates ({elapsed / UPDATES * 1000:.2f} ms per update; "
          "every 8th image fails its health check and is rolled back)")
    base, end = marks[0][0] / kib / kib, marks[-1][0] / kib / kib
    print(f"RSS after warm-up {base:.1f} MiB (baseline), at the end {end:.1f} MiB: ratio {end / base:.3f}x")
    growth = [(b[1] - a[1]) / per_window for a, b in zip(marks, marks[1:], strict=False)]
    print("Python heap growth per update, window by window (" + f"{per_window} updates each): "
          + ", ".join(f"{g:.0f} B" for g in growth))
    late = sorted(growth[len(growth) // 2:])
    typical = late[len(late) // 2]
    verdict = "OK (flat)" if typical < 64 else "GROWING"
    print(f"second half of the run: typically {typical:.0f} bytes per update (median window), at most {late[-1]:.0f}  "
          f"{verdict}  (a one-off table resize shows up in one window, a leak in every window)")


if __name__ == "__main__":
    main()
