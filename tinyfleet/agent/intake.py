"""Accepting desired documents: pure rules on top of the protocol's validation.

    malformed / wrong kind / unknown major      -> rejected, reported, nothing changes
    addressed to another device                 -> rejected
    the accepted document again, byte for byte  -> ignored (the retained copy, re-delivered on reconnect)
    unsigned, or not signed by the trusted key  -> rejected (any broker client could have sent it)
    generation older than the accepted one      -> rejected (a replay, or a stale controller)
    same generation, different body             -> rejected (a forgery or a controller bug: say so)
    generation newer, signed                    -> accepted; a key reached by an endorsement is trusted
                                                   from now on instead of the one before it

Every rejection is kept in the state and reported (retained), with the generation where it is a valid
one, so the controller and the operator hear of it; what runs keeps running.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from tinyfleet.agent.state import AgentState
from tinyfleet.protocol import DesiredState, ProtocolError
from tinyfleet.protocol.codec import open_envelope
from tinyfleet.protocol.signing import PublicKey, SignatureRefused, check

_GENERATION = re.compile(rb'"generation"\s*:\s*(\d{1,18})')


@dataclass(frozen=True)
class Verdict:
    outcome: str  # accepted | ignored | rejected
    state: AgentState
    reason: str | None = None
    ignored_fields: tuple[str, ...] = ()


def _peek_generation(payload: bytes) -> int | None:
    """Best effort, for the report of a document that failed validation: a generation the report can
    carry (a whole number >= 0), else None - the reason names what was wrong either way."""
    try:
        body = json.loads(payload).get("body", {})
        generation = body.get("generation") if isinstance(body, dict) else None
        valid = isinstance(generation, int) and not isinstance(generation, bool) and 0 <= generation < 2**63
        return generation if valid else None
    except (ValueError, AttributeError, RecursionError):
        match = _GENERATION.search(payload[:4096])
        return int(match.group(1)) if match else None


def _rejected(state: AgentState, generation: int | None, reason: str) -> Verdict:
    reason = f"desired state rejected: {reason}"
    return Verdict("rejected", replace(state, rejection=(generation, reason)), reason)


def intake(payload: bytes, state: AgentState, device_id: str, key: PublicKey | None) -> Verdict:
    """`key`: the controller key this board was given; None only when started to accept unsigned states."""
    try:
        envelope = open_envelope(payload, expect=DesiredState)
    except ProtocolError as exc:
        return _rejected(state, _peek_generation(payload), str(exc))
    desired = envelope.message
    assert isinstance(desired, DesiredState)
    if desired.device_id != device_id:
        return _rejected(state, desired.generation, f"addressed to {desired.device_id!r}, this is {device_id!r}")
    if desired.generation == state.accepted_generation and desired == state.desired:
        return Verdict("ignored", state)  # changes nothing, so nothing to verify
    signed_by = None
    if key is not None:
        try:
            signed_by = check(envelope.body, envelope.signature, state.trust(key))
        except (SignatureRefused, ProtocolError) as exc:
            return _rejected(state, desired.generation, f"signature refused: {exc}")
    if desired.generation < state.accepted_generation:
        return _rejected(state, desired.generation, f"generation {desired.generation} is older than the accepted "
                                                    f"{state.accepted_generation} (a replay, or a stale controller)")
    if desired.generation == state.accepted_generation:
        return _rejected(state, desired.generation, f"generation {desired.generation} was already accepted with a "
                                                    "different body")
    accepted = replace(state, accepted_generation=desired.generation, desired=desired, rejection=None)
    if key is not None and signed_by is not None:
        moved = signed_by != key
        accepted = replace(accepted, trusted_key=str(signed_by) if moved else None,
                           trust_root=str(key) if moved else None)
    return Verdict("accepted", accepted, ignored_fields=envelope.ignored)
