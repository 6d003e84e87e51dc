"""Envelope encoding and strict decoding.

Every payload is one JSON object:

    {"v": "1.0", "kind": "desired", "body": {...}, "sig": null}

Compatibility rule (written here because both sides must follow it):

* `v` is "MAJOR.MINOR". A reader refuses a MAJOR it does not know (UnsupportedVersion): a new major
  may change meaning, so guessing is unsafe. An agent that refuses a desired document keeps running
  what it runs and reports the refusal.
* A MINOR bump may only add optional fields whose absence keeps the old behaviour. A reader that
  meets a *newer* minor ignores fields it does not know and applies the rest (recorded in
  `Envelope.ignored`); a reader at the *same or an older* minor treats an unknown field as an error,
  because then it can only be a typo or a forgery.
* Writers always write their own version. Removing or re-typing a field needs a new MAJOR, a new
  topic prefix (tinyfleet/v2/...) and a period where the controller writes both.

`sig` is the controller's Ed25519 signature of a desired state's body (1.1 on; protocol.signing says
what it covers). The codec only checks its shape; whether to believe it is the agent's decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tinyfleet.protocol.errors import PayloadTooLarge, ProtocolError, UnsupportedVersion
from tinyfleet.protocol.fields import Reader
from tinyfleet.protocol.messages import DesiredState, Health, ReportedState, Signature, Status

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 4  # 1.1: desired states are signed (sig.endorsements for key rotation); 1.2: update locks
# (AppSpec.update_lock, DesiredState.force, AppStatus.locked); 1.3: Status.generation (the connect handshake);
# 1.4: UpdateLockPolicy.endpoint (an update lock the app answers over HTTP)
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
MAX_PAYLOAD_BYTES = 64 * 1024

Message = DesiredState | ReportedState | Health | Status
KINDS: dict[str, type[Message]] = {cls.kind: cls for cls in (DesiredState, ReportedState, Health, Status)}


@dataclass(frozen=True)
class Envelope:
    version: tuple[int, int]
    message: Message
    signature: Signature | None = None
    ignored: tuple[str, ...] = ()  # unknown fields skipped under the newer-minor rule
    body: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as received: what was signed


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode(message: Message, signature: Signature | None = None) -> bytes:
    payload = canonical({"v": SCHEMA_VERSION, "kind": message.kind, "body": message.to_dict(),
                         "sig": signature.to_dict() if signature else None})
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(payload), MAX_PAYLOAD_BYTES)
    return payload


def _version(raw: object) -> tuple[int, int]:
    if not isinstance(raw, str):
        raise ProtocolError("v", "must be a string like \"1.0\"")
    major, dot, minor = raw.partition(".")
    if not (dot and major.isdigit() and minor.isdigit() and len(raw) <= 16):
        raise ProtocolError("v", f"{raw!r} is not MAJOR.MINOR")
    if int(major) != SCHEMA_MAJOR:
        raise UnsupportedVersion(raw, SCHEMA_VERSION)
    return int(major), int(minor)


def open_envelope(payload: bytes | bytearray | str, expect: type[Message] | None = None) -> Envelope:
    """Decode and validate one payload. Raises ProtocolError (or a subclass) naming the field."""
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(payload), MAX_PAYLOAD_BYTES)
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("", f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("", f"payload is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("", "payload must be a JSON object")
    version = _version(obj.get("v"))
    strict = version[1] <= SCHEMA_MINOR
    kind = obj.get("kind")
    if kind not in KINDS:
        raise ProtocolError("kind", f"{kind!r} is not one of: {', '.join(KINDS)}")
    cls = KINDS[kind]
    if expect is not None and cls is not expect:
        raise ProtocolError("kind", f"expected {expect.kind!r}, got {kind!r}")
    ignored: list[str] = []
    envelope = Reader(obj, "", strict=strict, ignored=ignored)
    envelope.raw("v"), envelope.raw("kind")
    body = Reader(envelope.raw("body"), "body", strict=strict, ignored=ignored)
    message = cls.read(body)
    body.done()
    signature = envelope.sub("sig", Signature.read, None)
    envelope.done()
    return Envelope(version=version, message=message, signature=signature, ignored=tuple(sorted(ignored)),
                    body=body.obj)


def decode(payload: bytes | bytearray | str, expect: type[Message] | None = None) -> Message:
    return open_envelope(payload, expect).message
