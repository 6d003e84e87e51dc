"""Which desired documents an agent accepts, ignores or rejects - and that a rejection changes nothing
but the reported reason. Signatures: only the controller's key (or a key it endorsed) is believed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.conftest import GOLDEN
from tinyfleet import protocol
from tinyfleet.agent.intake import intake
from tinyfleet.agent.state import AgentState
from tinyfleet.controller.signing import Signer
from tinyfleet.protocol import AppSpec, DesiredState, Signature

IMAGE = "127.0.0.1:5000/acme/web@sha256:" + "a" * 64
OTHER_IMAGE = IMAGE.replace("a" * 64, "b" * 64)
CONTROLLER = Signer.generate()
ATTACKER = Signer.generate()
KEY = CONTROLLER.public
ACCEPTED = DesiredState("pi-1", 5, (AppSpec("web", IMAGE),))
RUNNING = AgentState(accepted_generation=5, desired=ACCEPTED)


def rotated(old: Signer) -> Signer:
    """The controller after `tinyfleet controller rotate-key`: a new key, endorsed by the old one."""
    new = Signer.generate()
    return Signer(new.private, new.public, (*old.chain, old.endorse(new.public)))


ROTATED = rotated(CONTROLLER)
ROTATED_TWICE = rotated(ROTATED)


def doc(generation: int, device: str = "pi-1", image: str = OTHER_IMAGE) -> DesiredState:
    return DesiredState(device, generation, (AppSpec("web", image),))


def signed(desired: DesiredState, by: Signer = CONTROLLER) -> bytes:
    return protocol.encode(desired, by.sign(desired))


def with_sig(desired: DesiredState, **sig: object) -> bytes:
    envelope = json.loads(signed(desired))
    envelope["sig"].update(sig)
    return json.dumps(envelope).encode()


def tampered(desired: DesiredState) -> bytes:
    """Signed, then changed on the way (another image)."""
    envelope = json.loads(signed(desired))
    envelope["body"]["apps"][0]["image"] = IMAGE.replace("a" * 64, "e" * 64)
    return json.dumps(envelope).encode()


GOOD_SIG = CONTROLLER.sign(doc(6)).value


@pytest.mark.parametrize(("raw", "outcome", "reason"), [
    (signed(doc(6)), "accepted", None),
    (signed(ACCEPTED), "ignored", None),  # the retained copy, re-delivered on reconnect
    (protocol.encode(ACCEPTED), "ignored", None),  # ... identical: it changes nothing, whoever sent it
    (signed(doc(4)), "rejected", "generation 4 is older than the accepted 5 (a replay"),
    (signed(doc(5)), "rejected", "generation 5 was already accepted with a different body"),
    (signed(doc(9, device="pi-2")), "rejected", "addressed to 'pi-2'"),
    (protocol.encode(doc(6)), "rejected", "signature refused: unsigned"),
    (protocol.encode(doc(5)), "rejected", "signature refused: unsigned"),
    (signed(doc(6), ATTACKER), "rejected", f"signed by key {ATTACKER.public.key_id}, which this board's key"),
    (tampered(doc(6)), "rejected", "signature does not verify"),
    (with_sig(doc(6), value=GOOD_SIG[:40]), "rejected", "sig.value: is not base64 of a 64-byte Ed25519 signature"),
    (with_sig(doc(6), value="!" * 86 + "=="), "rejected", "sig.value: is not base64"),
    (with_sig(doc(6), value="A" * 30_000), "rejected", "sig.value: is 30000 characters, over the limit of 88"),
    (with_sig(doc(6), value="A" * 70_000), "rejected", "over the 65536-byte limit"),
    (with_sig(doc(6), value=GOOD_SIG[::-1][2:] + "=="), "rejected", "signature"),
    (with_sig(doc(6), alg="rsa"), "rejected", "sig.alg: 'rsa' is not a supported signature algorithm"),
    (with_sig(doc(6), key_id="zz"), "rejected", "sig.key_id: is not a key id"),
    (with_sig(doc(6), key_id=ATTACKER.public.key_id,
              endorsements=[{"key": str(ATTACKER.public), "by": KEY.key_id, "value": GOOD_SIG}]),
     "rejected", "endorsement of key"),
    (b"not json at all", "rejected", "not JSON"),
    (b'{"v": "1.1", "kind": "desired", "body": {"device_id": "pi-1", "generation": 7, "apps": 3}}', "rejected",
     "body.apps: must be a list"),
    (protocol.encode(protocol.Status("pi-1", True)), "rejected", "expected 'desired'"),
    ((GOLDEN / "desired-2.0-unknown-major.json").read_bytes(), "rejected", "upgrade tinyfleet"),
    (b"{" * 70_000, "rejected", "over the 65536-byte limit"),
])
def test_intake(raw: bytes, outcome: str, reason: str | None) -> None:
    verdict = intake(raw, RUNNING, "pi-1", KEY)
    assert verdict.outcome == outcome, verdict.reason
    if outcome == "rejected":
        assert reason in (verdict.reason or "")
        assert verdict.state.desired == RUNNING.desired and verdict.state.accepted_generation == 5
        assert verdict.state.rejection is not None and reason in verdict.state.rejection[1]
        assert verdict.state.trusted_key is None
    elif outcome == "accepted":
        assert verdict.state.accepted_generation == 6 and verdict.state.rejection is None
    else:
        assert verdict.state is RUNNING


def test_a_refusal_reports_the_generation_it_could_read_and_only_a_valid_one() -> None:
    bad = json.dumps({"v": "1.1", "kind": "desired", "body": {"device_id": "pi-1", "generation": 12, "apps": {}}})
    assert intake(bad.encode(), RUNNING, "pi-1", KEY).state.rejection[0] == 12  # type: ignore[index]
    negative = json.dumps({"v": "1.1", "kind": "desired", "body": {"device_id": "pi-1", "generation": -5}})
    generation, reason = intake(negative.encode(), RUNNING, "pi-1", KEY).state.rejection  # type: ignore[misc]
    assert generation is None and "body.generation: -5" in reason  # the report stays valid; the reason says why


def test_a_board_follows_its_controllers_rotated_key_and_then_trusts_only_the_new_one() -> None:
    verdict = intake(signed(doc(6), ROTATED), RUNNING, "pi-1", KEY)
    assert verdict.outcome == "accepted" and verdict.state.trusted_key == str(ROTATED.public)
    after = verdict.state
    assert intake(signed(doc(7), CONTROLLER), after, "pi-1", KEY).outcome == "rejected", "the old key is retired"
    assert intake(signed(doc(7), ROTATED), after, "pi-1", KEY).outcome == "accepted"
    assert intake(signed(doc(7), ROTATED_TWICE), after, "pi-1", KEY).outcome == "accepted"


def test_a_board_that_missed_a_rotation_follows_the_whole_chain() -> None:
    verdict = intake(signed(doc(6), ROTATED_TWICE), RUNNING, "pi-1", KEY)
    assert verdict.outcome == "accepted" and verdict.state.trusted_key == str(ROTATED_TWICE.public)


def test_a_re_provisioned_board_starts_again_from_its_configured_key() -> None:
    moved = intake(signed(doc(6), ROTATED), RUNNING, "pi-1", KEY).state
    fresh = Signer.generate()
    assert moved.trust(fresh.public) == fresh.public
    assert intake(signed(doc(7), fresh), moved, "pi-1", fresh.public).outcome == "accepted"


def test_an_endorsement_chain_cannot_be_extended_by_anyone_else() -> None:
    forged = Signer(ATTACKER.private, ATTACKER.public, (*ROTATED.chain, ROTATED.endorse(ATTACKER.public)))
    assert intake(signed(doc(6), forged), RUNNING, "pi-1", KEY).outcome == "accepted", "a real endorsement works"
    stolen = Signer(ATTACKER.private, ATTACKER.public, ROTATED.chain)  # ROTATED's chain, the attacker's key
    verdict = intake(signed(doc(6), stolen), RUNNING, "pi-1", KEY)
    assert verdict.outcome == "rejected" and "not at the end of its endorsement chain" in (verdict.reason or "")
    fake = Signature("ed25519", ATTACKER.public.key_id, ATTACKER.sign(doc(6)).value,
                     (replace(ROTATED.chain[0], key=str(ATTACKER.public)),))
    verdict = intake(protocol.encode(doc(6), fake), RUNNING, "pi-1", KEY)
    assert verdict.outcome == "rejected" and "endorsement of key" in (verdict.reason or "")


def test_without_a_key_only_the_insecure_mode_accepts_unsigned_states() -> None:
    assert intake(protocol.encode(doc(6)), RUNNING, "pi-1", None).outcome == "accepted"


def test_newer_minor_is_accepted_and_lists_what_it_ignored() -> None:
    verdict = intake((GOLDEN / "desired-1.9-newer-minor.json").read_bytes(), AgentState(), "pi-zero-0001", None)
    assert verdict.outcome == "accepted" and "body.rollout_id" in verdict.ignored_fields


def test_fields_a_newer_minor_added_are_covered_by_the_signature() -> None:
    envelope = json.loads(signed(doc(6)))
    envelope["v"] = "1.9"
    envelope["body"]["not_yet_known"] = {"b": 1, "a": [1.5, "x"]}  # signed below as the controller would
    body = envelope["body"]
    envelope["sig"]["value"] = CONTROLLER.sign_bytes(protocol.signing.desired_message(body))
    accepted = intake(json.dumps(envelope, indent=2).encode(), RUNNING, "pi-1", KEY)
    assert accepted.outcome == "accepted" and accepted.ignored_fields == ("body.not_yet_known",)
    envelope["body"]["not_yet_known"]["b"] = 2
    assert intake(json.dumps(envelope).encode(), RUNNING, "pi-1", KEY).outcome == "rejected"
