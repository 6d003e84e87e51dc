"""The demo (`bash scripts/dev.sh demo`, `python -m sandbox.demo`): the whole story on one machine, with real parts.

A private Mosquitto, registry and Docker Engine (unless existing ones are given); tiny scratch images
packed from static binaries for amd64, arm64, arm/v7 and arm/v6; the controller; three real agents
acting as an arm64, an arm/v7 and an arm/v6 board (their containers run under qemu). Then three
rollouts: v1 to everyone, v2 canary-first in batches - v1 holds its update lock for its first
LOCK_S seconds (one open() in its static binary), so v2 is downloaded but waits for it, then lands -
(then an update forged by another broker client, which the board refuses: it is not signed by the
controller), and a broken v3 whose canary fails its health check, is rolled back on the board, and
aborts the rollout by itself. Live views while it runs, a summary at the end, everything cleaned up.
The exit status says whether the story came out right.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import structlog
from rich.console import Console, Group
from rich.table import Table

from sandbox import binaries
from sandbox.agents import AgentProcess
from sandbox.images import publish_demo
from sandbox.peer import FleetPeer
from sandbox.stack import Stack
from tinyfleet.agent import logs
from tinyfleet.controller.cli.common import console
from tinyfleet.controller.cli.live import watch
from tinyfleet.controller.cli.views import devices_table, fleet_line, rollout_line, rollout_view
from tinyfleet.controller.client import ApiClient
from tinyfleet.controller.service import Controller, ControllerConfig
from tinyfleet.protocol import AppSpec, DesiredState

log = structlog.get_logger("sandbox.demo")
APP = "hello"
BOARDS = (("pi4-arm64", "linux/arm64"), ("pi3-armv7", "linux/arm/v7"), ("pizero-armv6", "linux/arm/v6"))
HEARTBEAT_S = 1.0
ROLLOUT_TIMEOUT_S = 420.0
LOCK_S = 40  # v1 holds /run/tinyfleet/update.lock this long after it starts (demoapp.c TINYHELLO_LOCK_FOR)


@dataclass(frozen=True)
class Version:
    tag: str
    note: str
    broken: bool = False  # its health check fails


VERSIONS = (
    Version("1.0", f"first release, to every board at once; it holds its update lock for its first {LOCK_S} s"),
    Version("2.0", "canary first, then one board per batch; downloaded at once, switched when v1's lock goes"),
    Version("3.0", "broken: fails its health check; the canary rolls back and the rollout aborts itself", broken=True),
)


@dataclass
class Options:
    broker: str | None = None
    registry: str | None = None
    docker_host: str | None = None
    keep: bool = False
    prefix: str = "demo"


@dataclass
class Outcome:
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    forgery_refused: bool = False
    locked: dict[str, str] = field(default_factory=dict)  # device -> why, as the rollout showed it held by a lock


class Demo:
    def __init__(self, options: Options, out: Console) -> None:
        self.options = options
        self.out = out
        self.outcome = Outcome()
        self.agents: list[AgentProcess] = []

    def say(self, text: str) -> None:
        self.out.print(f"[bold cyan]>>[/bold cyan] {text}")

    # -- the story ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        started = time.monotonic()
        logs.configure("warning")  # the controller runs in this process; its logs would drown the views
        self.say("starting a private broker, registry and Docker Engine (qemu for ARM)"
                 if not (self.options.broker and self.options.registry and self.options.docker_host)
                 else "using the given broker, registry and Docker Engine")
        with Stack(broker_url=self.options.broker, registry_host=self.options.registry,
                   docker_host=self.options.docker_host, keep=self.options.keep) as stack:
            refs = self.pack_images(stack)
            with Controller(ControllerConfig(db=stack.root / "controller.db", broker=stack.broker_url,  # type: ignore[arg-type]
                                             listen="127.0.0.1:0", heartbeat_interval=HEARTBEAT_S,
                                             tick_interval=0.2)) as controller:
                if not controller.wait_connected(30):
                    raise RuntimeError("the controller did not connect to the broker")
                api = ApiClient(controller.url, controller.token)
                self.say(f"controller API on {controller.url}")
                try:
                    self.start_boards(stack, controller.public_key)
                    self.wait_for_fleet(api)
                    releases = [api.create_release(APP, ref, max_bytes=1024 * 1024,
                                                   health={"settle_seconds": 2, "deadline_seconds": 150},
                                                   env={"TINYHELLO_LOCK_FOR": str(LOCK_S)} if i == 0 else None)
                                for i, ref in enumerate(refs)]
                    self.say("releases created (each checked against the fleet's platforms and a 1 MiB budget "
                             "before any board is touched)")
                    self.rollout(api, releases[0], VERSIONS[0], canary=0, batch="100%")
                    self.rollout(api, releases[1], VERSIONS[1], canary=1, batch=1)
                    self.forged_update(stack, api, releases[2]["image"])
                    self.rollout(api, releases[2], VERSIONS[2], canary=1, batch=1, max_failures=0)
                    self.outcome.devices = api.devices()
                    self.check(releases)
                finally:
                    self.stop_boards(stack)
        self.outcome.seconds = time.monotonic() - started
        self.summary()
        return self.outcome

    def pack_images(self, stack: Stack) -> list[str]:
        self.say("building the demo app as static binaries for amd64, arm64, arm/v7 and arm/v6")
        built = binaries.build(stack.root / "bin")
        refs = []
        for version in VERSIONS:
            image = publish_demo(stack.registry_host, f"{self.options.prefix}/{APP}", version.tag, built,  # type: ignore[arg-type]
                                 version=version.tag.split(".")[0], env=(("TINYHELLO_INTERVAL", "5"),),
                                 broken=version.broken)
            self.outcome.sizes[version.tag] = {str(p): size for p, size in image.sizes.items()}
            refs.append(image.tag_ref)
            log.info("pushed", ref=image.tag_ref, digest=image.digest)
        table = Table(title="scratch images (compressed bytes per platform, from the manifests)", title_justify="left")
        table.add_column("image")
        platforms = sorted(self.outcome.sizes[VERSIONS[0].tag])
        for p in platforms:
            table.add_column(p, justify="right")
        for version in VERSIONS:
            table.add_row(f"{APP}:{version.tag}", *(f"{self.outcome.sizes[version.tag][p]:,}" for p in platforms))
        self.out.print(table)
        return refs

    def start_boards(self, stack: Stack, controller_key: str) -> None:
        for name, platform in BOARDS:
            agent = AgentProcess(f"{self.options.prefix}-{name}", platform, stack.broker_url, stack.docker_host,  # type: ignore[arg-type]
                                 stack.root / "agents", heartbeat_seconds=HEARTBEAT_S, settle_seconds=2,
                                 deadline_seconds=150, controller_key=controller_key)
            self.agents.append(agent.start())
        self.say("three boards started: " + ", ".join(f"{a.device_id} ({a.platform})" for a in self.agents))

    def wait_for_fleet(self, api: ApiClient) -> None:
        ids = {a.device_id for a in self.agents}

        def fetch() -> list[dict[str, Any]]:
            return [d for d in api.devices() if d["id"] in ids]

        fleet = watch(fetch, devices_table, line=fleet_line, interval=0.5,
                      done=lambda ds: sum(d["online"] for d in ds) == len(ids))
        if sum(d["online"] for d in fleet) != len(ids):
            raise RuntimeError("not every board came online")

    def rollout(self, api: ApiClient, release: dict[str, Any], version: Version, **options: Any) -> None:
        self.say(f"rollout of {APP}:{version.tag} - {version.note}")
        r = api.start_rollout(APP, release["id"], "all", health_timeout=240, offline_deadline=240, **options)
        ids = {a.device_id for a in self.agents}
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S

        def fetch() -> dict[str, Any]:
            view = {"rollout": api.rollout(r["id"]), "devices": [d for d in api.devices() if d["id"] in ids]}
            for t in view["rollout"].get("targets") or []:
                if (t["reason"] or "").startswith("locked by ") and version is VERSIONS[1]:
                    self.outcome.locked.setdefault(t["device"], t["reason"])
            return view

        def done(view: dict[str, Any]) -> bool:
            return not view["rollout"]["open"] or time.monotonic() > deadline

        final = watch(fetch, lambda v: Group(rollout_view(v["rollout"]), devices_table(v["devices"])),
                      line=lambda v: rollout_line(v["rollout"]), interval=0.5, done=done)
        rollout = final["rollout"]
        rollout["version"] = version.tag
        rollout["seconds"] = round(time.time() - rollout["created_at"], 1)
        self.outcome.rollouts.append(rollout)
        self.say(f"rollout {rollout['id']} {rollout['state']} after {rollout['seconds']} s"
                 + (f": {rollout['reason']}" if rollout.get("reason") else ""))
        if version is VERSIONS[1] and self.outcome.locked:
            device, why = next(iter(self.outcome.locked.items()))
            self.say(f"{APP}:2.0 waited on {len(self.outcome.locked)} board(s) while 1.0 held its update lock "
                     f"({device}: {why}), then landed")

    def forged_update(self, stack: Stack, api: ApiClient, image: str) -> None:
        """Anyone who can publish to the broker sends a board an update signed with their own key."""
        board = self.agents[0].device_id
        before = api.device(board)
        attacker = FleetPeer(stack.broker_url)  # type: ignore[arg-type]  # a key of its own, not the controller's
        try:
            forged = DesiredState(board, before["reported_generation"] + 1000, (AppSpec(APP, image),))
            attacker.publish(forged)
            deadline = time.monotonic() + 60
            device = before
            while "signature refused" not in (device.get("error") or "") and time.monotonic() < deadline:
                time.sleep(0.3)
                device = api.device(board)
        finally:
            attacker.close()
        app = next((a for a in device["apps"] if a["name"] == APP), {})
        kept = app.get("current_image") == next(a for a in before["apps"] if a["name"] == APP)["current_image"]
        if "signature refused" not in (device.get("error") or "") or not kept:
            self.outcome.problems.append(f"a forged update to {board} was not refused: {device.get('error')}")
            return
        self.outcome.forgery_refused = True
        self.say(f"a forged update was refused: {board} kept running {APP}:2.0 and reported "
                 f"\"{device['error']}\"")

    def stop_boards(self, stack: Stack) -> None:
        for agent in self.agents:
            agent.stop()
        with contextlib.suppress(OSError):  # leave no retained trace on a borrowed broker
            peer = FleetPeer(stack.broker_url)  # type: ignore[arg-type]
            for agent in self.agents:
                peer.clear(agent.device_id)
            peer.close()
        with contextlib.suppress(docker.errors.DockerException):
            client = docker.DockerClient(base_url=stack.docker_host)
            for agent in self.agents:  # only this demo's containers, also on a borrowed engine
                for c in client.containers.list(all=True, filters={"label": f"io.tinyfleet.device={agent.device_id}"}):
                    c.remove(force=True)
            client.close()

    # -- did it come out right? -----------------------------------------------------------------

    def check(self, releases: list[dict[str, Any]]) -> None:
        states = [r["state"] for r in self.outcome.rollouts]
        if states != ["completed", "completed", "aborted"]:
            self.outcome.problems.append(f"rollouts ended {states}, expected completed, completed, aborted")
        if not self.outcome.locked:
            self.outcome.problems.append("no board was seen holding 2.0 back for 1.0's update lock")
        v2 = releases[1]["image"]
        for device in self.outcome.devices:
            app = next((a for a in device["apps"] if a["name"] == APP), None)
            if app is None or app["current_image"] != v2 or app["phase"] not in ("running", "rolled_back"):
                self.outcome.problems.append(f"{device['id']} is not back on 2.0: {app}")

    def summary(self) -> None:
        table = Table(title="rollouts", title_justify="left")
        for col in ("release", "state", "converged", "failed", "reverted", "seconds", "why"):
            table.add_column(col)
        for r in self.outcome.rollouts:
            c = r["counts"]
            table.add_row(f"{APP}:{r['version']}", r["state"], f"{c['converged']}/{r['total']}", str(r["failures"]),
                          str(c["reverted"]), str(r["seconds"]), r.get("reason") or "")
        self.out.print(table)
        if self.outcome.devices:
            self.out.print(devices_table(self.outcome.devices))
            rss = [d["health"].get("agent_rss_bytes") for d in self.outcome.devices if d.get("health")]
            if rss and all(rss):
                self.say(f"agent memory on the boards: {', '.join(f'{x / 2**20:.1f} MiB' for x in rss)}")
        verdict = "[green]the story came out right[/green]" if not self.outcome.problems else "[red]problems:[/red] " \
            + "; ".join(self.outcome.problems)
        self.say(f"{verdict} ({self.outcome.seconds:.0f} s); everything started for the demo has been stopped")


def run(options: Options) -> int:
    out = console()
    try:
        outcome = Demo(options, out).run()
    except Exception as exc:  # noqa: BLE001 - the demo reports any failure in one line and exits non-zero
        out.print(f"[red]demo failed:[/red] {type(exc).__name__}: {exc}")
        return 1
    return 0 if not outcome.problems else 1



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.demo", description="the whole story on this machine: images, controller, three "
        "emulated boards, staged rollouts and an automatic rollback (a source checkout's dev tool, not installed)")
    parser.add_argument("--broker", metavar="URL", help="use this broker instead of a private one")
    parser.add_argument("--registry", metavar="HOST:PORT", help="use this registry instead of a private one")
    parser.add_argument("--docker-host", metavar="URL", help="use this Docker Engine instead of a private one")
    parser.add_argument("--keep", action="store_true", help="keep the demo's directory (logs, database) afterwards")
    args = parser.parse_args(argv)
    return run(Options(broker=args.broker, registry=args.registry, docker_host=args.docker_host, keep=args.keep))


if __name__ == "__main__":
    sys.exit(main())
