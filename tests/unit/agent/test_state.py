"""The state file: round trips, is replaced atomically, and an unreadable one is set aside, not fatal."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from tinyfleet.agent.model import AppMemory, Failure, Resolved
from tinyfleet.agent.state import AgentState, StateStore, write_atomically
from tinyfleet.protocol import AppSpec, DesiredState, Phase

IMAGE = "127.0.0.1:5000/acme/web@sha256:" + "a" * 64


def full_state() -> AgentState:
    return AgentState(
        accepted_generation=3, desired=DesiredState("pi-1", 3, (AppSpec("web", IMAGE),)), rejection=(4, "bad"),
        memory={"web": AppMemory(resolved=Resolved(IMAGE, IMAGE, 123, "linux/arm/v7"),
                                 failure=Failure("abc", IMAGE, Phase.ROLLED_BACK, "broke", 1.5), promoted="def",
                                 last_restart_at=2.5, agent_restarts=1)},
        pulled=frozenset({IMAGE}))


def test_state_survives_a_restart(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.update(lambda _: full_state())
    assert StateStore(tmp_path).current == full_state()
    assert oct(os.stat(tmp_path / "state.json").st_mode & 0o777) == "0o600"


def test_unchanged_state_is_not_rewritten(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.update(lambda _: full_state())
    mtime = os.stat(store.path).st_mtime_ns
    store.update(lambda st: replace(st))
    assert os.stat(store.path).st_mtime_ns == mtime


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"format": 99}', b'{"format": 1}', b"\x00\xff" * 10])
def test_unreadable_state_is_set_aside_and_the_agent_starts_fresh(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "state.json").write_bytes(content)
    store = StateStore(tmp_path)
    assert store.current == AgentState()
    assert [p.name.startswith("state.json.unreadable-") for p in tmp_path.iterdir()] == [True]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    write_atomically(target, b"old")

    def disk_error(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)  # the SD card fails mid-write
    with pytest.raises(OSError, match="Input/output"):
        write_atomically(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_batch_writes_once_at_its_end_and_flush_writes_early(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.batch():
        store.update(lambda st: replace(st, accepted_generation=1))
        assert store.current.accepted_generation == 1 and not store.path.exists()
        store.update(lambda st: replace(st, accepted_generation=2))
        store.flush()
        assert StateStore(tmp_path).current.accepted_generation == 2
        store.update(lambda st: replace(st, accepted_generation=3))
    assert StateStore(tmp_path).current.accepted_generation == 3


def test_a_batch_cut_short_like_a_kill_writes_nothing_more(tmp_path: Path) -> None:
    class Killed(BaseException):
        pass

    store = StateStore(tmp_path)
    store.update(lambda st: replace(st, accepted_generation=1))
    with pytest.raises(Killed), store.batch():
        store.update(lambda st: replace(st, accepted_generation=2))
        raise Killed
    assert StateStore(tmp_path).current.accepted_generation == 1
    with pytest.raises(ValueError), store.batch():  # an ordinary error still keeps what was learned
        store.update(lambda st: replace(st, accepted_generation=5))
        raise ValueError("boom")
    assert StateStore(tmp_path).current.accepted_generation == 5
