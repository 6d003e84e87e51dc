"""Update locks against a real agent, dockerd and registry: the demo's static binary (a scratch image, no
shell, no library) takes /run/tinyfleet/update.lock with one open(); the agent pulls the next version
but does not switch to it until the lock is released, expires, the release's max wait is over, or the
operator forces it. The same binary can hold its lock without a file: it answers 423 on a port of its
own (the release's update_lock.endpoint), and an app that answers nothing holds nothing."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import pytest

from tests.integration import test_agent
from tests.integration.test_agent import Board, app
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import DesiredState, LockEndpoint, Phase, ReportedState, UpdateLockPolicy

# The agent tests' fixtures (an agent process per board, the demo images, the signing MQTT peer).
board, images, peer, proxy = test_agent.board, test_agent.images, test_agent.peer, test_agent.proxy

PLATFORM = "linux/amd64"  # no qemu: lock timings are the subject here, not emulation


def holding(seconds: int, *, leak: bool = False) -> tuple[tuple[str, str], ...]:
    return (("TINYHELLO_LOCK_FOR", str(seconds)),) + ((("TINYHELLO_LOCK_LEAK", "1"),) if leak else ())


def locked(b: Board, image: str) -> ReportedState:
    def ok(r: ReportedState) -> bool:
        s = r.app("hello")
        return s is not None and s.locked is not None and s.desired_image == image
    return b.wait(ok, "hello reported locked", timeout=60)


def v1_holding_then_v2(b: Board, images, env: tuple[tuple[str, str], ...], **v2) -> tuple[ReportedState, float]:  # type: ignore[no-untyped-def]
    """v1 running and holding its lock (taken at its start), v2 desired: until v2 is reported locked."""
    b.want(app(images["v1"], env=env))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    (v1,) = b.containers("hello")
    assert any(m["Destination"] == "/run/tinyfleet" for m in v1.attrs["Mounts"]), "lock directory mounted"
    assert b"took the update lock" in v1.logs()
    wanted_at = time.monotonic()
    b.want(app(images["v2"], **v2))
    return locked(b, images["v2"].ref), wanted_at


def assert_pulled_not_switched(b: Board, images) -> None:  # type: ignore[no-untyped-def]
    (only,) = b.containers("hello")
    assert only.labels["io.tinyfleet.image"] == images["v1"].ref and only.status == "running"
    b.docker.images.get(images["v2"].manifests[Platform.parse(PLATFORM)])  # downloaded (raises if not)


def test_v2_waits_while_v1_holds_its_lock_then_lands(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board(PLATFORM)
    report, wanted_at = v1_holding_then_v2(b, images, holding(15))
    status = report.app("hello")
    assert status is not None and status.phase == Phase.PENDING and status.current_image == images["v1"].ref
    assert status.locked is not None and status.locked.holder == "tinyhello 1"
    assert status.locked.expires is not None and status.locked.expires > status.locked.since
    assert_pulled_not_switched(b, images)
    b.wait_phase("hello", Phase.RUNNING, images["v2"].ref, timeout=60)
    (v1_gone_v2,) = b.containers("hello")
    assert b"version 2" in v1_gone_v2.logs()
    print(f"\nv2 held {time.monotonic() - wanted_at:.1f}s by v1's lock (15 s from v1's start), then landed")


def test_a_lock_left_by_a_dead_process_expires(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board(PLATFORM, extra_env={"TINYFLEET_LOCK_LIFETIME_SECONDS": "12"})
    report, wanted_at = v1_holding_then_v2(b, images, holding(3600, leak=True))  # never removed, no expiry
    status = report.app("hello")
    assert status is not None and status.locked is not None and status.locked.holder == "tinyhello 1"
    assert_pulled_not_switched(b, images)
    b.wait_phase("hello", Phase.RUNNING, images["v2"].ref, timeout=60)
    print(f"\nthe leaked lock held v2 {time.monotonic() - wanted_at:.1f}s (lifetime 12 s from its mtime)")


def test_a_lock_older_than_the_running_container_holds_nothing(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board(PLATFORM)
    b.want(app(images["v1"]))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    lock = b.agent.state_dir / "locks" / "hello" / "update.lock"  # as a process that crashed left it
    lock.write_text(json.dumps({"owner": "crashed-job", "expires": time.time() + 3000}))
    (v1,) = b.containers("hello")
    v1.restart(timeout=2)  # the app's process is a new one now
    os.utime(lock, (time.time() - 60, time.time() - 60))
    b.want(app(images["v2"]))
    report = b.wait_phase("hello", Phase.RUNNING, images["v2"].ref, timeout=60)
    assert not any(r.app("hello") and r.app("hello").locked for r in b.peer.history.get(b.id, [])  # type: ignore[union-attr]
                   if r.generation == report.generation)


@pytest.mark.parametrize("how", ["operator forces it", "release's max wait is over"])
def test_a_held_lock_is_overridden_when(board, images, how: str) -> None:  # type: ignore[no-untyped-def]
    b = board(PLATFORM)
    v2 = {"update_lock": UpdateLockPolicy(max_wait_seconds=4)} if how.startswith("release") else {}
    report, wanted_at = v1_holding_then_v2(b, images, holding(3600), **v2)
    assert_pulled_not_switched(b, images)
    if how.startswith("operator"):
        b.generation += 1
        spec = app(images["v2"])
        b.peer.publish(replace(DesiredState(b.id, b.generation, (spec,)), force=("hello",)))
    b.wait_phase("hello", Phase.RUNNING, images["v2"].ref, timeout=60)
    print(f"\nv2 landed {time.monotonic() - wanted_at:.1f}s after it was wanted ({how}; the lock was held for 1 h)")


ASK_ME = UpdateLockPolicy(endpoint=LockEndpoint(8088, "/update-lock"))  # on the container's bridge address


def test_v2_waits_while_v1_answers_its_lock_over_http_then_lands(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board(PLATFORM)
    b.want(app(images["v1"], env=holding(15) + (("TINYHELLO_LOCK_HTTP", "8088"),), update_lock=ASK_ME))
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    (v1,) = b.containers("hello")
    assert b"holds the update lock over HTTP" in v1.logs()
    assert not (b.agent.state_dir / "locks" / "hello" / "update.lock").exists()  # no file: the answer is the lock
    wanted_at = time.monotonic()
    b.want(app(images["v2"], update_lock=ASK_ME))
    status = locked(b, images["v2"].ref).app("hello")
    assert status is not None and status.phase == Phase.PENDING and status.current_image == images["v1"].ref
    assert status.locked is not None and status.locked.holder == "tinyhello 1"
    assert status.locked.expires is not None and status.locked.expires > status.locked.since
    assert_pulled_not_switched(b, images)
    b.wait_phase("hello", Phase.RUNNING, images["v2"].ref, timeout=60)
    print(f"\nv2 held {time.monotonic() - wanted_at:.1f}s by v1's HTTP lock (15 s from v1's start), then landed")


def test_an_endpoint_nobody_answers_holds_nothing(board, images) -> None:  # type: ignore[no-untyped-def]
    b = board(PLATFORM)
    b.want(app(images["v1"], update_lock=ASK_ME))  # the release names an endpoint the app does not serve
    b.wait_phase("hello", Phase.RUNNING, images["v1"].ref)
    b.want(app(images["v2"], update_lock=ASK_ME))
    report = b.wait_phase("hello", Phase.RUNNING, images["v2"].ref, timeout=60)
    assert not any(r.app("hello") and r.app("hello").locked for r in b.peer.history.get(b.id, [])  # type: ignore[union-attr]
                   if r.generation == report.generation)
