"""Idle footprint of a connected agent with one app running: RSS (goal <= 30 MiB on x86-64) and CPU
(goal <= 0.5 % of one core), beside a bare Python interpreter and a process that only imports the
agent's four libraries, measured in the same run."""

from __future__ import annotations

import os
import subprocess
import time

from bench.agentvenv import agent_executable
from bench.images import publish
from bench.proc import cpu_percent, rss_bytes
from controller.sandbox.agents import AgentProcess
from controller.sandbox.peer import FleetPeer
from controller.sandbox.stack import Stack
from protocol import AppSpec, DesiredState, HealthPolicy, Phase

MIB = 1024 * 1024
IDLE_SECONDS = int(os.environ.get("BENCH_IDLE_SECONDS", "60"))


def _baseline(python: str, code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([python, "-c", code + "\nimport time\ntime.sleep(3600)"])


def main() -> None:
    exe = agent_executable()
    python = str(exe.parent / "python")
    with Stack() as stack:
        image, _ = publish(stack.registry_host, stack.root, "bench/footprint", "1")  # type: ignore[arg-type]
        peer = FleetPeer(stack.broker_url)  # type: ignore[arg-type]
        agent = AgentProcess("bench-footprint", "linux/amd64", stack.broker_url, stack.docker_host,  # type: ignore[arg-type]
                             stack.root / "agents", heartbeat_seconds=30, settle_seconds=2,
                             executable=exe,
                             controller_key=str(peer.signer.public)).start()
        bare = _baseline(python, "pass")
        libs = _baseline(python, "import paho.mqtt.client, docker, structlog, tenacity")
        try:
            peer.publish(DesiredState(agent.device_id, 1, (AppSpec("hello", image, health=HealthPolicy(2, 60)),)))
            peer.wait(agent.device_id, lambda r: bool(r.apps) and r.apps[0].phase == Phase.RUNNING, 120)
            time.sleep(5)
            pid = agent.proc.proc.pid  # type: ignore[union-attr]
            print(f"measuring idle CPU for {IDLE_SECONDS}s (heartbeat 30 s, one app running) ...", flush=True)
            cpu = cpu_percent(pid, IDLE_SECONDS)
            agent_rss, bare_rss, libs_rss = rss_bytes(pid), rss_bytes(bare.pid), rss_bytes(libs.pid)
        finally:
            bare.kill(), libs.kill()
            peer.close()
            agent.stop()
    print(f"agent idle RSS          {agent_rss / MIB:6.1f} MiB   (goal <= 30 MiB)  "
          f"{'OK' if agent_rss <= 30 * MIB else 'OVER'}")
    print(f"  bare python RSS       {bare_rss / MIB:6.1f} MiB   agent/bare = {agent_rss / bare_rss:.2f}x")
    print(f"  python + 4 libs RSS   {libs_rss / MIB:6.1f} MiB   agent/libs = {agent_rss / libs_rss:.2f}x")
    print("  (RSS of the agent installed alone, as on a board: `pip install .` without the operator extras)")
    print(f"agent idle CPU          {cpu:6.3f} %     (goal <= 0.5 % of one core)  {'OK' if cpu <= 0.5 else 'OVER'}")


if __name__ == "__main__":
    main()
