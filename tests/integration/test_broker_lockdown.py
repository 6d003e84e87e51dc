"""Issue 10, the broker half: the real Mosquitto locked down as in production - a password file and the
ACL from `tinyfleet provision credentials`, no anonymous clients, a TLS listener with a CA made here -
keeps every device to its own topics, and the real agent and the real controller still work on it.

The attacker is a raw paho client holding one device's own valid credentials. "Never sees it" is proven
without waiting for nothing: after each forgery the attacker (or the controller) sends a legitimate
message the same way, and the watcher's check runs once that one has arrived - a forgery let through
would have been delivered before it."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sandbox.agents import AgentProcess
from sandbox.certificates import ServerCertificates, make_server_certificates
from sandbox.mosquitto import Lockdown, Mosquitto
from sandbox.process import ManagedProcess, free_port
from tests.conftest import _need
from tests.support.cli import tinyfleet
from tests.support.engine import labelled_containers
from tests.support.fleet import push_demo_image
from tests.support.wait import eventually
from tinyfleet.controller.client import ApiClient, ControllerUnreachable
from tinyfleet.protocol import topics
from tinyfleet.provisioning import credentials

DEVICES = ("lk-a", "lk-b", "lk-agent", "lk-revoked", "lk-wrong-ca", "lk-e2e-0", "lk-e2e-1")


@dataclass
class LockedBroker:
    broker: Mosquitto
    certs: ServerCertificates
    passwd: Path
    controller: credentials.ControllerCredential
    devices: dict[str, credentials.DeviceCredential]


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedBroker]:
    root = tmp_path_factory.mktemp("locked-broker")
    passwd_path = root / "mosquitto.passwd"
    passwd = credentials.PasswordFile(passwd_path)
    controller = credentials.issue_controller("controller")
    passwd.put(controller)
    devices = {d: credentials.issue(d) for d in DEVICES}
    for cred in devices.values():
        passwd.put(cred)
    acl = tinyfleet("provision", "credentials", "acl", "--controller-user", controller.username)
    assert acl.returncode == 0, acl.stderr
    (root / "tinyfleet.acl").write_text(acl.stdout)
    certs = make_server_certificates(root / "tls")
    broker = _need(lambda: Mosquitto(root / "mqtt", lockdown=Lockdown(passwd_path, root / "tinyfleet.acl", certs))
                   .start())
    yield LockedBroker(broker, certs, passwd_path, controller, devices)
    broker.stop()


class Client:
    """A raw MQTT 5 client (MQTT 5: the broker says 'Not authorized' in CONNACK and PUBACK) that records
    what it is told and what it receives."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None, *,
                 ca_file: Path | None = None, client_id: str | None = None,
                 will: tuple[str, bytes] | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"raw-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file), cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.connack: mqtt.ReasonCode | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, mqtt.ReasonCode] = {}
        self.subacks: dict[int, list[mqtt.ReasonCode]] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        self._until(lambda: self.connack is not None, "CONNACK")

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode,
                    properties: object) -> None:
        with self._cond:
            self.connack = reason
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: mqtt.ReasonCode,
                    properties: object) -> None:
        with self._cond:
            self.acks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list[mqtt.ReasonCode],
                      properties: object) -> None:
        with self._cond:
            self.subacks[mid] = reasons
            self._cond.notify_all()

    def _until(self, check: Callable[[], bool], what: str, timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(check, timeout), f"{what} not received within {timeout}s"

    def subscribe(self, *filters: str) -> None:
        """One SUBSCRIBE per filter, each acknowledged before the next (so retained messages come in order)."""
        for f in filters:
            _, mid = self.client.subscribe(f, qos=1)
            self._until(lambda m=mid: m in self.subacks, f"SUBACK for {f}")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> mqtt.ReasonCode | None:
        """The broker's PUBACK reason at QoS 1 (None at QoS 0: the broker says nothing)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            info.wait_for_publish(5)
            return None
        self._until(lambda: info.mid in self.acks, f"PUBACK for {topic}")
        return self.acks[info.mid]

    def wait_for(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including (topic, payload)."""
        self._until(lambda: (topic, payload) in self.messages, f"{payload!r} on {topic}")
        with self._cond:
            return list(self.messages)

    def drop(self) -> None:
        """Gone without DISCONNECT, as a board losing power: the broker publishes the will, if allowed."""
        sock = self.client.socket()
        self.client.loop_stop()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(locked: LockedBroker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def connect(who: str, *, tls: bool = True, **options: object) -> Client:
        cred = locked.controller if who == "controller" else locked.devices[who]
        port = locked.broker.tls_port if tls else locked.broker.port
        c = Client(port, cred.username, cred.secret, ca_file=locked.certs.ca_file if tls else None, **options)  # type: ignore[arg-type]
        assert c.connack is not None and not c.connack.is_failure, f"{who}: {c.connack}"
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


def on_topics_of(device: str, received: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(t, p) for t, p in received if t.startswith(f"{topics.PREFIX}/{device}/")]


# -- who may connect --------------------------------------------------------------------------------------


CONNECTS = {  # who: (username, password) -> what the broker answers, on either listener
    "anonymous": (lambda lb: (None, None), "Not authorized"),
    "a device with a wrong secret": (lambda lb: ("lk-a", "not-its-secret-0123456789"), "Not authorized"),
    "a device with another device's secret": (lambda lb: ("lk-a", lb.devices["lk-b"].secret), "Not authorized"),
    "an unknown user": (lambda lb: ("lk-nobody", lb.devices["lk-a"].secret), "Not authorized"),
    "a device with its own secret": (lambda lb: ("lk-a", lb.devices["lk-a"].secret), "Success"),
    "the controller with its own secret": (lambda lb: ("controller", lb.controller.secret), "Success"),
}


@pytest.mark.parametrize("listener", ["plain", "tls"])
@pytest.mark.parametrize("who", list(CONNECTS))
def test_only_known_users_with_their_own_secret_connect(locked: LockedBroker, listener: str, who: str) -> None:
    login, outcome = CONNECTS[who]
    username, password = login(locked)
    tls = listener == "tls"
    c = Client(locked.broker.tls_port if tls else locked.broker.port, username, password,
               ca_file=locked.certs.ca_file if tls else None)
    try:
        assert str(c.connack) == outcome
    finally:
        c.close()


# -- what a device may read -------------------------------------------------------------------------------


def test_a_device_receives_nothing_of_another_devices_desired_state_whatever_it_subscribes_to(clients) -> None:  # type: ignore[no-untyped-def]
    controller = clients("controller", tls=False)
    for device in ("lk-b", "lk-a"):
        reason = controller.publish(topics.desired(device), f"retained for {device[-1]}".encode(), retain=True)
        assert reason is not None and not reason.is_failure
    attacker = clients("lk-a")
    attacker.subscribe(topics.desired("lk-b"), f"{topics.PREFIX}/lk-b/#", topics.subscription(topics.Channel.DESIRED),
                       "#", topics.desired("lk-a"))
    controller.publish(topics.desired("lk-b"), b"live for b", retain=True)
    controller.publish(topics.desired("lk-a"), b"live for a", retain=True)
    received = attacker.wait_for(topics.desired("lk-a"), b"live for a")
    assert (topics.desired("lk-a"), b"retained for a") in received, "its own desired state does reach it"
    assert on_topics_of("lk-b", received) == []
    assert {t for t, _ in received} == {topics.desired("lk-a")}, "nor anything else under '#'"


def test_shared_subscriptions_reach_the_controller_user_and_give_a_device_nothing_of_another(clients) -> None:  # type: ignore[no-untyped-def]
    # Several controllers split report ingestion with $share/GROUP/... (tinyfleet controller --share-group):
    # Mosquitto checks such a filter's ACL on the topic after the group, so the controller's
    # `topic readwrite tinyfleet/#` covers it and a device's own patterns still fence it in.
    controller = clients("controller")
    controller.subscribe(f"$share/ingest/{topics.subscription(topics.Channel.REPORTED)}")
    attacker = clients("lk-a")
    attacker.subscribe(f"$share/ingest/{topics.PREFIX}/lk-b/#", "$share/snoop/#",
                       f"$share/snoop/{topics.subscription(topics.Channel.REPORTED)}")
    reporter = clients("lk-b")
    reason = reporter.publish(topics.topic("lk-b", topics.Channel.REPORTED), b"b reports")
    assert reason is not None and not reason.is_failure
    controller.wait_for(topics.topic("lk-b", topics.Channel.REPORTED), b"b reports")
    time.sleep(1.0)  # the attacker's filters had as long as the controller's to be served
    assert on_topics_of("lk-b", attacker.messages) == []


# -- what a device may write ------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [topics.Channel.REPORTED, topics.Channel.STATUS, topics.Channel.HEALTH])
@pytest.mark.parametrize("qos, retain", [(1, True), (1, False), (0, False)])
def test_a_device_cannot_speak_for_another_device(clients, channel: topics.Channel, qos: int, retain: bool) -> None:  # type: ignore[no-untyped-def]
    watcher = clients("controller", tls=False)
    watcher.subscribe(topics.subscription(channel), topics.reported("lk-a"))
    attacker = clients("lk-a")
    forged = json.dumps({"forged": str(channel)}).encode()
    reason = attacker.publish(topics.topic("lk-b", channel), forged, qos=qos, retain=retain)
    if qos == 1:
        assert reason is not None and str(reason) == "Not authorized"
    own = attacker.publish(topics.topic("lk-a", channel), b"own", qos=qos)
    assert own is None or not own.is_failure, "its own topic of that channel is allowed"
    sentinel = uuid.uuid4().hex.encode()
    attacker.publish(topics.reported("lk-a"), sentinel, retain=True)
    received = watcher.wait_for(topics.reported("lk-a"), sentinel)
    assert on_topics_of("lk-b", received) == []
    assert (topics.topic("lk-a", channel), b"own") in received
    late = clients("controller", tls=False)  # and nothing of it was kept as a retained message
    late.subscribe(topics.topic("lk-b", channel), topics.reported("lk-a"))
    assert on_topics_of("lk-b", late.wait_for(topics.reported("lk-a"), sentinel)) == []


def test_a_device_cannot_leave_a_last_will_on_another_devices_status(clients) -> None:  # type: ignore[no-untyped-def]
    watcher = clients("controller", tls=False)
    watcher.subscribe(topics.status("lk-b"), topics.reported("lk-a"))
    attacker = clients("lk-a", client_id="lk-a-will", will=(topics.status("lk-b"), b'{"online": false}'))
    attacker.drop()
    # Taking over its client id settles the old session: its will is sent (or refused) before this CONNACK.
    again = clients("lk-a", client_id="lk-a-will")
    again.publish(topics.reported("lk-a"), b"after the will")
    received = watcher.wait_for(topics.reported("lk-a"), b"after the will")
    assert on_topics_of("lk-b", received) == []


@pytest.mark.parametrize("target", ["lk-a", "lk-b"], ids=["its-own", "another-devices"])
def test_no_device_can_publish_a_desired_state_not_even_its_own(clients, target: str) -> None:  # type: ignore[no-untyped-def]
    controller = clients("controller", tls=False)
    controller.publish(topics.desired(target), b"from the controller", retain=True)
    controller.subscribe(topics.subscription(topics.Channel.DESIRED), topics.reported("lk-a"))
    victim = clients(target, client_id=f"{target}-victim-{uuid.uuid4().hex[:6]}")
    victim.subscribe(topics.desired(target))
    attacker = clients("lk-a")
    assert str(attacker.publish(topics.desired(target), b"forged", retain=True)) == "Not authorized"
    assert attacker.publish(topics.desired(target), b"forged", qos=0) is None
    sentinel = uuid.uuid4().hex.encode()
    attacker.publish(topics.reported("lk-a"), sentinel)
    seen = controller.wait_for(topics.reported("lk-a"), sentinel)
    assert (topics.desired(target), b"forged") not in seen
    controller.publish(topics.desired(target), b"after", retain=True)
    got = victim.wait_for(topics.desired(target), b"after")
    assert got == [(topics.desired(target), b"from the controller"), (topics.desired(target), b"after")]
    late = clients(target, client_id=f"{target}-late-{uuid.uuid4().hex[:6]}")
    late.subscribe(topics.desired(target))
    assert late.wait_for(topics.desired(target), b"after") == [(topics.desired(target), b"after")]


# -- the real agent -------------------------------------------------------------------------------------


def agent_on(locked: LockedBroker, device: str, root: Path, docker_url: str, *, ca_file: Path | None = None,
             platform: str = "linux/arm64") -> AgentProcess:
    cred = locked.devices[device]
    return AgentProcess(device, platform, locked.broker.tls_url, docker_url, root, extra_env={
        "TINYFLEET_MQTT_USERNAME": cred.username, "TINYFLEET_MQTT_PASSWORD": cred.secret,
        "TINYFLEET_CA_FILE": str(ca_file or locked.certs.ca_file)})


def statuses(received: list[tuple[str, bytes]], device: str) -> list[bool]:
    return [json.loads(p)["body"]["online"] for t, p in received if t == topics.status(device) and p]


def log_of(agent: AgentProcess) -> str:
    return agent.log.read_text(errors="replace") if agent.log.exists() else ""


def test_the_agent_connects_over_mqtts_trusting_only_its_ca(locked: LockedBroker, clients, dockerd,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    watcher = clients("controller", tls=False)
    watcher.subscribe(topics.status("lk-agent"), topics.status("lk-wrong-ca"))
    other_ca = make_server_certificates(tmp_path / "another-ca")  # a CA the broker's certificate is not from
    good = agent_on(locked, "lk-agent", tmp_path, dockerd.url).start()
    wrong = agent_on(locked, "lk-wrong-ca", tmp_path, dockerd.url, ca_file=other_ca.ca_file).start()
    try:
        eventually(lambda: True in statuses(watcher.messages, "lk-agent"), timeout=30, what="lk-agent online")
        eventually(lambda: "TLS certificate was refused" in log_of(wrong), timeout=30,
                   what="the agent with the wrong CA refusing the broker's certificate")
        assert wrong.alive(), "it keeps trying (with backoff) rather than giving up"
        assert statuses(watcher.messages, "lk-wrong-ca") == []
        secret = locked.devices["lk-agent"].secret
        assert secret not in log_of(good), "the device secret is never logged"
    finally:
        good.stop()
        wrong.stop()
    assert statuses(watcher.messages, "lk-agent")[-1] is False, "a clean stop says offline"


def test_a_revoked_device_is_dropped_on_reload_and_refused_when_it_reconnects(locked: LockedBroker, clients, dockerd,  # type: ignore[no-untyped-def]
                                                                             tmp_path: Path) -> None:
    watcher = clients("controller", tls=False)
    watcher.subscribe(topics.status("lk-revoked"))
    agent = agent_on(locked, "lk-revoked", tmp_path, dockerd.url).start()
    try:
        eventually(lambda: statuses(watcher.messages, "lk-revoked")[-1:] == [True], timeout=30, what="online")
        revoked = tinyfleet("provision", "credentials", "revoke", "lk-revoked", "--passwd-file", str(locked.passwd))
        assert revoked.returncode == 0, revoked.stderr
        before = len(log_of(agent))
        locked.broker.reload()
        eventually(lambda: "disconnected from broker" in log_of(agent)[before:], timeout=30,
                   what="the broker dropping the revoked device on SIGHUP")
        eventually(lambda: log_of(agent)[before:].count('"reason": "Not authorized", "event": "broker refused') >= 1,
                   timeout=30, what="the agent's reconnect refused")
        assert agent.alive(), "it keeps trying, with backoff"
        # Mosquitto sends no will for a client it drops this way: the controller marks the device offline
        # after its missed heartbeats, as for a board that lost power.
        assert statuses(watcher.messages, "lk-revoked")[-1] is True
        assert "lk-revoked" not in credentials.PasswordFile(locked.passwd).entries()
        refused = Client(locked.broker.tls_port, "lk-revoked", locked.devices["lk-revoked"].secret,
                         ca_file=locked.certs.ca_file)
        refused.close()
        assert str(refused.connack) == "Not authorized"
    finally:
        agent.stop()
    assert statuses(watcher.messages, "lk-revoked")[-1] is True, "nothing it sends after revocation arrives"


# -- the controller and real agents, end to end -----------------------------------------------------------


@dataclass
class ControllerCommand:
    """`tinyfleet controller` as an operator runs it on the locked-down broker: its own user, the
    password from a file, TLS pinned to the broker's CA."""

    root: Path
    process: ManagedProcess
    url: str

    def client(self) -> ApiClient:
        return ApiClient(self.url, (self.root / "api-token").read_text().strip(), timeout=30)

    def log(self) -> str:
        return self.process.log.read_text(errors="replace") if self.process.log.exists() else ""


@pytest.fixture
def controller_command(locked: LockedBroker, tmp_path: Path) -> Iterator[ControllerCommand]:
    root = tmp_path / "controller"
    root.mkdir()
    password_file = root / "broker-password"
    password_file.write_text(locked.controller.secret + "\n")
    password_file.chmod(0o600)
    port = free_port()
    exe = Path(sys.executable).parent / "tinyfleet"
    proc = ManagedProcess("tinyfleet controller", [
        str(exe), "controller", "--broker", locked.broker.tls_url, "--broker-username", locked.controller.username,
        "--broker-password-file", str(password_file), "--broker-ca-file", str(locked.certs.ca_file),
        "--db", str(root / "controller.db"), "--listen", f"127.0.0.1:{port}", "--heartbeat-interval", "1",
        "--tick", "0.2", "--log-format", "json"], root / "controller.log")
    proc.start()
    command = ControllerCommand(root, proc, f"http://127.0.0.1:{port}")

    def answering() -> bool:
        proc.check_alive()
        try:
            return (root / "api-token").exists() and command.client().devices() is not None
        except ControllerUnreachable:
            return False

    try:
        eventually(answering, timeout=30, what="tinyfleet controller answering")
        yield command
    finally:
        proc.stop()


def test_a_controller_with_its_own_user_over_tls_rolls_an_app_out_to_real_agents(  # type: ignore[no-untyped-def]
        locked: LockedBroker, controller_command: ControllerCommand, dockerd, registry, demo_binaries, qemu,
        tmp_path: Path) -> None:
    image = push_demo_image(registry.host, "it/locked-hello", "1.0", demo_binaries, version="1")
    agents = [agent_on(locked, "lk-e2e-0", tmp_path, dockerd.url, platform="linux/arm64"),
              agent_on(locked, "lk-e2e-1", tmp_path, dockerd.url, platform="linux/arm/v6")]
    api = controller_command.client()
    docker = dockerd.client()
    try:
        for a in agents:
            a.start()
        eventually(lambda: [d["online"] for d in api.devices("device:lk-e2e-0,lk-e2e-1")] == [True, True],
                   timeout=60, what="both agents online at the controller")
        release = api.create_release("hello", image, health={"settle_seconds": 2, "deadline_seconds": 60})
        rollout = api.start_rollout("hello", release["id"], "device:lk-e2e-0,lk-e2e-1", canary=1, batch="100%",
                                    health_timeout=120)
        done = api.wait_rollout(rollout["id"], timeout=240, interval=0.2)
        assert done["state"] == "completed" and done["counts"]["converged"] == 2, done
        for a in agents:
            running = labelled_containers(docker, [f"io.tinyfleet.device={a.device_id}", "io.tinyfleet.app=hello"],
                                          all=False)
            assert [c.labels["io.tinyfleet.image"] for c in running] == [release["image"]], a.device_id
        logs = controller_command.log() + "".join(log_of(a) for a in agents)
        for secret in (locked.controller.secret, *(locked.devices[a.device_id].secret for a in agents)):
            assert secret not in logs, "no broker secret in any log"
    finally:
        for a in agents:
            a.stop()
        for a in agents:
            for c in labelled_containers(docker, [f"io.tinyfleet.device={a.device_id}"]):
                c.remove(force=True)
