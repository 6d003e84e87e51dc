"""The production files in systemd/: the controller unit's command line is one the real CLI accepts,
and the Mosquitto config starts a real broker that refuses anonymous clients and serves TLS."""

from __future__ import annotations

import getpass
import re
import shlex
import ssl
import subprocess
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sandbox.prereqs import require
from sandbox.process import ManagedProcess, free_port, port_open, wait_until
from tests.support.cli import tinyfleet
from tinyfleet.controller.cli import build_parser

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"


def test_the_unit_runs_the_controller_with_flags_the_cli_accepts() -> None:
    unit = (SYSTEMD / "tinyfleet-controller.service").read_text()
    joined = unit.replace("\\\n", " ")  # systemd continues a line ending in a backslash
    exec_start = re.search(r"^ExecStart=(.*)$", joined, re.M)
    assert exec_start, "no ExecStart"
    argv = shlex.split(exec_start.group(1))
    assert argv[0].endswith("/tinyfleet") and argv[1] == "controller"
    args = build_parser().parse_args(argv[1:])
    assert args.listen.startswith("127.0.0.1:"), "the API stays on loopback"
    assert str(args.db).startswith("/var/lib/tinyfleet/")
    assert "StateDirectory=tinyfleet" in unit and "User=tinyfleet" in unit and "NoNewPrivileges=yes" in unit


def connect(port: int, user: str | None = None, password: str | None = None, tls_ca: Path | None = None) -> str:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    if user:
        client.username_pw_set(user, password)
    if tls_ca:
        client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(True)  # a self-signed test certificate for 127.0.0.1
    result: list[str] = []
    client.on_connect = lambda c, u, f, reason, p: result.append(str(reason))
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    wait_until(lambda: bool(result), 10, "CONNACK")
    client.disconnect()
    client.loop_stop()
    return result[0]


def test_the_production_broker_config_refuses_anonymous_clients_and_serves_tls(tmp_path: Path) -> None:
    try:
        require("mosquitto", "mosquitto_passwd", "openssl")
    except Exception as exc:  # a missing tool fails with how to get it
        pytest.fail(str(exc), pytrace=False)
    plain, tls = free_port(), free_port()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(tmp_path / "broker.key"), "-out", str(tmp_path / "broker.crt")],
                   check=True, capture_output=True)
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(tmp_path / "passwd"), "controller", "s3cret"], check=True,
                   capture_output=True)
    acl = tinyfleet("provision", "credentials", "acl", "--controller-user", "controller")
    assert acl.returncode == 0, acl.stderr
    (tmp_path / "acl").write_text(acl.stdout)
    config = (SYSTEMD / "mosquitto-tinyfleet.conf").read_text()
    for production, here in (("/etc/mosquitto/tinyfleet.passwd", tmp_path / "passwd"),
                             ("/etc/mosquitto/tinyfleet.acl", tmp_path / "acl"),
                             ("/etc/mosquitto/certs/broker.crt", tmp_path / "broker.crt"),
                             ("/etc/mosquitto/certs/broker.key", tmp_path / "broker.key"),
                             ("/var/lib/mosquitto/", f"{tmp_path}/data/"), ("listener 1883 ", f"listener {plain} "),
                             ("listener 8883", f"listener {tls} 127.0.0.1"), ("log_dest syslog", "log_dest stderr")):
        assert str(production) in config
        config = config.replace(str(production), str(here))
    (tmp_path / "data").mkdir()
    # As root, mosquitto switches to its own user, which cannot read a test's private directory.
    (tmp_path / "mosquitto.conf").write_text(config + f"user {getpass.getuser()}\n")
    broker = ManagedProcess("mosquitto", ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], tmp_path / "log")
    broker.start()
    try:
        wait_until(lambda: broker.check_alive() is None and port_open(plain) and port_open(tls), 15, "mosquitto",
                   broker.log)
        assert connect(plain) == "Not authorized"
        assert connect(plain, "controller", "wrong") == "Not authorized"
        assert connect(plain, "controller", "s3cret") == "Success"
        assert connect(tls, "controller", "s3cret", tls_ca=tmp_path / "broker.crt") == "Success"
    finally:
        broker.stop()
