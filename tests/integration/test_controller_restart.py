"""The real `tinyfleet controller` process, killed with SIGKILL in the middle of a rollout and started
again on the same database: the rollout resumes where it stood, no report is lost, generations keep
increasing. Devices are EMULATED (tests/support/emulated_device.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support.emulated_device import EmulatedDevice
from tests.support.fleet import ControllerProcess, emulated_fleet, push_demo_image, rollout_held_at_batch_1
from tests.support.wait import eventually

REPO = "it/ctl-restart"


@pytest.fixture(scope="module")
def images(registry, demo_binaries) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"v1": push_demo_image(registry.host, REPO, "1.0", demo_binaries, version="1"),
            "v2": push_demo_image(registry.host, REPO, "2.0", demo_binaries, version="2")}


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return "r" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


def documents(device: EmulatedDevice) -> list[tuple[int, str]]:
    """(generation, image) of each distinct document the device received, in order."""
    out: list[tuple[int, str]] = []
    for r in device.received:
        doc = (r.desired.generation, r.desired.apps[0].image if r.desired.apps else "")
        if not out or out[-1] != doc:
            out.append(doc)
    return out


def test_a_controller_killed_mid_rollout_resumes_where_it_stood(tmp_path: Path, mosquitto, images, prefix,  # type: ignore[no-untyped-def]
                                                                store_url: str) -> None:
    ctl = ControllerProcess(tmp_path / "ctl", mosquitto.url, database=store_url).start()
    try:
        api = ctl.client()
        with emulated_fleet(mosquitto.port, prefix, ["linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/arm64"]) \
                as devices:
            ids = ",".join(d.device_id for d in devices)
            eventually(lambda: sum(d["online"] for d in api.devices(f"device:{ids}")) == 4, what="devices online")
            v1, r, slow = rollout_held_at_batch_1(api, devices, prefix, images["v1"])
            before = api.rollout(r["id"])
            assert before["counts"] == {**before["counts"], "converged": 1, "updating": 1, "pending": 2}

            ctl.kill()  # SIGKILL: no shutdown path runs
            slow.release.set()  # it converges while the controller is dead; its report waits in the broker
            eventually(lambda: slow.runs("hello") == v1["image"], what="the slow device running v1")
            ctl.start()
            api = ctl.client()

            done = api.wait_rollout(r["id"], timeout=30, interval=0.1)
            assert done["state"] == "completed", done
            assert sorted((t["batch"], t["state"]) for t in done["targets"]) == [
                (0, "converged"), (1, "converged"), (2, "converged"), (3, "converged")]
            assert all(d.runs("hello") == v1["image"] for d in devices)
            assert all(documents(d) == [(1, v1["image"])] for d in devices), "one document each, never re-issued"

            v2 = api.create_release("hello", images["v2"])
            second = api.start_rollout("hello", v2["id"], f"tag:ring={prefix}", canary=0, batch="100%")
            api.wait_rollout(second["id"], timeout=30, interval=0.1)
            for d in devices:  # the generation kept increasing across the restart
                assert documents(d) == [(1, v1["image"]), (2, v2["image"])]
    finally:
        log = ctl.log()
        ctl.stop()
    assert '"level": "error"' not in log, log[-2000:]


def test_a_device_that_remembers_a_higher_generation_is_moved_above_it(tmp_path: Path, mosquitto, images,  # type: ignore[no-untyped-def]
                                                                         prefix, store_url: str) -> None:
    ctl = ControllerProcess(tmp_path / "ctl", mosquitto.url, database=store_url).start()
    try:
        api = ctl.client()
        with emulated_fleet(mosquitto.port, prefix, ["linux/arm64"]) as [device]:
            device.accepted = 40  # e.g. the controller's database was restored from an old backup
            eventually(lambda: api.devices(f"device:{device.device_id}"), what="device known")
            v1 = api.create_release("hello", images["v1"])
            r = api.start_rollout("hello", v1["id"], f"device:{device.device_id}")
            done = api.wait_rollout(r["id"], timeout=20, interval=0.1)
            assert done["state"] == "completed", done
            assert device.rejected == [1], "the first document was below what it had accepted"
            assert documents(device)[-1] == (41, v1["image"]) and device.runs("hello") == v1["image"]
    finally:
        ctl.stop()
