"""The signed golden document: the controller's signer produces it byte for byte, the board's verifier
accepts it, and any change to what it covers breaks it. Both sides agree on what is signed."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import GOLDEN
from tinyfleet import protocol
from tinyfleet.controller.signing import Signer, _public
from tinyfleet.protocol.codec import open_envelope
from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.signing import PublicKey, SignatureRefused, check

SIGNED = GOLDEN / "desired-1.1-signed.json"
SIGNED_1_2 = GOLDEN / "desired-1.2-signed-lock.json"  # update locks: update_lock and force are covered too
KEY = PublicKey.parse((GOLDEN / "controller-key.pub").read_text())
SEED = bytes(range(32))  # the golden key's private half; Ed25519 signatures are deterministic


@pytest.mark.parametrize("golden", [SIGNED, SIGNED_1_2], ids=["1.1", "1.2"])
def test_the_controller_signs_the_golden_document_exactly_as_stored(golden) -> None:  # type: ignore[no-untyped-def]
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    signer = Signer(private, _public(private))
    assert signer.public == KEY
    envelope = open_envelope(golden.read_bytes())
    assert signer.sign(envelope.message) == envelope.signature  # type: ignore[arg-type]


def test_the_board_accepts_the_golden_document_however_it_is_laid_out() -> None:
    doc = json.loads(SIGNED.read_bytes())
    for layout in (json.dumps(doc), json.dumps(doc, indent=4, sort_keys=False), json.dumps(doc, ensure_ascii=True)):
        envelope = open_envelope(layout)
        assert check(envelope.body, envelope.signature, KEY) == KEY


@pytest.mark.parametrize("path, value", [
    (("body", "device_id"), "pi-zero-0002"),  # another board
    (("body", "generation"), 8),  # another generation
    (("body", "apps", 0, "env", "SITE"), "south-1"),  # any field of any app
    (("body", "issued_at"), 1795000000.25),
])
def test_a_change_to_anything_covered_breaks_the_signature(path: tuple, value: object) -> None:  # type: ignore[type-arg]
    doc = json.loads(SIGNED.read_bytes())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    envelope = open_envelope(json.dumps(doc))
    with pytest.raises(SignatureRefused, match="signature does not verify"):
        check(envelope.body, envelope.signature, KEY)


@pytest.mark.parametrize("change", ["force", "max_wait"])
def test_a_forged_force_or_lock_policy_breaks_the_signature(change: str) -> None:
    doc = json.loads(SIGNED_1_2.read_bytes())
    if change == "force":
        doc["body"]["force"] = ["relay", "sensor"]  # forcing an app the operator did not force
    else:
        doc["body"]["apps"][0]["update_lock"]["max_wait_seconds"] = 0
    envelope = open_envelope(json.dumps(doc))
    with pytest.raises(SignatureRefused, match="signature does not verify"):
        check(envelope.body, envelope.signature, KEY)


@pytest.mark.parametrize("text", ["", "ed25519:", "ed25519:" + "A" * 44, "rsa:" + "A" * 43 + "=",
                                  str(KEY).replace("ed25519:", "ED25519:")])
def test_a_key_that_is_not_an_ed25519_key_is_refused(text: str) -> None:
    with pytest.raises(ProtocolError, match="controller_key"):
        PublicKey.parse(text)


def test_an_unsigned_document_is_refused_by_a_board_with_a_key() -> None:
    envelope = open_envelope(protocol.encode(open_envelope(SIGNED.read_bytes()).message))
    with pytest.raises(SignatureRefused, match="unsigned"):
        check(envelope.body, envelope.signature, KEY)
