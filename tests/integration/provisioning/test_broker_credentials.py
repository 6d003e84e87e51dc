"""The credentials provisioning issues work on a real Mosquitto: the device's own secret connects,
a wrong or revoked one does not, and the ACL confines a device to its own topics."""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from sandbox.prereqs import MissingPrerequisite, require
from sandbox.process import ManagedProcess, free_port, port_open, wait_until
from tests.support import piimage
from tests.support.cli import CONTROLLER_KEY, tinyfleet
from tinyfleet.provisioning import credentials

CONTROLLER_SECRET = "controller-secret-0123456789"


@pytest.fixture
def secure_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    try:
        require("mosquitto")
    except MissingPrerequisite as exc:
        pytest.fail(f"prerequisite missing: {exc}", pytrace=False)
    port = free_port()
    passwd, acl = tmp_path / "mosquitto.passwd", tmp_path / "acl"
    acl.write_text(tinyfleet("provision", "credentials", "acl").stdout)
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
                      f"password_file {passwd}\nacl_file {acl}\n")
    broker = ManagedProcess("mosquitto", ["mosquitto", "-c", str(config)], tmp_path / "mosquitto.log")

    def start() -> None:
        broker.start()
        wait_until(lambda: broker.check_alive() is None and port_open(port), 15, "mosquitto", broker.log)
    yield passwd, port, start, broker
    broker.stop()


def session(port: int, username: str, password: str, act) -> list:  # type: ignore[no-untyped-def]
    """Connect with MQTT 5, let `act(client, results, done)` do its part, collect what it records."""
    done = threading.Event()
    results: list = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    act(client, results, done)
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    assert results, "no answer from the broker"
    return results


def connect(port: int, username: str, password: str) -> mqtt.ReasonCode:
    def act(client, results, done):  # type: ignore[no-untyped-def]
        client.on_connect = lambda c, u, f, rc, p: (results.append(rc), done.set())
    return session(port, username, password, act)[0]


def publish(port: int, username: str, password: str, topic: str) -> mqtt.ReasonCode:
    """Publish at QoS 1 and return the broker's PUBACK reason (MQTT 5 says 'Not authorized')."""
    def act(client, results, done):  # type: ignore[no-untyped-def]
        client.on_connect = lambda c, u, f, rc, p: c.publish(topic, b"{}", qos=1)
        client.on_publish = lambda c, u, mid, rc, p: (results.append(rc), done.set())
    return session(port, username, password, act)[0]


def test_each_device_connects_with_its_own_secret_until_revoked(pi_image, secure_broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    passwd, port, start, broker = secure_broker
    image = pi_image("cloud-init")
    baked = tinyfleet("provision", "customize", str(image), "--device-id", "pi-0300", "--broker",
                      f"mqtt://127.0.0.1:{port}", "--passwd-file", str(passwd), "--controller-key", CONTROLLER_KEY)
    assert baked.returncode == 0, baked.stderr
    secret = tomllib.loads(piimage.boot_read(image, "tinyfleet/agent.toml"))["mqtt_password"]
    credentials.PasswordFile(passwd).put(credentials.issue_controller("controller", CONTROLLER_SECRET))
    start()
    assert not connect(port, "pi-0300", secret).is_failure
    assert connect(port, "pi-0300", secret + "x").is_failure
    assert connect(port, "pi-0301", secret).is_failure, "one device's secret is not another's"
    assert not publish(port, "pi-0300", secret, "tinyfleet/v1/devices/pi-0300/reported").is_failure
    assert publish(port, "pi-0300", secret, "tinyfleet/v1/devices/pi-0999/reported").is_failure, "ACL: own topics"
    assert publish(port, "pi-0300", secret, "tinyfleet/v1/devices/pi-0300/desired").is_failure, "desired is read-only"
    assert not publish(port, "controller", CONTROLLER_SECRET, "tinyfleet/v1/devices/pi-0300/desired").is_failure
    exported = tinyfleet("provision", "credentials", "export", "--passwd-file", str(passwd), "--format", "json")
    assert '"device_id": "pi-0300"' in exported.stdout and secret not in exported.stdout
    revoked = tinyfleet("provision", "credentials", "revoke", "pi-0300", "--passwd-file", str(passwd))
    assert revoked.returncode == 0, revoked.stderr
    broker.stop()
    start()
    assert connect(port, "pi-0300", secret).is_failure
