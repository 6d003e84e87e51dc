"""Two `tinyfleet controller` processes on one PostgreSQL and one broker: the API answers from either,
one drives the rollout (the database lease), and when that one is killed -9 mid-rollout the other
takes the lease over and finishes the rollout."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from tests.support.fleet import ControllerProcess, emulated_fleet, push_demo_image, rollout_held_at_batch_1
from tests.support.wait import eventually
from tinyfleet.controller.signing import KEY_FILE

REPO = "it/ctl-pair"
TOOK = "took the rollout engine's lease"


@pytest.fixture(scope="module")
def images(registry, demo_binaries) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"v1": push_demo_image(registry.host, REPO, "1.0", demo_binaries, version="1")}


def test_a_killed_lease_holder_is_taken_over_and_its_rollout_finished_by_the_other(  # type: ignore[no-untyped-def]
        tmp_path: Path, mosquitto, postgres, images) -> None:
    prefix = "p" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:8]
    url = postgres.create_schema(f"pair_{prefix}")
    first = ControllerProcess(tmp_path / "a", mosquitto.url, database=url).start()
    (tmp_path / "b").mkdir()
    for name in (KEY_FILE, f"{KEY_FILE}.pub"):  # one fleet, one signing key
        shutil.copy2(tmp_path / "a" / name, tmp_path / "b" / name)
    second = ControllerProcess(tmp_path / "b", mosquitto.url, database=url).start()
    pair = [first, second]
    try:
        with emulated_fleet(mosquitto.port, prefix, ["linux/arm64"] * 4) as devices:
            ids = ",".join(d.device_id for d in devices)
            for ctl in pair:  # the API answers from either
                api = ctl.client()
                eventually(lambda api=api: sum(d["online"] for d in api.devices(f"device:{ids}")) == 4,
                           what="devices online")
            v1, r, slow = rollout_held_at_batch_1(second.client(), devices, prefix, images["v1"])
            holders = [c for c in pair if TOOK in c.log()]
            assert len(holders) == 1, [c.root.name for c in holders]
            holder = holders[0]
            survivor = second if holder is first else first

            holder.kill()  # SIGKILL mid-rollout
            killed_at = time.monotonic()
            slow.release.set()
            eventually(lambda: TOOK in survivor.log(), timeout=15, interval=0.1, what="the lease taken over")
            took_over = time.monotonic() - killed_at
            done = survivor.client().wait_rollout(r["id"], timeout=30, interval=0.1)
            assert done["state"] == "completed", done
            assert all(d.runs("hello") == v1["image"] for d in devices)
            # the same document again at most (the new holder republishes what is stored), never a new one
            assert all(set(d.generations()) == {1} for d in devices), [d.generations() for d in devices]
            assert took_over < 10, took_over
            print(f"lease taken over {took_over:.2f} s after the holder was killed")
    finally:
        for ctl in pair:
            ctl.stop()
