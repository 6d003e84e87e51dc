"""Accepting desired documents: pure rules on top of the protocol's validation.

    malformed / wrong kind / unknown major   -> rejected, reported, nothing changes
    addressed to another device              -> rejected
    generation older than the accepted one   -> rejected (a stale controller or a replay)
    generation equal to the accepted one     -> ignored (the retained copy, re-delivered on reconnect)
    generation newer                         -> accepted
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from agent.state import AgentState
from protocol import DesiredState, ProtocolError
from protocol.codec import open_envelope

_GENERATION = re.compile(rb'"generation"\s*:\s*(\d{1,18})')


@dataclass(frozen=True)
class Verdict:
    outcome: str  # accepted | ignored | rejected
    state: AgentState
    reason: str | None = None
    ignored_fields: tuple[str, ...] = ()


def _peek_generation(payload: bytes) -> int | None:
    """Best effort, for the report of a document that failed validation."""
    try:
        body = json.loads(payload).get("body", {})
        generation = body.get("generation") if isinstance(body, dict) else None
        return generation if isinstance(generation, int) and not isinstance(generation, bool) else None
    except (ValueError, AttributeError, RecursionError):
        match = _GENERATION.search(payload[:4096])
        return int(match.group(1)) if match else None


def intake(payload: bytes, state: AgentState, device_id: str) -> Verdict:
    try:
        envelope = open_envelope(payload, expect=DesiredState)
    except ProtocolError as exc:
        reason = f"desired state rejected: {exc}"
        return Verdict("rejected", replace(state, rejection=(_peek_generation(payload), reason)), reason)
    desired = envelope.message
    assert isinstance(desired, DesiredState)
    if desired.device_id != device_id:
        reason = f"desired state rejected: addressed to {desired.device_id!r}, this is {device_id!r}"
        return Verdict("rejected", replace(state, rejection=(desired.generation, reason)), reason)
    if desired.generation < state.accepted_generation:
        reason = (f"desired state rejected: generation {desired.generation} is older than the accepted "
                  f"{state.accepted_generation}")
        return Verdict("rejected", replace(state, rejection=(desired.generation, reason)), reason)
    if desired.generation == state.accepted_generation:
        return Verdict("ignored", state)
    accepted = replace(state, accepted_generation=desired.generation, desired=desired, rejection=None)
    return Verdict("accepted", accepted, ignored_fields=envelope.ignored)
