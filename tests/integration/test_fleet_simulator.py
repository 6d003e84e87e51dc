"""The fleet simulator (bench.fleet_sim) at a small scale, on the session's real broker and registry:
simulated agents - the real agent code on a fake engine and registry - answer the raw round trip, all
converge on a rollout driven by the real controller, and leave nothing behind on the shared broker."""

from __future__ import annotations

import time
from pathlib import Path

from bench.fleet_sim import simulate
from sandbox.peer import FleetPeer

DEVICES = 50


def test_fifty_simulated_agents_answer_and_all_converge_on_one_rollout(mosquitto, registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim = simulate(mosquitto.url, registry.host, tmp_path, devices=DEVICES, processes=2, rounds=1,
                   platforms=("linux/arm64",), timeout=60, progress=lambda line: None)

    (raw,) = sim.raw
    assert raw.trip.missing == 0 and len(raw.trip.from_start) == DEVICES
    (rollout,) = sim.rollouts
    assert rollout.rollout["state"] == "completed"
    assert rollout.rollout["counts"]["converged"] == DEVICES
    assert {t["device"] for t in rollout.rollout["targets"]} == {f"sim-{i:05d}" for i in range(DEVICES)}
    assert len(rollout.latencies) == DEVICES and all(0 < seconds < 60 for seconds in rollout.latencies)
    # the wiretap saw every device's desired state and running report go by, in that order
    assert all(len(times) == DEVICES for times in rollout.stages.values())
    assert all(seconds > 0 for seconds in rollout.stages["agent: desired -> running reported"])

    peer = FleetPeer(mosquitto.url)  # a newcomer would get any retained message the simulation left
    try:
        assert peer.connected.wait(5)
        time.sleep(0.5)
        left = sorted(d for d in {**peer.status, **peer.reported} if d.startswith("sim-"))
        assert left == []
    finally:
        peer.close()
