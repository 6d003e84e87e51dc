"""The messages of the wire contract, as frozen dataclasses.

Each class reads itself from a decoded JSON object (`read`, strict, via protocol.fields.Reader) and
writes itself back (`to_dict`). Inside tinyfleet these objects are trusted: everything was checked
at the edge when they were built.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.fields import DIGEST_RE, Reader, check_num, check_str
from tinyfleet.protocol.topics import validate_device_id

APP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# host[:port]/path@sha256:<64 hex>; the full reference grammar lives in oci.reference, this only
# makes sure the image is pinned by digest and carries nothing exotic.
PINNED_IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,254}@sha256:[0-9a-f]{64}")
MAX_APPS = 32
MAX_ENV = 128
MAX_PORTS = 32


class RestartPolicy(StrEnum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


class Phase(StrEnum):
    PENDING = "pending"
    VERIFYING = "verifying"
    PULLING = "pulling"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


def _enum(reader: Reader, key: str, enum: type[Enum], default: Enum) -> Any:
    value = reader.str(key, default.value, max_len=32)
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise ProtocolError(reader.at(key), f"{value!r} is not one of: {choices}") from None


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int
    protocol: str = "tcp"
    # Loopback unless the operator asks for more: a board's services are not exposed by accident.
    host_ip: str = "127.0.0.1"

    @classmethod
    def read(cls, r: Reader) -> PortMapping:
        proto = r.str("protocol", "tcp", max_len=16)
        if proto not in ("tcp", "udp"):
            raise ProtocolError(r.at("protocol"), f"{proto!r} is not tcp or udp")
        return cls(container_port=r.int("container_port", lo=1, hi=65535),
                   host_port=r.int("host_port", lo=1, hi=65535), protocol=proto,
                   host_ip=r.str("host_ip", "127.0.0.1", max_len=45,
                                 pattern=re.compile(r"[0-9a-fA-F.:]+")))

    def to_dict(self) -> dict[str, Any]:
        return {"container_port": self.container_port, "host_port": self.host_port,
                "protocol": self.protocol, "host_ip": self.host_ip}


@dataclass(frozen=True)
class HealthPolicy:
    """How the agent decides a new container is good. With a Docker HEALTHCHECK in the image the
    container must report healthy; without one it must run `settle_seconds` without a restart. Either
    way it must get there within `deadline_seconds` or it is rolled back."""

    settle_seconds: float = 10.0
    deadline_seconds: float = 120.0

    @classmethod
    def read(cls, r: Reader) -> HealthPolicy:
        settle = r.num("settle_seconds", 10.0, hi=86400)
        deadline = r.num("deadline_seconds", 120.0, lo=1, hi=86400)
        if deadline < settle:
            raise ProtocolError(r.at("deadline_seconds"), f"{deadline:g} is shorter than settle_seconds "
                                                          f"{settle:g}")
        return cls(settle, deadline)

    def to_dict(self) -> dict[str, Any]:
        return {"settle_seconds": self.settle_seconds, "deadline_seconds": self.deadline_seconds}


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpus: float | None = None

    @classmethod
    def read(cls, r: Reader) -> Limits:
        return cls(memory_bytes=r.int("memory_bytes", None, lo=4 * 1024 * 1024, hi=2**40),
                   cpus=r.num("cpus", None, lo=0.01, hi=1024))

    def to_dict(self) -> dict[str, Any]:
        return {"memory_bytes": self.memory_bytes, "cpus": self.cpus}


LOCK_PATH_RE = re.compile(r"/[A-Za-z0-9._~/?=&%-]{0,255}")


@dataclass(frozen=True)
class LockEndpoint:
    """An update lock the app answers over HTTP instead of a file (1.4), for apps without a writable file
    system. The agent asks `GET <path>` on `port` of the running container (its bridge address) before
    switching: 423 means held (JSON {"holder", "expires_in"}); anything else, or no answer, means free,
    so a dead app can never leave a lock behind (agent.locks)."""

    port: int
    path: str = "/update-lock"

    @classmethod
    def read(cls, r: Reader) -> LockEndpoint:
        return cls(port=r.int("port", lo=1, hi=65535), path=r.str("path", "/update-lock", pattern=LOCK_PATH_RE))

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "path": self.path}


@dataclass(frozen=True)
class UpdateLockPolicy:
    """How long the release lets an app's update lock hold it back (1.2). The lock itself is the app's
    (a file it creates in /run/tinyfleet/, or its answer at `endpoint`, see agent.locks); this is the
    release's patience with it."""

    max_wait_seconds: float | None = None  # None: wait until the lock is released or expires
    endpoint: LockEndpoint | None = None  # 1.4: also ask the app itself (HTTP) whether it holds its lock

    @classmethod
    def read(cls, r: Reader) -> UpdateLockPolicy:
        return cls(max_wait_seconds=r.num("max_wait_seconds", None, hi=30 * 86400),
                   endpoint=r.sub("endpoint", LockEndpoint.read, None))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_wait_seconds": self.max_wait_seconds}
        if self.endpoint is not None:  # absent unless set: documents of 1.2 encode (and sign) as before
            out["endpoint"] = self.endpoint.to_dict()
        return out


@dataclass(frozen=True)
class AppSpec:
    name: str
    image: str  # repo@sha256:<index or manifest digest>
    max_bytes: int | None = None  # compressed size budget; None: the agent's default
    env: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] | None = None
    ports: tuple[PortMapping, ...] = ()
    restart: RestartPolicy = RestartPolicy.UNLESS_STOPPED
    health: HealthPolicy | None = None  # None: the agent's configured defaults
    limits: Limits = field(default_factory=Limits)
    update_lock: UpdateLockPolicy | None = None  # 1.2; None: an app's lock holds the update until it expires

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]

    @property
    def repository(self) -> str:
        return self.image.rsplit("@", 1)[0]

    def spec_hash(self) -> str:
        """A short, stable hash of everything that shapes the container; a change means re-create.
        The update-lock policy is left out: it says when to switch, not what to run."""
        cached = self.__dict__.get("_spec_hash")  # computed once: a plan asks for it many times per pass
        if cached is None:
            shape = {k: v for k, v in self.to_dict().items() if k != "update_lock"}
            canonical = json.dumps(shape, sort_keys=True, separators=(",", ":"))
            cached = hashlib.sha256(canonical.encode()).hexdigest()[:16]
            object.__setattr__(self, "_spec_hash", cached)
        return cached

    @classmethod
    def read(cls, r: Reader) -> AppSpec:
        command = r.raw("command", None)
        if command is not None:
            if not isinstance(command, list) or len(command) > 64:
                raise ProtocolError(r.at("command"), "must be a list of at most 64 strings")
            command = tuple(check_str(c, f"{r.at('command')}[{i}]", max_len=1024, allow_empty=True)
                            for i, c in enumerate(command))
        return cls(
            name=r.str("name", max_len=63, pattern=APP_NAME_RE),
            image=r.str("image", max_len=330, pattern=PINNED_IMAGE_RE),
            max_bytes=r.int("max_bytes", None, lo=1, hi=2**40),
            env=r.str_map("env", max_items=MAX_ENV, key_pattern=ENV_KEY_RE),
            command=command,
            ports=r.obj_list("ports", PortMapping.read, max_items=MAX_PORTS),
            restart=_enum(r, "restart", RestartPolicy, RestartPolicy.UNLESS_STOPPED),
            health=r.sub("health", HealthPolicy.read, None),
            limits=r.sub("limits", Limits.read, Limits()),
            update_lock=r.sub("update_lock", UpdateLockPolicy.read, None),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "image": self.image, "max_bytes": self.max_bytes,
               "env": dict(self.env), "command": list(self.command) if self.command is not None else None,
               "ports": [p.to_dict() for p in self.ports], "restart": self.restart.value,
               "health": self.health.to_dict() if self.health else None, "limits": self.limits.to_dict()}
        if self.update_lock is not None:  # absent unless set: documents of 1.1 encode (and sign) as before
            out["update_lock"] = self.update_lock.to_dict()
        return out


# base64 of a 32-byte key / a 64-byte signature, padded: checked here so a garbled field is refused by name
PUBLIC_KEY_RE = re.compile(r"ed25519:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
SIGNATURE_VALUE_RE = re.compile(r"[A-Za-z0-9+/]{85}[AQgw]==")
KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
MAX_ENDORSEMENTS = 8


def _encoded(r: Reader, key: str, pattern: re.Pattern[str], what: str) -> str:
    value = r.str(key, max_len=88)
    if not pattern.fullmatch(value):
        raise ProtocolError(r.at(key), f"is not {what}")
    return value


@dataclass(frozen=True)
class Endorsement:
    """`by` (a key id) vouches for `key`: a signature by `by` over protocol.signing.endorsement_message(key).
    A controller that rotated its signing key sends the chain from its first key with every document, so
    a board that still trusts an older key moves to the new one without being re-flashed."""

    key: str  # ed25519:<base64>
    by: str  # key id of the endorsing key
    value: str

    @classmethod
    def read(cls, r: Reader) -> Endorsement:
        return cls(key=_encoded(r, "key", PUBLIC_KEY_RE, "an Ed25519 public key (ed25519:<base64 of 32 bytes>)"),
                   by=_encoded(r, "by", KEY_ID_RE, "a key id (16 hex digits)"),
                   value=_encoded(r, "value", SIGNATURE_VALUE_RE, "base64 of a 64-byte Ed25519 signature"))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "by": self.by, "value": self.value}


@dataclass(frozen=True)
class Signature:
    """A detached signature over the canonical body (protocol.signing.desired_message), by the key
    `key_id`, with the endorsements that lead to that key from the controller's earlier keys."""

    alg: str
    key_id: str
    value: str
    endorsements: tuple[Endorsement, ...] = ()

    @classmethod
    def read(cls, r: Reader) -> Signature:
        alg = r.str("alg", max_len=32)
        if alg != "ed25519":
            raise ProtocolError(r.at("alg"), f"{alg!r} is not a supported signature algorithm (ed25519)")
        return cls(alg=alg, key_id=_encoded(r, "key_id", KEY_ID_RE, "a key id (16 hex digits)"),
                   value=_encoded(r, "value", SIGNATURE_VALUE_RE, "base64 of a 64-byte Ed25519 signature"),
                   endorsements=r.obj_list("endorsements", Endorsement.read, max_items=MAX_ENDORSEMENTS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alg": self.alg, "key_id": self.key_id, "value": self.value}
        if self.endorsements:
            out["endorsements"] = [e.to_dict() for e in self.endorsements]
        return out


@dataclass(frozen=True)
class DesiredState:
    device_id: str
    generation: int  # strictly increasing per device; an agent ignores anything not newer
    apps: tuple[AppSpec, ...] = ()
    issued_at: float | None = None
    force: tuple[str, ...] = ()  # 1.2: apps to update now, whatever their update lock says (`device update --force`)

    kind = "desired"

    @classmethod
    def read(cls, r: Reader) -> DesiredState:
        apps = r.obj_list("apps", AppSpec.read, max_items=MAX_APPS)
        names = [a.name for a in apps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ProtocolError(r.at("apps"), f"app name {dupes[0]!r} appears more than once")
        force = r.raw("force", [])
        if not isinstance(force, list) or len(force) > MAX_APPS:
            raise ProtocolError(r.at("force"), f"must be a list of at most {MAX_APPS} app names")
        force = tuple(check_str(n, f"{r.at('force')}[{i}]", max_len=63, pattern=APP_NAME_RE)
                      for i, n in enumerate(force))
        return cls(device_id=validate_device_id(r.raw("device_id"), r.at("device_id")),
                   generation=r.int("generation", lo=0), apps=apps,
                   issued_at=r.num("issued_at", None, hi=1e11), force=force)

    def to_dict(self) -> dict[str, Any]:
        out = {"device_id": self.device_id, "generation": self.generation,
               "apps": [a.to_dict() for a in self.apps], "issued_at": self.issued_at}
        if self.force:
            out["force"] = list(self.force)
        return out

    def app(self, name: str) -> AppSpec | None:
        return next((a for a in self.apps if a.name == name), None)


@dataclass(frozen=True)
class LockHeld:
    """An app's update lock holding back a downloaded, verified update (1.2)."""

    holder: str
    since: float
    expires: float | None = None  # when the agent goes ahead anyway (lock expiry or the release's max wait)

    @classmethod
    def read(cls, r: Reader) -> LockHeld:
        return cls(holder=r.str("holder", max_len=128, allow_empty=True), since=r.num("since", hi=1e11),
                   expires=r.num("expires", None, hi=1e11))

    def to_dict(self) -> dict[str, Any]:
        return {"holder": self.holder, "since": self.since, "expires": self.expires}


@dataclass(frozen=True)
class AppStatus:
    name: str
    phase: Phase
    desired_image: str | None = None
    current_image: str | None = None
    error: str | None = None
    restart_count: int = 0
    health: str = "none"  # healthy | unhealthy | starting | none
    generation: int | None = None  # generation of the spec the running container was made from
    locked: LockHeld | None = None  # 1.2: the update is downloaded and waits for the app's lock (phase pending)

    @classmethod
    def read(cls, r: Reader) -> AppStatus:
        health = r.str("health", "none", max_len=16)
        if health not in ("healthy", "unhealthy", "starting", "none"):
            raise ProtocolError(r.at("health"), f"{health!r} is not healthy, unhealthy, starting or none")
        return cls(name=r.str("name", max_len=63, pattern=APP_NAME_RE),
                   phase=_enum(r, "phase", Phase, Phase.PENDING),
                   desired_image=r.str("desired_image", None, max_len=330),
                   current_image=r.str("current_image", None, max_len=330),
                   error=r.str("error", None, max_len=2048), restart_count=r.int("restart_count", 0),
                   health=health, generation=r.int("generation", None), locked=r.sub("locked", LockHeld.read, None))

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "phase": self.phase.value, "desired_image": self.desired_image,
               "current_image": self.current_image, "error": self.error,
               "restart_count": self.restart_count, "health": self.health, "generation": self.generation}
        if self.locked is not None:
            out["locked"] = self.locked.to_dict()
        return out


@dataclass(frozen=True)
class ReportedState:
    device_id: str
    generation: int  # the newest desired generation the agent accepted
    apps: tuple[AppStatus, ...] = ()
    error: str | None = None  # why the newest desired document was rejected, if it was
    rejected_generation: int | None = None
    platform: str | None = None
    agent_version: str | None = None
    ts: float | None = None

    kind = "reported"

    @classmethod
    def read(cls, r: Reader) -> ReportedState:
        return cls(device_id=validate_device_id(r.raw("device_id"), r.at("device_id")),
                   generation=r.int("generation", lo=0),
                   apps=r.obj_list("apps", AppStatus.read, max_items=MAX_APPS),
                   error=r.str("error", None, max_len=2048),
                   rejected_generation=r.int("rejected_generation", None),
                   platform=r.str("platform", None, max_len=32),
                   agent_version=r.str("agent_version", None, max_len=32),
                   ts=r.num("ts", None, hi=1e11))

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "generation": self.generation,
                "apps": [a.to_dict() for a in self.apps], "error": self.error,
                "rejected_generation": self.rejected_generation, "platform": self.platform,
                "agent_version": self.agent_version, "ts": self.ts}

    def app(self, name: str) -> AppStatus | None:
        return next((a for a in self.apps if a.name == name), None)


@dataclass(frozen=True)
class Health:
    device_id: str
    ts: float
    uptime_seconds: float
    engine_reachable: bool
    agent_version: str
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    disk_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    cpu_temp_c: float | None = None
    throttled: int | None = None  # Raspberry Pi get_throttled bits
    agent_rss_bytes: int | None = None

    kind = "health"

    @classmethod
    def read(cls, r: Reader) -> Health:
        load = r.raw("load", [0.0, 0.0, 0.0])
        if not isinstance(load, list) or len(load) != 3:
            raise ProtocolError(r.at("load"), "must be a list of three numbers")
        return cls(device_id=validate_device_id(r.raw("device_id"), r.at("device_id")),
                   ts=r.num("ts", hi=1e11), uptime_seconds=r.num("uptime_seconds", hi=1e10),
                   engine_reachable=r.bool("engine_reachable"),
                   agent_version=r.str("agent_version", max_len=32),
                   load=tuple(check_num(x, f"{r.at('load')}[{i}]", hi=1e6)  # type: ignore[arg-type]
                              for i, x in enumerate(load)),
                   mem_total_bytes=r.int("mem_total_bytes", None),
                   mem_available_bytes=r.int("mem_available_bytes", None),
                   disk_total_bytes=r.int("disk_total_bytes", None),
                   disk_free_bytes=r.int("disk_free_bytes", None),
                   cpu_temp_c=r.num("cpu_temp_c", None, lo=-100, hi=300),
                   throttled=r.int("throttled", None, hi=2**32),
                   agent_rss_bytes=r.int("agent_rss_bytes", None))

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "ts": self.ts, "uptime_seconds": self.uptime_seconds,
                "engine_reachable": self.engine_reachable, "agent_version": self.agent_version,
                "load": list(self.load), "mem_total_bytes": self.mem_total_bytes,
                "mem_available_bytes": self.mem_available_bytes,
                "disk_total_bytes": self.disk_total_bytes, "disk_free_bytes": self.disk_free_bytes,
                "cpu_temp_c": self.cpu_temp_c, "throttled": self.throttled,
                "agent_rss_bytes": self.agent_rss_bytes}


@dataclass(frozen=True)
class Status:
    """A board's presence. Online, it is also the connect handshake (1.3): `generation` is the desired
    generation the agent has accepted (0: none yet), and a controller holding a newer document sends it
    again, so a board does not depend on the broker's retained copy alone. None: an agent before 1.3."""

    device_id: str
    online: bool
    ts: float | None = None
    agent_version: str | None = None
    platform: str | None = None
    generation: int | None = None  # 1.3

    kind = "status"

    @classmethod
    def read(cls, r: Reader) -> Status:
        return cls(device_id=validate_device_id(r.raw("device_id"), r.at("device_id")),
                   online=r.bool("online"), ts=r.num("ts", None, hi=1e11),
                   agent_version=r.str("agent_version", None, max_len=32),
                   platform=r.str("platform", None, max_len=32), generation=r.int("generation", None))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device_id": self.device_id, "online": self.online, "ts": self.ts,
                               "agent_version": self.agent_version, "platform": self.platform}
        if self.generation is not None:  # left out when None: an offline status encodes as before
            out["generation"] = self.generation
        return out


__all__ = ["DIGEST_RE", "AppSpec", "AppStatus", "DesiredState", "Endorsement", "Health", "HealthPolicy", "Limits",
           "LockEndpoint", "LockHeld", "Phase", "UpdateLockPolicy",
           "PortMapping", "ReportedState", "RestartPolicy", "Signature", "Status"]
