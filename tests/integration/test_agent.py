"""tinyfleet-agent as a real process, against the real broker, Docker Engine and registry; the
boards are emulated by the agent's --platform, and ARM containers run under qemu."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.agents import AgentProcess
from sandbox.dockerd import Dockerd
from sandbox.images import DemoImage
from sandbox.peer import FleetPeer
from tests.support.engine import labelled_containers
from tests.support.images import incompressible, publish
from tests.support.registry_proxy import RegistryProxy
from tinyfleet import protocol
from tinyfleet.controller.signing import Signer
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, Phase, ReportedState

_ids = itertools.count(1)
ATTACKER = Signer.generate()
HEALTH = HealthPolicy(settle_seconds=2, deadline_seconds=45)


@pytest.fixture(scope="module")
def proxy(registry) -> Iterator[RegistryProxy]:  # type: ignore[no-untyped-def]
    p = RegistryProxy(registry.host)
    yield p
    p.close()


@pytest.fixture(scope="module")
def images(proxy, demo_binaries, tmp_path_factory) -> dict[str, DemoImage]:  # type: ignore[no-untyped-def]
    host = proxy.host
    pad = incompressible(tmp_path_factory.mktemp("pad") / "pad.bin", 2 * 1024 * 1024)
    return {
        "v1": publish(host, "agent/hello", demo_binaries, version="1"),
        "v2": publish(host, "agent/hello", demo_binaries, version="2"),
        "unhealthy": publish(host, "agent/hello", demo_binaries, version="3", env=(("TINYHELLO_HEALTH", "fail"),)),
        "crash": publish(host, "agent/hello", demo_binaries, version="4", env=(("TINYHELLO_CRASH_AFTER", "1"),),
                         healthcheck=False),
        "side": publish(host, "agent/side", demo_binaries, version="side-1"),
        "v7only": publish(host, "agent/v7only", demo_binaries, version="v7only-1", platforms=("linux/arm/v7",)),
        "big": publish(host, "agent/big", demo_binaries, version="big-1", padding=pad),
        "tampered": publish(host, "agent/tampered", demo_binaries, version="tampered-1"),
    }


@pytest.fixture(scope="module")
def peer(mosquitto) -> Iterator[FleetPeer]:  # type: ignore[no-untyped-def]
    p = FleetPeer(mosquitto.url)
    yield p
    p.close()


class Board:
    """One emulated board: an agent process plus helpers to look at its containers."""

    def __init__(self, agent: AgentProcess, dockerd, peer: FleetPeer) -> None:  # type: ignore[no-untyped-def]
        self.agent = agent
        self.docker = dockerd.client()
        self.peer = peer
        self.generation = 0

    @property
    def id(self) -> str:
        return self.agent.device_id

    def want(self, *apps: AppSpec) -> int:
        self.generation += 1
        self.peer.publish(DesiredState(self.id, self.generation, apps))
        return self.generation

    def wait(self, check, what: str = "report", timeout: float = 150) -> ReportedState:  # type: ignore[no-untyped-def]
        generation = self.generation
        return self.peer.wait(self.id, lambda r: r.generation >= generation and check(r), timeout, what)

    def wait_phase(self, app: str, phase: Phase, image: str | None = None, timeout: float = 150) -> ReportedState:
        def ok(r: ReportedState) -> bool:
            s = r.app(app)
            return s is not None and s.phase == phase and (image is None or s.current_image == image)
        return self.wait(ok, f"{app} {phase.value} at {image}", timeout)

    def containers(self, app: str | None = None) -> list:  # type: ignore[type-arg]
        labels = [f"io.tinyfleet.device={self.id}"] + ([f"io.tinyfleet.app={app}"] if app else [])
        return labelled_containers(self.docker, labels)

    def running(self, app: str) -> list:  # type: ignore[type-arg]
        return [c for c in self.containers(app) if c.status == "running"]

    def log(self) -> str:
        return self.agent.log.read_text() if self.agent.log.exists() else ""


@pytest.fixture
def board(mosquitto, dockerd, peer, sandbox_root, qemu):  # type: ignore[no-untyped-def]
    made: list[Board] = []

    def make(platform: str = "linux/arm/v7", **kw) -> Board:  # type: ignore[no-untyped-def]
        agent = AgentProcess(f"board-{next(_ids)}-{platform.split('/')[-1]}", platform, mosquitto.url,
                             dockerd.url, sandbox_root / "agents", controller_key=str(peer.signer.public), **kw)
        b = Board(agent.start(), dockerd, peer)
        made.append(b)
        return b

    yield make
    for b in made:
        b.agent.stop()
        for c in b.containers():
            c.remove(force=True)
        peer.clear(b.id)


def app(image: DemoImage, name: str = "hello", **kw) -> AppSpec:  # type: ignore[no-untyped-def]
    return AppSpec(name=name, image=image.ref, health=HEALTH, **kw)


def test_arm_v7_board_converges_to_two_apps(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v7")
    b.want(app(images["v1"]), app(images["side"], name="side"))
    b.wait(lambda r: all(a.phase == Phase.RUNNING for a in r.apps) and len(r.apps) == 2, "both apps running")
    report = b.peer.reported[b.id]
    assert report.platform == "linux/arm/v7"
    for name in ("hello", "side"):
        (container,) = b.containers(name)
        assert container.status == "running"
        assert container.labels["io.tinyfleet.owner"] == "tinyfleet"
        assert container.labels["io.tinyfleet.generation"] == "1"
        assert container.image.attrs["Architecture"] == "arm" and container.image.attrs["Variant"] == "v7"
        assert b"tinyhello up" in container.logs()
    assert b.peer.status[b.id].online and b.peer.status[b.id].platform == "linux/arm/v7"


def test_update_hands_over_with_no_gap_in_service(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm64")
    b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    gaps: list[float] = []
    errors: list[Exception] = []
    seen_two = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                running = len(b.running("hello"))
            except Exception as exc:  # noqa: BLE001 - asserted below: a watch that died would prove nothing
                errors.append(exc)
                return
            if running == 0:
                gaps.append(time.monotonic())
            if running == 2:
                seen_two.set()
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        b.want(app(images["v2"]))
        b.wait_phase("hello", Phase.RUNNING, images["v2"].ref)
    finally:
        stop.set()
        watcher.join()
    assert not errors, f"the watch stopped looking: {errors[0]!r}" if errors else ""
    assert not gaps, "there was a moment with no running container"
    assert seen_two.is_set(), "old and new ran side by side during the hand-over"
    (container,) = b.containers("hello")
    assert b"version 2" in container.logs()


@pytest.mark.parametrize(("bad", "reason"), [("unhealthy", "unhealthy"), ("crash", "exited")])
def test_bad_new_version_is_rolled_back(board, images, bad: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v7")
    b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    (old,) = b.containers("hello")
    b.want(app(images[bad]))
    report = b.wait_phase("hello", Phase.ROLLED_BACK)
    status = report.app("hello")
    assert status is not None and status.current_image == images["v1"].ref and status.desired_image == images[bad].ref
    assert status.error and (reason in status.error or "restarted" in status.error)
    (survivor,) = b.containers("hello")
    assert survivor.id == old.id and survivor.status == "running", "the old container kept running throughout"


def test_oversized_image_is_refused_with_zero_layer_bytes_fetched(board, images, proxy) -> None:  # type: ignore[no-untyped-def]
    big = images["big"]
    limit = min(big.sizes.values()) - 1
    b = board("linux/arm/v7", max_image_bytes=limit)
    b.want(app(images["big"]))
    report = b.wait_phase("hello", Phase.FAILED)
    assert "over the budget" in (report.app("hello").error or "")  # type: ignore[union-attr]
    assert proxy.traffic.blob_requests("agent/big") == [], "no layer (or config) was fetched"
    assert b.containers("hello") == []


def test_digest_that_does_not_verify_is_refused(board, images, proxy) -> None:  # type: ignore[no-untyped-def]
    proxy.traffic.tamper.add(images["tampered"].digest)
    b = board("linux/arm/v7")
    b.want(app(images["tampered"]))
    report = b.wait_phase("hello", Phase.FAILED)
    assert "refusing it" in (report.app("hello").error or "")  # type: ignore[union-attr]
    assert proxy.traffic.blob_requests("agent/tampered") == []
    assert b.containers("hello") == []


def test_arm_v6_board_refuses_an_index_with_only_v7(board, images, proxy) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v6")
    b.want(app(images["v7only"]))
    report = b.wait_phase("hello", Phase.FAILED)
    assert "no image for linux/arm/v6" in (report.app("hello").error or "")  # type: ignore[union-attr]
    assert proxy.traffic.blob_requests("agent/v7only") == []
    b.want(app(images["v1"]))  # the full index has a v6 entry
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    (container,) = b.containers("hello")
    assert container.image.attrs["Variant"] == "v6"


def test_kill_9_mid_update_then_restart_converges_without_duplicates(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v7")
    b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    b.want(app(images["v2"]))
    b.wait(lambda r: r.app("hello") is not None and r.app("hello").phase == Phase.STARTING, "update under way")  # type: ignore[union-attr]
    b.agent.kill()
    assert len(b.containers("hello")) == 2, "killed with the old and the new container both present"
    b.agent.start()
    b.wait_phase("hello", Phase.RUNNING, images["v2"].ref)
    containers = b.containers("hello")
    assert len(containers) == 1 and containers[0].labels["io.tinyfleet.image"] == images["v2"].ref


def test_restarted_agent_adopts_healthy_containers_without_restarting_them(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm64")
    b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    (before,) = b.containers("hello")
    started = before.attrs["State"]["StartedAt"]
    b.agent.stop()
    b.peer.wait_status(b.id, online=False)
    b.agent.start()
    b.peer.wait_status(b.id, online=True)
    time.sleep(3)
    (after,) = b.containers("hello")
    assert after.id == before.id and after.attrs["State"]["StartedAt"] == started


def test_malformed_or_stale_desired_state_is_rejected_and_nothing_changes(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v7")
    generation = b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    (container,) = b.containers("hello")
    b.peer.publish_raw(b.id, b'{"v": "1.1", "kind": "desired", "body": {"device_id": "%s", "generation": 9, '
                             b'"apps": "everything"}}' % b.id.encode())
    report = b.wait(lambda r: r.error is not None, "rejection reported")
    assert "body.apps: must be a list" in report.error and report.rejected_generation == 9  # type: ignore[operator]
    b.peer.publish(DesiredState(b.id, generation - 1, ()))
    report = b.wait(lambda r: r.error is not None and "older" in r.error, "stale generation rejected")
    assert report.generation == generation
    (still,) = b.containers("hello")
    assert still.id == container.id and still.status == "running"


FORGERIES = [  # (what an attacker on the broker sends, given the board's id and generation; the reason reported)
    (lambda dev, gen: protocol.encode(DesiredState(dev, gen + 5, ())), "signature refused: unsigned"),
    (lambda dev, gen: protocol.encode(DesiredState(dev, gen + 6, ()), ATTACKER.sign(DesiredState(dev, gen + 6, ()))),
     "which this board's key"),
    (lambda dev, gen: _with_sig(DesiredState(dev, gen + 7, ()), value="!!garbage==" * 8), "sig.value: is not base64"),
    (lambda dev, gen: _with_sig(DesiredState(dev, gen + 8, ()), value="A" * 60_000), "over the limit of 88"),
    (lambda dev, gen: _with_sig(DesiredState(dev, gen + 9, ()), value="QUFB"), "sig.value: is not base64"),
]


def _with_sig(desired: DesiredState, **sig: object) -> bytes:
    envelope = json.loads(protocol.encode(desired, ATTACKER.sign(desired)))
    envelope["sig"].update(sig)
    return json.dumps(envelope).encode()


def test_forged_desired_states_are_refused_reported_and_change_nothing(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm64")
    generation = b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    (container,) = b.containers("hello")
    for forge, reason in FORGERIES:
        b.peer.publish_raw(b.id, forge(b.id, generation))
        report = b.wait(lambda r, reason=reason: r.error is not None and reason in r.error, f"refusal: {reason}")
        assert report.generation == generation and report.app("hello").phase == Phase.RUNNING  # type: ignore[union-attr]
    (still,) = b.containers("hello")
    assert still.id == container.id and still.status == "running", "the app kept running through every forgery"
    generation = b.want(app(images["v2"]))  # the controller's next document is believed, and clears the error
    report = b.wait_phase("hello", Phase.RUNNING, images["v2"].ref)
    assert report.error is None and report.generation == generation


def test_a_replayed_document_is_refused_even_after_the_agent_restarts(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v7")
    b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    old = DesiredState(b.id, b.generation, (app(images["v1"]),))
    captured = protocol.encode(old, b.peer.signer.sign(old))  # what an eavesdropper kept of generation 1
    b.want(app(images["v2"]))
    b.wait_phase("hello", Phase.RUNNING, images["v2"].ref)
    b.agent.stop()
    b.agent.start()
    b.peer.publish_raw(b.id, captured)
    report = b.wait(lambda r: r.error is not None and "a replay" in r.error, "replay refused")
    assert report.rejected_generation == old.generation and report.app("hello").current_image == images["v2"].ref  # type: ignore[union-attr]
    (still,) = b.containers("hello")
    assert still.labels["io.tinyfleet.image"] == images["v2"].ref and still.status == "running"


def test_an_agent_without_a_controller_key_refuses_to_start(mosquitto, dockerd, sandbox_root) -> None:  # type: ignore[no-untyped-def]
    agent = AgentProcess(f"board-{next(_ids)}-nokey", "linux/arm64", mosquitto.url, dockerd.url,
                         sandbox_root / "agents", controller_key="")
    argv = [a for a in agent.argv() if a != "--insecure-accept-unsigned"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TINYFLEET_CONFIG": os.devnull})
    assert result.returncode == 2 and "no controller_key configured" in result.stderr


def test_broker_restart_loses_no_reported_state(board, images, mosquitto, peer) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v7")
    b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    b.want(app(images["v2"]))
    b.wait(lambda r: r.app("hello") is not None and r.app("hello").phase != Phase.RUNNING, "update started")  # type: ignore[union-attr]
    mosquitto.stop()
    try:  # the hand-over finishes while the broker is down
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            cs = b.containers("hello")
            if len(cs) == 1 and cs[0].labels["io.tinyfleet.image"] == images["v2"].ref:
                break
            time.sleep(0.5)
    finally:
        mosquitto.start()  # whatever happened here, the rest of the session needs its broker
    fresh = FleetPeer(mosquitto.url)  # a newcomer sees the retained, current report
    try:
        report = fresh.wait(b.id, lambda r: r.app("hello") is not None and r.app("hello").phase == Phase.RUNNING  # type: ignore[union-attr]
                            and r.app("hello").current_image == images["v2"].ref, 60, "current report after restart")  # type: ignore[union-attr]
        assert report.generation == b.generation
    finally:
        fresh.close()
    # and the broker itself keeps it: with the agent gone, a restarted broker still serves the last report
    b.agent.stop()
    mosquitto.restart()
    later = FleetPeer(mosquitto.url)
    try:
        kept = later.wait(b.id, lambda r: r.app("hello") is not None  # type: ignore[union-attr]
                          and r.app("hello").current_image == images["v2"].ref, 30, "retained report")  # type: ignore[union-attr]
        assert kept.generation == b.generation
    finally:
        later.close()


def test_registry_outage_is_retried_while_the_app_keeps_running(board, demo_binaries, registry) -> None:  # type: ignore[no-untyped-def]
    outage = RegistryProxy(registry.host)
    try:
        v1 = publish(outage.host, "agent/outage", demo_binaries, version="outage-1")
        v2 = publish(outage.host, "agent/outage", demo_binaries, version="outage-2")
        b = board("linux/arm/v7")
        b.want(app(v1))
        b.wait_phase("hello", Phase.RUNNING, v1.ref)
        (running,) = b.containers("hello")
        outage.close()
        b.want(app(v2))
        report = b.wait(lambda r: "retrying" in (r.app("hello").error or ""), "retrying reported")  # type: ignore[union-attr]
        assert report.app("hello").current_image == v1.ref  # type: ignore[union-attr]
        time.sleep(3)
        assert b.running("hello")[0].id == running.id, "the running app was not touched during the outage"
        outage.start()
        b.wait_phase("hello", Phase.RUNNING, v2.ref)
    finally:
        outage.close()


def test_agent_tells_systemd_it_is_ready_and_alive(board, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    try:
        board("linux/arm64", extra_env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"})
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while not {"READY=1", "WATCHDOG=1"} <= seen and time.monotonic() < deadline:
            seen.update(sock.recv(4096).decode().splitlines())
        assert {"READY=1", "WATCHDOG=1"} <= seen
    finally:
        sock.close()


def test_health_messages_carry_board_metrics(board, peer) -> None:  # type: ignore[no-untyped-def]
    b = board("linux/arm/v7")
    deadline = time.monotonic() + 30
    while b.id not in peer.health and time.monotonic() < deadline:
        time.sleep(0.2)
    health = peer.health[b.id]
    assert health.engine_reachable and health.uptime_seconds > 0 and health.agent_version
    assert health.mem_total_bytes and health.disk_free_bytes and health.agent_rss_bytes


def test_engine_outage_is_survived_and_the_app_comes_back(images, mosquitto, peer, sandbox_root, qemu) -> None:  # type: ignore[no-untyped-def]
    engine = Dockerd(sandbox_root / f"d-outage-{next(_ids)}").start()
    agent = AgentProcess(f"board-{next(_ids)}-engine-outage", "linux/arm64", mosquitto.url, engine.url,
                         sandbox_root / "agents", controller_key=str(peer.signer.public)).start()
    b = Board(agent, engine, peer)
    try:
        b.want(app(images["v1"]))
        b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
        engine.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and peer.health.get(b.id) and peer.health[b.id].engine_reachable:
            time.sleep(0.2)
        assert not peer.health[b.id].engine_reachable and agent.alive()
        engine.start()
        b.docker = engine.client()
        b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
        (container,) = b.containers("hello")
        assert container.status == "running" and agent.alive()
    finally:
        agent.stop()
        engine.stop()
        engine.remove()
        peer.clear(b.id)
