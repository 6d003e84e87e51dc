"""The agent's configuration: defaults < TOML file < TINYFLEET_* environment < command-line flags.

    device_id = "pi-0001"                       # default: from the board (serial number, machine id)
    broker = "mqtts://broker.example.com:8883"
    mqtt_username = "pi-0001"
    mqtt_password = "..."                       # this device's own secret
    ca_file = "/etc/tinyfleet/ca.pem"
    controller_key = "ed25519:..."              # the controller's signing-key.pub: only states it signed are run
    insecure_accept_unsigned = false            # true: run without a key and accept unsigned states (tests only)
    docker_host = "unix:///var/run/docker.sock"
    platform = "linux/arm/v6"                   # default: detected from the engine and the CPU
    state_dir = "/var/lib/tinyfleet"
    max_image_bytes = 104857600                 # default compressed size budget per image
    heartbeat_seconds = 30
    settle_seconds = 10                         # defaults for apps whose desired state has no health block
    deadline_seconds = 120
    min_free_bytes = 67108864
    log_level = "info"
    [registries."registry.example.com"]
    username = "..."
    password = "..."
    insecure = false                            # plain http (loopback registries always use it)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyfleet.agent.errors import ConfigError
from tinyfleet.oci.platform import Platform
from tinyfleet.oci.registry import Credentials
from tinyfleet.protocol import ProtocolError
from tinyfleet.protocol.broker import BrokerAddress
from tinyfleet.protocol.signing import PublicKey
from tinyfleet.protocol.topics import validate_device_id

DEFAULT_PATH = Path("/etc/tinyfleet/agent.toml")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "device_id": str, "broker": str, "mqtt_username": str, "mqtt_password": str, "ca_file": str,
    "docker_host": str, "platform": str, "state_dir": str, "max_image_bytes": int, "heartbeat_seconds": (int, float),
    "settle_seconds": (int, float), "deadline_seconds": (int, float), "min_free_bytes": int, "log_level": str,
    "registries": dict, "controller_key": str, "insecure_accept_unsigned": bool, "lock_lifetime_seconds": (int, float),
}
_DEFAULTS: dict[str, Any] = {
    "docker_host": "unix:///var/run/docker.sock", "state_dir": "/var/lib/tinyfleet", "max_image_bytes": 100 * 2**20,
    "heartbeat_seconds": 30, "settle_seconds": 10, "deadline_seconds": 120, "min_free_bytes": 64 * 2**20,
    "log_level": "info", "registries": {}, "lock_lifetime_seconds": 3600,
}


@dataclass(frozen=True)
class Registry:
    credentials: Credentials | None = None
    insecure: bool = False


@dataclass(frozen=True)
class AgentConfig:
    device_id: str | None
    broker: str
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    docker_host: str = _DEFAULTS["docker_host"]
    platform: Platform | None = None
    state_dir: Path = Path(_DEFAULTS["state_dir"])
    max_image_bytes: int | None = _DEFAULTS["max_image_bytes"]
    heartbeat_seconds: float = 30.0
    settle_seconds: float = 10.0
    deadline_seconds: float = 120.0
    min_free_bytes: int = _DEFAULTS["min_free_bytes"]
    log_level: str = "info"
    registries: dict[str, Registry] = field(default_factory=dict, repr=False)
    controller_key: PublicKey | None = None
    insecure_accept_unsigned: bool = False
    lock_lifetime_seconds: float = 3600.0  # an app's update lock without an expiry, counted from its mtime


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, kind in _TYPES.items():
        value = environ.get(f"TINYFLEET_{key.upper()}")
        if value is None or kind is dict:
            continue
        out[key] = _coerce(key, value, kind)
    return out


def _coerce(key: str, value: str, kind: type | tuple[type, ...]) -> Any:
    if kind is str:
        return value
    if kind is bool:
        if value.lower() not in ("1", "true", "yes", "0", "false", "no", ""):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value.lower() in ("1", "true", "yes")
    try:
        return float(value) if kind == (int, float) else int(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {value!r}") from None


def _registries(raw: dict[str, Any]) -> dict[str, Registry]:
    out = {}
    for host, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) - {"username", "password", "insecure"}:
            raise ConfigError(f"registries.{host!r} may hold only username, password and insecure")
        creds = Credentials(str(entry["username"]), str(entry.get("password", ""))) if "username" in entry else None
        out[host] = Registry(creds, bool(entry.get("insecure", False)))
    return out


def load(path: Path | None = None, flags: dict[str, Any] | None = None,
         environ: dict[str, str] | None = None) -> AgentConfig:
    environ = dict(os.environ) if environ is None else environ
    explicit = path is not None or "TINYFLEET_CONFIG" in environ
    path = path or Path(environ.get("TINYFLEET_CONFIG", DEFAULT_PATH))
    values: dict[str, Any] = dict(_DEFAULTS)
    if path.exists():
        try:
            with open(path, "rb") as f:
                from_file = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        unknown = sorted(set(from_file) - set(_TYPES))
        if unknown:
            raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(_TYPES))})")
        for key, value in from_file.items():
            kind = _TYPES[key]
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
                raise ConfigError(f"{path}: {key} has the wrong type ({type(value).__name__})")
        values.update(from_file)
    elif explicit:
        raise ConfigError(f"config file {path} does not exist")
    values.update(_from_env(environ))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    if not values.get("broker"):
        raise ConfigError("no broker configured: set broker in the config file, TINYFLEET_BROKER or --broker")
    try:
        BrokerAddress.parse(values["broker"])  # refused here, with the rest of the configuration
        device_id = validate_device_id(values["device_id"]) if values.get("device_id") else None
        platform = Platform.parse(values["platform"]) if values.get("platform") else None
        key = PublicKey.parse(values["controller_key"]) if values.get("controller_key") else None
    except (ProtocolError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    insecure = bool(values.get("insecure_accept_unsigned"))
    if key is None and not insecure:
        raise ConfigError("no controller_key configured: set it to the controller's signing-key.pub (config file, "
                          "TINYFLEET_CONTROLLER_KEY or --controller-key); only --insecure-accept-unsigned runs "
                          "without one, accepting desired states from any broker client")
    if values["heartbeat_seconds"] <= 0 or values["deadline_seconds"] < values["settle_seconds"]:
        raise ConfigError("heartbeat_seconds must be positive and deadline_seconds at least settle_seconds")
    if values["lock_lifetime_seconds"] <= 0:
        raise ConfigError("lock_lifetime_seconds must be positive (a lock left by a dead process must expire)")
    return AgentConfig(
        device_id=device_id, broker=values["broker"], mqtt_username=values.get("mqtt_username"),
        mqtt_password=values.get("mqtt_password"), ca_file=values.get("ca_file"), docker_host=values["docker_host"],
        platform=platform, state_dir=Path(values["state_dir"]),
        max_image_bytes=values["max_image_bytes"] or None, heartbeat_seconds=float(values["heartbeat_seconds"]),
        settle_seconds=float(values["settle_seconds"]), deadline_seconds=float(values["deadline_seconds"]),
        min_free_bytes=int(values["min_free_bytes"]), log_level=values["log_level"],
        registries=_registries(values.get("registries") or {}), controller_key=key,
        insecure_accept_unsigned=insecure, lock_lifetime_seconds=float(values["lock_lifetime_seconds"]))
