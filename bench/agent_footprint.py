"""Footprint of a connected agent with one app running, installed alone as on a board (`pip install .`)
and started with the environment its systemd unit sets: idle RSS and PSS after its first pull (goal
RSS <= 30 MiB on x86-64), the same after 100 updates, growth over a 60-minute idle soak (goal <= 5 %)
and idle CPU (goal <= 0.5 % of one core), each beside a bare interpreter and the agent's libraries
imported alone, measured in the same run. Also where the memory is: anonymous against file-backed,
by kind of mapping, and what each group of imports adds.

`bench agent-footprint --quick` (CI): 10 updates and a 3-minute soak. `--arm64 ROOT`: the same with
the agent on the arm64 Python of an extracted arm64 root file system under qemu-user (bench/qemu_user.py;
its memory figures are the guest's own pages, its CPU figures are emulated and mean little)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.agentvenv import agent_executable
from bench.images import publish
from bench.import_cost import import_costs
from bench.proc import cpu_seconds
from bench.qemu_user import AGENT, QEMU, Arm64
from bench.smaps import Memory, breakdown
from sandbox.agents import AgentProcess
from sandbox.peer import FleetPeer
from sandbox.stack import Stack
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, Phase

MIB = 1024 * 1024
UNIT = Path(__file__).resolve().parent.parent / "systemd" / "tinyfleet-agent.service"
LIBS = ("from tinyfleet.agent import lean; lean.trim_imports()\nimport paho.mqtt.client, structlog, tenacity\n"
        "with lean.docker_import('unix:///var/run/docker.sock'): import docker")


def unit_environment() -> dict[str, str]:
    """The Environment= assignments of the shipped unit (the agent runs with them on a board)."""
    env: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for item in line.removeprefix("Environment=").split():
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _idle_process(python: str, code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([python, "-c", code + "\nimport time\ntime.sleep(86400)"], cwd="/", env=env)


def _row(label: str, m: Memory, bare: Memory, libs: Memory) -> str:
    return (f"{label:<34} RSS {m.rss / MIB:5.1f} MiB  PSS {m.pss / MIB:5.1f} MiB  (anon {m.anonymous / MIB:4.1f}, "
            f"file {m.file_backed / MIB:4.1f}; {m.threads} threads)   bare python RSS {bare.rss / MIB:4.1f} "
            f"PSS {bare.pss / MIB:4.1f}, python + 4 libs RSS {libs.rss / MIB:4.1f} PSS {libs.pss / MIB:4.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench agent-footprint")
    parser.add_argument("--quick", action="store_true", help="10 updates and a 3-minute soak (CI)")
    parser.add_argument("--updates", type=int, help="updates before the soak (default 100)")
    parser.add_argument("--soak-minutes", type=float, help="idle soak length (default 60)")
    parser.add_argument("--arm64", type=Path, metavar="ROOT", help="run the agent on ROOT's arm64 python3 (qemu-user)")
    args = parser.parse_args(sys.argv[1:])
    updates = args.updates if args.updates is not None else (10 if args.quick else 100)
    soak_s = 60 * (args.soak_minutes if args.soak_minutes is not None else (3 if args.quick else 60))
    env = {"PATH": "/usr/bin:/bin", **unit_environment()}
    memory: Callable[[str, int], Memory] = lambda _name, pid: Memory.of(pid)  # noqa: E731
    if args.arm64:
        arm = Arm64(args.arm64.resolve(), Path("/tmp") / "tinyfleet-bench-arm64")
        arm.install()
        exe = arm.script("agent", AGENT)
        interpreter = [QEMU, "-L", str(arm.root), str(arm.python)]
        print(f"arm64: {arm.python} under {QEMU}, agent installed in {arm.site}; "
              f"unit environment: {unit_environment()}")
        idle = arm.idle
        memory = arm.memory
        costs = import_costs(interpreter, {**env, "PYTHONPATH": str(arm.site)})
    else:
        exe = agent_executable()
        python = str(exe.parent / "python")
        print(f"agent-only install {exe.parent.parent}; unit environment: {unit_environment()}")
        idle = lambda _name, code, env: _idle_process(python, code, env)  # noqa: E731
        costs = import_costs([python])
    print("imports, step by step (RSS after each step, modules loaded):")
    prev = 0
    for label, rss, modules in costs:
        print(f"  {label:<52} {rss / MIB:5.1f} MiB  (+{(rss - prev) / MIB:4.1f})  {modules:4d} modules")
        prev = rss
    with Stack() as stack:
        one, _ = publish(stack.registry_host, stack.root, "bench/footprint", "1")  # type: ignore[arg-type]
        two, _ = publish(stack.registry_host, stack.root, "bench/footprint", "2")  # type: ignore[arg-type]
        peer = FleetPeer(stack.broker_url)  # type: ignore[arg-type]
        agent = AgentProcess("bench-footprint", "linux/amd64", stack.broker_url, stack.docker_host,  # type: ignore[arg-type]
                             stack.root / "agents", heartbeat_seconds=30, settle_seconds=0, executable=exe,
                             controller_key=str(peer.signer.public), extra_env=unit_environment()).start()
        bare = idle("bare", "pass", env)
        libs = idle("libs", LIBS, env)

        def now() -> tuple[Memory, Memory, Memory]:
            return memory("agent", pid), memory("bare", bare.pid), memory("libs", libs.pid)

        try:
            def apply(generation: int, image: str) -> None:
                peer.publish(DesiredState(agent.device_id, generation,
                                          (AppSpec("hello", image, health=HealthPolicy(0, 60)),)))
                peer.wait(agent.device_id, lambda r: r.generation == generation and bool(r.apps)
                          and r.apps[0].phase == Phase.RUNNING and r.apps[0].current_image == image, 120)

            apply(1, one)
            time.sleep(10)
            pid = agent.proc.proc.pid  # type: ignore[union-attr]
            first = now()
            where = breakdown(pid) if not args.arm64 else {}
            started = time.monotonic()
            for n in range(2, updates + 2):
                apply(n, two if n % 2 == 0 else one)
            per_update = (time.monotonic() - started) / max(1, updates)
            time.sleep(10)
            after = now()
            print(f"soak: {soak_s / 60:.0f} min idle (heartbeat 30 s, one app running), RSS every minute ...",
                  flush=True)
            samples = [after[0].rss]
            cpu0, bare_cpu0, t0 = cpu_seconds(pid), cpu_seconds(bare.pid), time.monotonic()
            while time.monotonic() - t0 < soak_s:
                time.sleep(min(60.0, soak_s - (time.monotonic() - t0)))
                samples.append(memory("agent", pid).rss)
            elapsed = time.monotonic() - t0
            cpu = 100 * (cpu_seconds(pid) - cpu0) / elapsed
            bare_cpu = 100 * (cpu_seconds(bare.pid) - bare_cpu0) / elapsed
            end = now()
        finally:
            bare.kill(), libs.kill()
            peer.close()
            agent.stop()
    rss = first[0].rss
    print(f"agent idle RSS after its first pull {rss / MIB:5.1f} MiB   (goal <= 30 MiB)  "
          f"{'OK' if rss <= 30 * MIB else 'OVER'}")
    print(_row("after the first pull, idle", *first))
    print(_row(f"after {updates} updates, idle", *after) + f"   ({per_update:.2f} s per update)")
    print(_row(f"after the {soak_s / 60:.0f}-minute soak", *end))
    growth = (samples[-1] - samples[0]) / samples[0] * 100
    print(f"soak growth {growth:+.1f} % ({samples[0] / MIB:.1f} -> {samples[-1] / MIB:.1f} MiB, max "
          f"{max(samples) / MIB:.1f}; goal <= 5 %)  {'OK' if growth <= 5 else 'OVER'};  RSS by minute (MiB): "
          + " ".join(f"{s / MIB:.1f}" for s in samples))
    print(f"agent idle CPU over the soak {cpu:6.3f} % of one core (goal <= 0.5 %)  {'OK' if cpu <= 0.5 else 'OVER'};"
          f"  bare python {bare_cpu:.3f} %")
    print("where the agent's resident memory is (after the first pull):")
    for kind, size in where.items():
        if size >= 64 * 1024:
            print(f"  {kind:<56} {size / MIB:5.1f} MiB")


if __name__ == "__main__":
    main()
