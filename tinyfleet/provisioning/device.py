"""What one device is told: its id, broker and own MQTT identity, validated at the edge into a frozen
dataclass, and rendered as the agent's /etc/tinyfleet/agent.toml (the contract with the agent)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.signing import PublicKey
from tinyfleet.protocol.topics import validate_device_id
from tinyfleet.provisioning.errors import CredentialError

CONFIG_PATH = "/etc/tinyfleet/agent.toml"
CA_PATH = "/etc/tinyfleet/ca.pem"
VENV = "/opt/tinyfleet"
PLATFORM = re.compile(r"linux/(amd64|arm64|arm/v[5-8]|386|riscv64)")


@dataclass(frozen=True)
class DeviceSettings:
    device_id: str
    broker: str
    mqtt_username: str
    mqtt_password: str
    ca_pem: str | None = None
    platform: str | None = None
    controller_key: str | None = None  # ed25519:...: the only signer whose desired states the board runs
    insecure_accept_unsigned: bool = False

    def __post_init__(self) -> None:
        if self.controller_key is not None:
            try:
                key = PublicKey.parse(self.controller_key, "--controller-key")
                object.__setattr__(self, "controller_key", str(key))
            except ProtocolError as exc:
                raise CredentialError(str(exc)) from exc
        elif not self.insecure_accept_unsigned:
            raise CredentialError("a board needs its controller's public key: --controller-key FILE (the controller's "
                                  "signing-key.pub); --insecure-accept-unsigned lets any broker client command it")
        try:
            validate_device_id(self.device_id)
        except ProtocolError as exc:
            raise CredentialError(f"device id: {exc}") from exc
        url = urlsplit(self.broker)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise CredentialError(f"broker {self.broker!r} must look like mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        if url.username or url.password:
            raise CredentialError("the broker URL must not carry credentials; each device gets its own")
        if url.path not in ("", "/") or url.query or url.fragment:
            raise CredentialError(f"broker {self.broker!r} must be just scheme://host[:port]")
        if not self.mqtt_username or not self.mqtt_password:
            raise CredentialError("each device needs its own MQTT username and password")
        if self.platform is not None and not PLATFORM.fullmatch(self.platform):
            raise CredentialError(f"platform {self.platform!r} is not like linux/arm/v6, linux/arm64, linux/amd64")
        if self.ca_pem is not None and "-----BEGIN CERTIFICATE-----" not in self.ca_pem:
            raise CredentialError("the CA file is not a PEM certificate")

    def __repr__(self) -> str:  # never print the secret, not even in a traceback
        return (f"DeviceSettings(device_id={self.device_id!r}, broker={self.broker!r}, "
                f"mqtt_username={self.mqtt_username!r}, mqtt_password=<hidden>)")

    def agent_toml(self) -> str:
        values: list[tuple[str, str | int | bool]] = [("device_id", self.device_id), ("broker", self.broker),
                                               ("mqtt_username", self.mqtt_username),
                                               ("mqtt_password", self.mqtt_password)]
        if self.ca_pem is not None:
            values.append(("ca_file", CA_PATH))
        if self.platform is not None:
            values.append(("platform", self.platform))
        if self.controller_key is not None:
            values.append(("controller_key", self.controller_key))
        else:
            values.append(("insecure_accept_unsigned", True))
        head = "# tinyfleet agent configuration, written by `tinyfleet provision`; holds this device's secret\n"
        return head + "".join(f"{key} = {toml_value(value)}\n" for key, value in values)


def toml_value(value: str | int | bool) -> str:
    """A TOML basic string (or integer/boolean) with every character that needs it escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    out = []
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
