"""Apply time for a tiny image: the agent (desired published -> new container started, and -> reported
running) against raw `docker pull` + `docker run -d` of an image of the same size, alternating, in
the same run. Goal: agent <= 1.15x raw."""

from __future__ import annotations

import os
import statistics
import subprocess
import time

import docker

from bench.images import publish
from sandbox.agents import AgentProcess
from sandbox.peer import FleetPeer
from sandbox.stack import Stack
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, Phase

ROUNDS = 7
AMD64 = Platform.parse("linux/amd64")


def raw_apply(docker_host: str, ref: str, name: str) -> float:
    env = {**os.environ, "DOCKER_HOST": docker_host}
    start = time.monotonic()
    subprocess.run(["docker", "pull", "-q", ref], check=True, env=env, capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, ref], check=True, env=env, capture_output=True)
    elapsed = time.monotonic() - start
    subprocess.run(["docker", "rm", "-f", name], env=env, capture_output=True)
    return elapsed


def main() -> None:
    with Stack() as stack:
        client = docker.DockerClient(base_url=stack.docker_host)
        peer = FleetPeer(stack.broker_url)  # type: ignore[arg-type]
        agent = AgentProcess("bench-apply", "linux/amd64", stack.broker_url, stack.docker_host,  # type: ignore[arg-type]
                             stack.root / "agents", heartbeat_seconds=30, settle_seconds=0,
                             controller_key=str(peer.signer.public)).start()
        raw, started, reported = [], [], []
        try:
            for i in range(1, ROUNDS + 1):
                # Two fresh images of the same size per round, so both sides really pull.
                _, raw_refs = publish(stack.registry_host, stack.root, "bench/raw", f"r{i:03d}")  # type: ignore[arg-type]
                image, _ = publish(stack.registry_host, stack.root, "bench/agent", f"a{i:03d}")  # type: ignore[arg-type]
                raw.append(raw_apply(stack.docker_host, raw_refs[AMD64], f"raw{i}"))  # type: ignore[arg-type]
                t0 = time.monotonic()
                peer.publish(DesiredState(agent.device_id, i, (AppSpec("hello", image, health=HealthPolicy(0, 60)),)))
                while True:
                    running = client.containers.list(filters={"label": [f"io.tinyfleet.image={image}"],
                                                              "status": "running"})
                    if running:
                        started.append(time.monotonic() - t0)
                        break
                    time.sleep(0.01)
                peer.wait(agent.device_id, lambda r, img=image: bool(r.apps) and r.apps[0].phase == Phase.RUNNING
                          and r.apps[0].current_image == img, 120)
                reported.append(time.monotonic() - t0)
        finally:
            peer.close()
            agent.stop()
            client.close()
    r, s, p = statistics.median(raw), statistics.median(started), statistics.median(reported)
    print(f"rounds: {ROUNDS}, image ~{300} KB compressed (static amd64 binary in a scratch image)")
    print(f"raw docker pull + run          median {r * 1000:7.1f} ms")
    print(f"agent: desired -> started      median {s * 1000:7.1f} ms   ratio {s / r:.2f}x  (goal <= 1.15x)  "
          f"{'OK' if s / r <= 1.15 else 'OVER'}")
    print(f"agent: desired -> reported     median {p * 1000:7.1f} ms   ratio {p / r:.2f}x  (includes the MQTT report)")


if __name__ == "__main__":
    main()
