"""Which desired documents an agent accepts, ignores or rejects - and that a rejection changes nothing."""

from __future__ import annotations

import json

import pytest

import protocol
from agent.intake import intake
from agent.state import AgentState
from protocol import AppSpec, DesiredState
from tests.conftest import GOLDEN

IMAGE = "127.0.0.1:5000/acme/web@sha256:" + "a" * 64
RUNNING = AgentState(accepted_generation=5, desired=DesiredState("pi-1", 5, (AppSpec("web", IMAGE),)))


def payload(generation: int, device: str = "pi-1") -> bytes:
    return protocol.encode(DesiredState(device, generation, (AppSpec("web", IMAGE.replace("a" * 64, "b" * 64)),)))


@pytest.mark.parametrize(("raw", "outcome", "reason"), [
    (payload(6), "accepted", None),
    (payload(5), "ignored", None),
    (payload(4), "rejected", "older than the accepted 5"),
    (payload(9, device="pi-2"), "rejected", "addressed to 'pi-2'"),
    (b"not json at all", "rejected", "not JSON"),
    (b'{"v": "1.0", "kind": "desired", "body": {"device_id": "pi-1", "generation": 7, "apps": 3}}', "rejected",
     "body.apps: must be a list"),
    (protocol.encode(protocol.Status("pi-1", True)), "rejected", "expected 'desired'"),
    ((GOLDEN / "desired-2.0-unknown-major.json").read_bytes(), "rejected", "upgrade tinyfleet"),
    (b"{" * 70_000, "rejected", "over the 65536-byte limit"),
])
def test_intake(raw: bytes, outcome: str, reason: str | None) -> None:
    verdict = intake(raw, RUNNING, "pi-1")
    assert verdict.outcome == outcome
    if outcome == "rejected":
        assert reason in (verdict.reason or "")
        assert verdict.state.desired == RUNNING.desired and verdict.state.accepted_generation == 5
        assert verdict.state.rejection is not None and reason in verdict.state.rejection[1]
    elif outcome == "accepted":
        assert verdict.state.accepted_generation == 6 and verdict.state.rejection is None
    else:
        assert verdict.state is RUNNING


def test_rejection_names_the_generation_it_could_read() -> None:
    bad = json.dumps({"v": "1.0", "kind": "desired", "body": {"device_id": "pi-1", "generation": 12, "apps": {}}})
    assert intake(bad.encode(), RUNNING, "pi-1").state.rejection[0] == 12  # type: ignore[index]


def test_newer_minor_is_accepted_and_lists_what_it_ignored() -> None:
    verdict = intake((GOLDEN / "desired-1.3-newer-minor.json").read_bytes(), AgentState(), "pi-zero-0001")
    assert verdict.outcome == "accepted" and "body.rollout_id" in verdict.ignored_fields
