"""One process of the fleet simulator: a few hundred simulated devices, driven by commands from the
parent over a pipe (see bench.simfleet).

A simulated device is the real `agent.service.Agent` - its MQTT adapter, intake, planner, executor,
reports and health thread - with `FakeEngine` and `FakeRegistry` (agent/testing.py) in place of Docker
and the registry, on a wall clock, with its own state directory. For the raw round-trip baseline the
same devices run only the agent's MQTT adapter (same client id, session and paho settings) wired to a
trivial echo: desired payload in, the same bytes out on the reported topic, no agent logic.

paho's network loop uses select(), which fails on file descriptors above 1023; every client holds
three (its socket and a wake-up socket pair), so one process hosts at most MAX_DEVICES of them.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.simloop import Loop
from tinyfleet import protocol
from tinyfleet.agent import __version__, logs
from tinyfleet.agent.config import AgentConfig
from tinyfleet.agent.mqtt import MqttLink
from tinyfleet.agent.service import Agent
from tinyfleet.agent.testing import FakeEngine, FakeImage, FakeRegistry, WallClock
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, Status, topics
from tinyfleet.protocol.broker import BrokerAddress
from tinyfleet.protocol.topics import Channel

MAX_DEVICES = 300  # x 3 descriptors, under select()'s 1024 with room for pipes and state files
# Hundreds of threads in one interpreter: at the default 5 ms every thread waiting for the GIL wakes 200
# times a second: a rollout (all agents busy at once) cost 2-2.5x the CPU per agent at 250 agents per
# process, and four such processes on two cores missed their keepalives. A board runs one agent per
# interpreter; agents give the GIL up at every syscall anyway, so a long forced-switch interval costs
# them nothing.
GIL_SWITCH_S = 0.05
# On a fleet every board brings its own CPU; here the simulated boards and the controller under test share
# two cores, and 40 simulator processes beside one controller took most of them from it while it was still
# sending a batch (at 10,000 devices: simulators 2.9 ms of CPU per device per rollout, the controller 1.0).
# The simulators yield to it instead, and take what it leaves; the raw round trip is timed the same way.
SIMULATOR_NICE = 10


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children such as Mosquitto inherit it). Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class CountingEngine(FakeEngine):
    """The fake engine, counting the containers each image got: the device's own count of its updates
    (a device updated twice to one release would create two)."""

    def __init__(self, registry: FakeRegistry, clock: WallClock) -> None:
        super().__init__(registry, clock)
        self.created: dict[str, int] = {}

    def create(self, name: str, spec: AppSpec, pull_ref: str, labels: dict[str, str],
               binds: dict[str, str] | None = None) -> str:
        before = len(self.containers)
        cid = super().create(name, spec, pull_ref, labels, binds)
        if len(self.containers) > before:  # not the earlier create handed back again
            self.created[spec.image] = self.created.get(spec.image, 0) + 1
        return cid


class SimHost:
    def __init__(self, broker: str, devices: list[tuple[str, str]], state_root: Path, heartbeat: float,
                 threads: bool = False) -> None:
        if threads and len(devices) > MAX_DEVICES:
            raise ValueError(f"{len(devices)} devices in one process; at most {MAX_DEVICES} (select() limit)")
        self.broker = broker
        self.devices = devices
        self.state_root = state_root
        self.heartbeat = heartbeat
        self.registry = FakeRegistry()  # shared: read-only while agents run (images are added between rollouts)
        self.clock = WallClock()
        self.echoes: list[MqttLink] = []
        self.agents: list[Agent] = []
        self.threads: list[threading.Thread] = []
        # By default one network loop drives every link and agent (bench.simloop); with `threads` each agent
        # runs as on a board, with its own paho thread and housekeeping thread (measures thread overhead).
        self.loop = None if threads else Loop(heartbeat)

    # -- raw baseline -----------------------------------------------------------------------------

    def echo_start(self, timeout: float) -> int:
        address = BrokerAddress.parse(self.broker)
        links: dict[str, MqttLink] = {}

        def echo(device_id: str, payload: bytes) -> None:
            if payload:  # an empty payload is the retained copy being cleared
                links[device_id].publish_reported(payload)

        def status(device_id: str, platform: str, online: bool) -> bytes:  # what the agent says on these topics
            return protocol.encode(Status(device_id, online, round(time.time(), 3), __version__, platform))

        for device_id, platform in self.devices:
            links[device_id] = MqttLink(
                device_id, address, online_payload=functools.partial(status, device_id, platform, True),
                offline_payload=status(device_id, platform, False), on_desired=functools.partial(echo, device_id),
                on_connected=lambda: None)
        self.echoes = list(links.values())
        if self.loop is None:
            for link in self.echoes:
                link.start()
        else:
            self.loop.call(self._start_links, self.echoes)
        return self._connected([link.wait_connected for link in self.echoes], timeout)

    def _start_links(self, links: list[MqttLink]) -> None:
        for link in links:
            self.loop.attach(link)  # type: ignore[union-attr]
            link.start(own_thread=False)

    def _drain(self, stop: Callable[[], None]) -> None:
        """Stop links on the loop's thread, let it write their goodbyes, then let go of them."""
        assert self.loop is not None
        self.loop.call(stop)
        time.sleep(0.5)
        self.loop.call(self.loop.detach_all)

    def echo_stop(self) -> int:
        if self.loop is None:
            for link in self.echoes:
                link.stop()
        elif self.echoes:
            self._drain(lambda: [link.stop() for link in self.echoes])
        stopped = len(self.echoes)
        self.echoes.clear()
        return stopped

    # -- simulated agents -------------------------------------------------------------------------

    def publish_images(self, images: dict[str, list[str]]) -> int:
        """Make the fake registry serve each image (repo@index digest) for the given platforms."""
        for image, platforms in images.items():
            self.registry.publish(image, {p: FakeImage(Platform.parse(p), healthcheck=False) for p in platforms})
        return len(self.registry.images)

    def agents_start(self, timeout: float) -> int:
        for device_id, platform in self.devices:
            # Unsigned: a real board checks one signature per update on its own CPU (bench agent-verify measures
            # it); here hundreds of boards share two cores, which would turn that into a simulation artefact.
            config = AgentConfig(device_id=device_id, broker=self.broker, state_dir=self.state_root / device_id,
                                 heartbeat_seconds=self.heartbeat, settle_seconds=0.0, deadline_seconds=60.0,
                                 insecure_accept_unsigned=True)
            engine = CountingEngine(self.registry, self.clock)
            agent = Agent(config, device_id, Platform.parse(platform), engine, self.registry)
            self.agents.append(agent)
            if self.loop is None:
                thread = threading.Thread(target=agent.run, name=f"agent-{device_id}", daemon=True)
                self.threads.append(thread)
                thread.start()
        if self.loop is not None:
            self.loop.call(self._begin_agents)
        return self._connected([agent.link.wait_connected for agent in self.agents], timeout)

    def _begin_agents(self) -> None:
        assert self.loop is not None
        for agent in self.agents:
            self.loop.attach(agent.link)
            agent.begin()
            self.loop.agents.append(agent)

    def agents_stop(self) -> int:
        if self.loop is not None and self.agents:
            self._drain(lambda: [agent.end() for agent in self.agents])
        for agent in self.agents:
            agent.stop()
        for thread in self.threads:
            thread.join(timeout=15)
        alive = sum(t.is_alive() for t in self.threads)
        if alive:
            raise RuntimeError(f"{alive} simulated agents did not stop within 15 s")
        stopped = len(self.agents)
        self.agents.clear()
        self.threads.clear()
        return stopped

    def forget(self, timeout: float) -> int:
        """Leave nothing of these devices on the broker: retained messages removed, persistent sessions
        ended (a clean-session connect with each client id). For brokers shared with other tests."""
        address = BrokerAddress.parse(self.broker)
        for device_id, _ in self.devices:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tinyfleet-{device_id}", clean_session=True,
                                 protocol=paho.MQTTv311)
            client.connect(address.host, address.port)
            client.loop_start()
            try:
                infos = [client.publish(topics.topic(device_id, channel), b"", qos=1, retain=True)
                         for channel in (Channel.STATUS, Channel.REPORTED, Channel.DESIRED)]
                for info in infos:
                    info.wait_for_publish(timeout)
            finally:
                client.disconnect()
                client.loop_stop()
        return len(self.devices)

    def updates(self, image: str) -> dict[str, int]:
        """Per device, how many containers of `image` its engine created (0: never updated to it)."""
        return {agent.device_id: agent.engine.created.get(image, 0) for agent in self.agents}  # type: ignore[attr-defined]

    def usage(self) -> dict[str, float]:
        times = os.times()
        return {"cpu_s": times.user + times.system, "threads": threading.active_count()}

    @staticmethod
    def _connected(waits: list, timeout: float) -> int:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        return sum(wait(max(0.0, deadline - time.monotonic())) for wait in waits)

    def close(self) -> int:
        stopped = self.echo_stop() + self.agents_stop()
        if self.loop is not None:
            self.loop.close()
        return stopped


def serve(conn: Connection, broker: str, devices: list[tuple[str, str]], state_root: str, heartbeat: float) -> None:
    """The worker's main: run commands (method name, args) until `close`; reply ("ok", result) or
    ("error", text) to each."""
    logs.configure("warning", json=True)  # a thousand agents at info level would measure the terminal
    logging.getLogger("paho").setLevel(logging.CRITICAL)  # its loop's race with disconnect() at teardown is noise
    raise_fd_limit()
    sys.setswitchinterval(GIL_SWITCH_S)
    os.nice(SIMULATOR_NICE)
    host = SimHost(broker, devices, Path(state_root), heartbeat)
    while True:
        try:
            command, args = conn.recv()
        except EOFError:  # the parent went away
            host.close()
            return
        try:
            reply: tuple[str, Any] = ("ok", getattr(host, command)(*args))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run with it
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)
        if command == "close":
            return
