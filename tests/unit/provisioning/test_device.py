"""The agent's configuration file: validated settings, TOML with every string escaped, no secret in
a repr."""

from __future__ import annotations

import tomllib

import pytest

from tests.support.cli import CONTROLLER_KEY
from tinyfleet.provisioning.device import DeviceSettings, toml_value
from tinyfleet.provisioning.errors import CredentialError

NASTY = ['plain', 'quote " inside', "back\\slash", "new\nline\ttab", "\x00\x1f\x7f", "ünïcødé ✓", "'single'", ""]


@pytest.mark.parametrize("value", NASTY)
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"k = {toml_value(value)}")["k"] == value


def test_agent_toml_has_the_contract_keys() -> None:
    settings = DeviceSettings("pi-0001", "mqtts://broker.example.com:8883", "pi-0001", 'se"cr\\et',
                              "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n", "linux/arm/v6",
                              CONTROLLER_KEY)
    parsed = tomllib.loads(settings.agent_toml())
    assert parsed == {"device_id": "pi-0001", "broker": "mqtts://broker.example.com:8883",
                      "mqtt_username": "pi-0001", "mqtt_password": 'se"cr\\et', "ca_file": "/etc/tinyfleet/ca.pem",
                      "platform": "linux/arm/v6", "controller_key": CONTROLLER_KEY}


@pytest.mark.parametrize("device_id, broker, problem", [
    ("pi/1", "mqtt://h:1883", "device id"),
    ("pi-1", "http://h:1883", "must look like"),
    ("pi-1", "mqtt://user:pw@h:1883", "must not carry credentials"),
    ("pi-1", "mqtt://h:1883/path", "just scheme"),
    ("pi-1", "mqtt://", "must look like"),
])
def test_bad_settings_are_refused_at_the_edge(device_id: str, broker: str, problem: str) -> None:
    with pytest.raises(CredentialError, match=problem):
        DeviceSettings(device_id, broker, device_id, "secret-secret-secret", controller_key=CONTROLLER_KEY)


@pytest.mark.parametrize("key, insecure, problem", [
    (None, False, "needs its controller's public key"),
    ("ed25519:nope", False, "not an Ed25519 public key"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", False, "not an Ed25519 public key"),
])
def test_a_board_is_never_provisioned_to_obey_anyone_by_accident(key: str | None, insecure: bool, problem: str) -> None:
    with pytest.raises(CredentialError, match=problem):
        DeviceSettings("pi-1", "mqtt://h:1883", "pi-1", "secret-secret-secret", controller_key=key,
                       insecure_accept_unsigned=insecure)


def test_an_insecure_board_says_so_in_its_configuration() -> None:
    settings = DeviceSettings("pi-1", "mqtt://h:1883", "pi-1", "secret-secret-secret", insecure_accept_unsigned=True)
    assert tomllib.loads(settings.agent_toml())["insecure_accept_unsigned"] is True


def test_repr_never_shows_the_secret() -> None:
    settings = DeviceSettings("pi-1", "mqtt://h:1883", "pi-1", "TOPSECRET-123456", controller_key=CONTROLLER_KEY)
    assert "TOPSECRET" not in repr(settings)


def test_the_agent_reads_what_provisioning_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tinyfleet.agent.config import load

    settings = DeviceSettings("pi-0001", "mqtts://broker.example.com:8883", "pi-0001", 'tricky "se\\cret"\n',
                              "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n", "linux/arm/v6",
                              CONTROLLER_KEY)
    path = tmp_path / "agent.toml"
    path.write_text(settings.agent_toml())
    config = load(path, environ={})
    assert (config.device_id, config.broker, config.mqtt_username, config.mqtt_password, config.ca_file,
            str(config.platform)) == ("pi-0001", "mqtts://broker.example.com:8883", "pi-0001", 'tricky "se\\cret"\n',
                                      "/etc/tinyfleet/ca.pem", "linux/arm/v6")
    assert str(config.controller_key) == CONTROLLER_KEY
