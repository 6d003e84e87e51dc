"""Update lock files as the agent reads them (agent.locks), and a held update end to end against the
FakeEngine: pulled while the lock is held, switched only when it goes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.unit.agent.test_convergence import Board, app
from tinyfleet.agent.locks import LOCK_FILE, LockDirs, parse
from tinyfleet.agent.model import UpdateLock
from tinyfleet.protocol import Phase

NOW = 1_800_000_000.0
MTIME = NOW - 100
LIFETIME = 600.0


@pytest.mark.parametrize("content, expected", [
    (b"", UpdateLock("unknown", MTIME, MTIME + LIFETIME)),  # an empty file (one open()): lifetime from mtime
    (b"print-job-42\nsecond line ignored", UpdateLock("print-job-42", MTIME, MTIME + LIFETIME)),
    (json.dumps({"owner": "flight-7", "expires": NOW + 60}).encode(), UpdateLock("flight-7", MTIME, NOW + 60)),
    (json.dumps({"owner": "m", "since": NOW - 500, "expires": "2027-01-15T08:00:30+00:00"}).encode(),
     UpdateLock("m", NOW - 500, 1800000030.0)),  # ISO 8601 expiry, own `since`
    (json.dumps({"owner": "greedy", "expires": NOW + 10**7}).encode(),
     UpdateLock("greedy", MTIME, MTIME + LIFETIME)),  # no lock for a year: the lifetime from its last touch
    (b"{not json", UpdateLock("{not json", MTIME, MTIME + LIFETIME)),  # garbled: still a lock, still expires
    (json.dumps({"owner": "x", "expires": True}).encode(), UpdateLock("x", MTIME, MTIME + LIFETIME)),
])
def test_a_lock_file_reads_as(content: bytes, expected: UpdateLock) -> None:
    assert parse(content, MTIME, NOW, LIFETIME) == expected


def test_expired_and_missing_locks_are_not_held(tmp_path: Path) -> None:
    locks = LockDirs(tmp_path, lifetime=LIFETIME)
    for name, content, age in (("web", b"job-1", 10), ("db", b"left by a dead process", LIFETIME + 1)):
        path = locks.dir_for(name) / LOCK_FILE
        path.write_bytes(content)
        os.utime(path, (NOW - age, NOW - age))
    locks.dir_for("relay")
    held = locks.read(["web", "db", "relay", "never-created"], NOW)
    assert set(held) == {"web"} and held["web"].holder == "job-1"
    assert oct(os.stat(tmp_path / "web").st_mode & 0o7777) == "0o1777"  # any user in the app's container


def test_an_update_waits_for_the_lock_and_lands_when_it_is_released(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1"), board.publish("w2")
    board.want(1, app("w1"))
    board.converge()
    lock = board.reconciler.locks.dir_for("web") / LOCK_FILE
    lock.write_text(json.dumps({"owner": "print-job-42", "expires": board.clock.now + 3600}))
    os.utime(lock, (board.clock.now, board.clock.now))  # taken now, on the board's (fake) clock
    board.want(2, app("w2"))
    for _ in range(5):
        assert board.reconciler.reconcile().transient is None
        board.clock.now += 5
    status = board.status()
    assert status.phase == Phase.PENDING and status.locked is not None and status.locked.holder == "print-job-42"
    assert status.current_image == app("w1").image  # the old version keeps running
    assert len(board.engine.pulls) == 2 and len(board.engine.containers) == 1  # pulled, not switched
    lock.unlink()
    board.converge()
    assert board.status().phase == Phase.RUNNING and board.status().current_image == app("w2").image
    assert board.status().locked is None
