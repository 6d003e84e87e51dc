"""What a desired state's signature covers, and how a board decides whether to believe it.

The controller signs `desired_message(body)`: a context string, then the body as canonical JSON
(sorted keys, no spaces, Python's shortest float repr) - the body holds the device id, the generation
and every app, so a signature for one board or one generation is worthless for any other. The board
checks the body as it arrived (fields a newer minor added included), not its own re-encoding.

Key rotation: a controller that moves to a new key endorses it with the old one
(`endorsement_message(new)` signed by the old key) and sends the chain of endorsements from its first
key with every signature. A board follows the chain from the key it trusts to the signing key; once
a document signed by the new key is accepted the board trusts only the new key (see agent.intake), so
a retired key cannot be used against it again.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyfleet.protocol import ed25519
from tinyfleet.protocol.codec import canonical
from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.messages import PUBLIC_KEY_RE, Signature

KEY_PREFIX = "ed25519:"
DESIRED_CONTEXT = b"tinyfleet/v1 desired state\x00"
ENDORSEMENT_CONTEXT = b"tinyfleet/v1 key endorsement\x00"


@dataclass(frozen=True, repr=False)
class PublicKey:
    raw: bytes

    def __repr__(self) -> str:
        return f"PublicKey({self}, id {self.key_id})"

    @classmethod
    def parse(cls, text: str, what: str = "controller_key") -> PublicKey:
        """`ed25519:<base64 of the 32-byte key>`, as the controller writes it to signing-key.pub."""
        text = text.strip()
        if not PUBLIC_KEY_RE.fullmatch(text):
            raise ProtocolError(what, "is not an Ed25519 public key (ed25519:<base64 of 32 bytes>)")
        raw = base64.b64decode(text[len(KEY_PREFIX):], validate=True)
        try:
            ed25519.decode_point(raw)
        except ed25519.BadSignature as exc:
            raise ProtocolError(what, f"is not a valid Ed25519 key: {exc}") from exc
        return cls(raw)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def __str__(self) -> str:
        return KEY_PREFIX + base64.b64encode(self.raw).decode()


class SignatureRefused(Exception):
    """The document is not signed by a key this board trusts; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def desired_message(body: Mapping[str, Any]) -> bytes:
    return DESIRED_CONTEXT + canonical(body)


def endorsement_message(key: PublicKey) -> bytes:
    return ENDORSEMENT_CONTEXT + str(key).encode()


def _verify(key: PublicKey, message: bytes, value: str, what: str) -> None:
    try:
        ed25519.verify(key.raw, message, base64.b64decode(value, validate=True))
    except ed25519.BadSignature as exc:
        raise SignatureRefused(f"{what} does not verify with key {key.key_id}: {exc}") from exc


def signer(signature: Signature | None, trusted: PublicKey) -> PublicKey:
    """The key that made `signature`, if `trusted` is that key or endorsed it through the chain the
    signature carries; raises SignatureRefused otherwise. Checks the endorsements, not the document."""
    if signature is None:
        raise SignatureRefused("unsigned (this board accepts only states signed by its controller)")
    key = trusted
    if signature.key_id != key.key_id:
        chain = list(signature.endorsements)
        start = next((i for i, e in enumerate(chain) if e.by == key.key_id), None)
        if start is None:
            raise SignatureRefused(f"signed by key {signature.key_id}, which this board's key {key.key_id} "
                                   "has not endorsed")
        for endorsement in chain[start:]:
            if endorsement.by != key.key_id:
                raise SignatureRefused(f"endorsement chain is broken at key {endorsement.by}")
            new = PublicKey.parse(endorsement.key, "sig.endorsements.key")
            _verify(key, endorsement_message(new), endorsement.value, f"endorsement of key {new.key_id}")
            key = new
            if key.key_id == signature.key_id:
                break
        if key.key_id != signature.key_id:
            raise SignatureRefused(f"signed by key {signature.key_id}, not at the end of its endorsement chain")
    return key


def check(body: Mapping[str, Any], signature: Signature | None, trusted: PublicKey) -> PublicKey:
    """Verify a desired state's signature; return the key that signed it (the board's trust from now on)."""
    key = signer(signature, trusted)
    assert signature is not None
    _verify(key, desired_message(body), signature.value, "signature")
    return key
