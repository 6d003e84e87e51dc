"""The fleet at a glance: a fleet of thousands fits a screen - the counts first, then the devices that need
attention, then as many others as the limit allows."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tinyfleet.controller.cli.views import devices_table, needs_attention


def device(n: int, *, online: bool = True, phase: str = "running", release: int = 3,
           error: str | None = None) -> dict[str, Any]:
    return {"id": f"pi-{n:04d}", "online": online, "platform": ("linux/arm64", "linux/arm/v7")[n % 2],
            "apps": [{"name": "hello", "release": release, "phase": phase, "health": "none", "error": error}],
            "groups": [], "tags": {}, "pins": {}, "last_seen": 100.0, "error": None}


def shown(devices: list[dict[str, Any]], limit: int | None) -> str:
    out = Console(width=160, record=True, color_system=None)
    out.print(devices_table(devices, now=105.0, limit=limit))
    return out.export_text()


def test_devices_that_need_attention_come_first_and_the_rest_up_to_the_limit() -> None:
    fleet = [device(n) for n in range(500)]
    fleet[300] = device(300, online=False)
    fleet[400] = device(400, phase="rolled_back", release=2, error="unhealthy")
    fleet[450] = device(450, phase="failed")
    text = shown(fleet, limit=5)
    rows = [line.split()[1] for line in text.splitlines() if line.startswith("│ pi-")]
    assert rows == ["pi-0300", "pi-0400", "pi-0450", "pi-0000", "pi-0001"]
    assert "... and 495 more (--all lists every device)" in text
    assert "500 devices, 499 online, 1 offline, 3 need attention" in text
    assert "linux/arm/v7 250" in text and "linux/arm64 250" in text
    assert "r3 running 498" in text and "r2 rolled_back 1" in text


def test_every_device_is_listed_without_a_limit() -> None:
    text = shown([device(n) for n in range(60)], limit=None)
    assert sum(line.startswith("│ pi-") for line in text.splitlines()) == 60 and "more" not in text


def test_what_needs_attention() -> None:
    assert not needs_attention(device(1))
    assert needs_attention(device(1, online=False))
    assert needs_attention(device(1, phase="failed")) and needs_attention(device(1, phase="rolled_back"))
    assert needs_attention(device(1, phase="pulling", error="retrying: registry unreachable"))
    assert needs_attention({**device(1), "error": "desired state rejected"})


def test_a_big_rollout_shows_its_failures_before_its_batches() -> None:
    from tinyfleet.controller.cli.views import rollout_view

    targets = [{"device": f"pi-{n:04d}", "batch": n // 100, "state": "converged", "reason": None} for n in range(1000)]
    targets[777] = {**targets[777], "state": "failed", "reason": "failed: rolled_back: unhealthy"}
    counts = {s: 0 for s in ("pending", "updating", "converged", "failed", "reverting", "reverted", "skipped")}
    counts.update(converged=999, failed=1)
    rollout = {"id": 7, "state": "running", "app": "hello", "release": 3, "selector": "all", "canary": 1,
               "batch": "10%", "max_failures": "1%", "failure_limit": 10, "failures": 1, "total": 1000,
               "counts": counts, "reason": None, "targets": targets}
    out = Console(width=160, record=True, color_system=None)
    out.print(rollout_view(rollout, max_rows=5))
    text = out.export_text()
    rows = [line.split()[0] for line in text.splitlines() if line.strip().startswith("pi-")]
    assert rows == ["pi-0777", "pi-0000", "pi-0001", "pi-0002", "pi-0003"]
    assert "failures 1 of 10 allowed (max failures 1%)" in text


def test_a_device_held_by_an_update_lock_says_who_holds_it() -> None:
    held = device(1, phase="pending")
    held["apps"][0]["locked"] = {"holder": "print-job-42", "since": 90.0, "expires": 200.0}
    assert "pending (locked by print-job-42)" in shown([held, device(2)], limit=None)
