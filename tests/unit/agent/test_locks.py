"""Update lock files as the agent reads them (agent.locks), and a held update end to end against the
FakeEngine: pulled while the lock is held, switched only when it goes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.unit.agent.test_convergence import Board, app
from tinyfleet.agent.locks import LOCK_FILE, Asked, LockDirs, LockEndpoints, answer, parse
from tinyfleet.agent.model import UpdateLock
from tinyfleet.protocol import LockEndpoint, Phase, UpdateLockPolicy

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


# --- the endpoint form: the app answers over HTTP (protocol 1.4 update_lock.endpoint) ----------------

SINCE = NOW - 30


@pytest.mark.parametrize("status, content, expected", [
    (423, json.dumps({"holder": "flight-7", "expires_in": 120}).encode(), UpdateLock("flight-7", SINCE, NOW + 120)),
    (423, b"print-job-42", UpdateLock("print-job-42", SINCE, NOW + LIFETIME)),  # no expiry: the lifetime
    (423, json.dumps({"owner": "greedy", "expires_in": 10**9}).encode(), UpdateLock("greedy", SINCE, NOW + LIFETIME)),
    (423, b"", UpdateLock("unknown", SINCE, NOW + LIFETIME)),
    (423, json.dumps({"holder": "done", "expires_in": 0}).encode(), None),  # held for no time: free
    (423, json.dumps({"holder": "x", "expires_in": "soon"}).encode(), UpdateLock("x", SINCE, NOW + LIFETIME)),
    (200, json.dumps({"holder": "ignored", "expires_in": 60}).encode(), None),  # only 423 holds
    (404, b"not found", None),  # an app that never heard of update locks
    (500, b"", None),
])
def test_an_endpoint_answer_reads_as(status: int, content: bytes, expected: UpdateLock | None) -> None:
    assert answer(status, content, SINCE, NOW, LIFETIME) == expected


class App(BaseHTTPRequestHandler):
    """An app's lock endpoint on loopback; `reply` is what it says next."""

    reply: tuple[int, bytes] = (423, b"{}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        self.server.asked += 1  # type: ignore[attr-defined]
        status, body = self.server.reply  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app_endpoint() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    server.asked = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_endpoint_lock_is_held_while_the_app_says_so_since_it_first_did(app_endpoint) -> None:  # type: ignore[no-untyped-def]
    endpoints = LockEndpoints(lifetime=LIFETIME, timeout=0.5)
    asked = Asked("web", "c1", "127.0.0.1", LockEndpoint(app_endpoint.server_address[1], "/update-lock"))
    app_endpoint.reply = (423, json.dumps({"holder": "job", "expires_in": 60}).encode())
    assert endpoints.read([asked], NOW) == {"web": UpdateLock("job", NOW, NOW + 60)}
    assert endpoints.read([asked], NOW + 5) == {"web": UpdateLock("job", NOW, NOW + 65)}  # since: first heard
    app_endpoint.reply = (200, b"")
    assert endpoints.read([asked], NOW + 10) == {}
    app_endpoint.reply = (423, b"job-2")
    assert endpoints.read([asked], NOW + 20)["web"].since == NOW + 20  # a new holding, a new since


def test_an_endpoint_that_does_not_answer_holds_nothing(app_endpoint) -> None:  # type: ignore[no-untyped-def]
    port = app_endpoint.server_address[1]
    app_endpoint.shutdown()
    app_endpoint.server_close()  # the app died: connection refused
    asked = Asked("web", "c1", "127.0.0.1", LockEndpoint(port))
    assert LockEndpoints(lifetime=LIFETIME, timeout=0.5).read([asked], NOW) == {}


def test_an_update_waits_while_the_app_answers_held_and_the_app_is_asked_only_then(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                                  app_endpoint) -> None:
    ask = UpdateLockPolicy(endpoint=LockEndpoint(app_endpoint.server_address[1], "/update-lock"))
    board = Board(tmp_path)
    board.publish("w1"), board.publish("w2")
    app_endpoint.reply = (423, json.dumps({"holder": "flight-7", "expires_in": 600}).encode())
    board.want(1, replace(app("w1"), update_lock=ask))
    board.converge()
    assert app_endpoint.asked == 0  # a first install: nothing running to hold it
    board.want(2, replace(app("w2"), update_lock=ask))
    for _ in range(5):
        assert board.reconciler.reconcile().transient is None
        board.clock.now += 5
    status = board.status()
    assert status.phase == Phase.PENDING and status.locked is not None and status.locked.holder == "flight-7"
    assert status.current_image == app("w1").image and len(board.engine.containers) == 1  # pulled, not switched
    app_endpoint.reply = (200, b"{}")  # the flight landed
    board.converge()
    assert board.status().phase == Phase.RUNNING and board.status().current_image == app("w2").image
    asked = app_endpoint.asked
    for _ in range(3):
        board.reconciler.reconcile()
    assert asked >= 6 and app_endpoint.asked == asked  # asked while the switch waited, never once it is done
