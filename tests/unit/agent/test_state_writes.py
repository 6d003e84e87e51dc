"""How often an update writes the state file (each write is an fsync on an SD card), and that what a
crash would cost is on disk before the step that could be interrupted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tinyfleet.agent.config import AgentConfig
from tinyfleet.agent.service import Agent
from tinyfleet.agent.state import AgentState, StateStore
from tinyfleet.agent.testing import FakeClock, FakeEngine, FakeImage, FakeRegistry
from tinyfleet.controller.signing import Signer
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, Phase, encode

ARM64 = Platform.parse("linux/arm64")
SIGNER = Signer.generate()


class Killed(BaseException):
    """The process dies here (kill -9, power cut): nothing after it runs."""


class DyingEngine(FakeEngine):
    def pull(self, pull_ref: str, platform: Platform) -> None:
        raise Killed


def image(n: int) -> str:
    return f"127.0.0.1:5000/acme/web@sha256:{n:064x}"


def board(tmp_path: Path, engine_class: type[FakeEngine] = FakeEngine) -> Agent:
    registry = FakeRegistry()
    for n in (1, 2):
        registry.publish(image(n), {"linux/arm64": FakeImage(ARM64, healthcheck=False)})
    config = AgentConfig(device_id="pi-1", broker="mqtt://127.0.0.1:1", state_dir=tmp_path, settle_seconds=0.0,
                         controller_key=SIGNER.public)
    return Agent(config, "pi-1", ARM64, engine_class(registry, FakeClock(time.time())), registry)


def document(generation: int, n: int) -> bytes:
    spec = AppSpec("web", image(n), health=HealthPolicy(0.0, 60.0))
    desired = DesiredState("pi-1", generation, (spec,))
    return encode(desired, SIGNER.sign(desired))


def count_writes(agent: Agent) -> list[AgentState]:
    written: list[AgentState] = []
    write = agent.store._write

    def counted(state: AgentState) -> None:
        written.append(state)
        write(state)

    agent.store._write = counted  # type: ignore[method-assign]
    return written


def test_an_update_writes_the_state_twice_before_its_pull_and_when_it_is_done(tmp_path: Path) -> None:
    agent = board(tmp_path)
    agent._on_desired(document(1, 1))
    agent._attempt()
    written = count_writes(agent)
    agent._on_desired(document(2, 2))
    outcome = agent._attempt()
    assert [s.phase for s in outcome.plan.statuses] == [Phase.RUNNING]  # type: ignore[union-attr]
    assert len(written) == 2
    before_pull, done = written
    resolved = before_pull.memory["web"].resolved
    assert before_pull.accepted_generation == 2 and resolved is not None and resolved.image == image(2)
    assert resolved.pull_ref in before_pull.pulled
    assert done == StateStore(tmp_path).current


def test_a_crash_during_a_pull_leaves_the_new_document_and_the_pull_on_disk(tmp_path: Path) -> None:
    agent = board(tmp_path, DyingEngine)
    agent._on_desired(document(3, 1))
    with pytest.raises(Killed):
        agent._attempt()
    after = StateStore(tmp_path).current
    assert after.accepted_generation == 3
    assert len(after.pulled) == 1  # so the image is pruned one day, whether or not it arrived


def test_a_state_file_that_cannot_be_written_is_reported_and_retried_not_fatal(tmp_path: Path) -> None:
    agent = board(tmp_path)
    write = agent.store._write
    full: list[bool] = [True]

    def disk_full(state: AgentState) -> None:
        if full[0]:
            raise OSError(28, "No space left on device")
        write(state)

    agent.store._write = disk_full  # type: ignore[method-assign]
    agent._on_desired(document(1, 1))
    outcome = agent._attempt()  # must not raise: the agent's loop would end
    assert outcome.transient is not None and "No space left on device" in outcome.transient
    full[0] = False  # room again: the next attempt writes what was learned
    agent._attempt()
    assert StateStore(tmp_path).current.accepted_generation == 1
