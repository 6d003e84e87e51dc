"""`--watch` in a pipe or a log (and the demo there): one line per change, never a table printed again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.controller.test_views import device
from tinyfleet.controller.cli import live
from tinyfleet.controller.cli.views import fleet_line, rollout_line, rollout_view


def rollout(state: str = "running", converged: int = 1, updating: int = 1, pending: int = 1,
            reason: str | None = None) -> dict[str, Any]:
    counts = {"converged": converged, "updating": updating, "pending": pending, "failed": 0, "reverting": 0,
              "reverted": 0, "skipped": 0}
    return {"id": 7, "app": "hello", "release": 3, "selector": "all", "state": state, "counts": counts,
            "total": converged + updating + pending, "reason": reason, "open": state in ("running", "paused"),
            "canary": 1, "batch": "1", "failures": 0, "failure_limit": 0, "max_failures": "0", "targets": []}


def test_the_fleet_in_one_line() -> None:
    fleet = [device(1), device(2), device(3, online=False), device(4, phase="rolled_back", release=2, error="x")]
    assert fleet_line(fleet) == ("fleet: 4 devices, 3 online, 1 offline, 2 need attention; "
                                 "hello: r3 running 3, r2 rolled_back 1; "
                                 "attention: pi-0003 (offline), pi-0004 (hello rolled_back)")


def test_a_rollout_in_one_line() -> None:
    assert rollout_line(rollout()) == ("rollout 7 running: hello -> release 3 to all; converged 1/3, updating 1, "
                                       "pending 1, failed 0, reverted 0")
    assert rollout_line(rollout("completed", 3, 0, 0, "3 converged")).endswith("reverted 0 - 3 converged")
    aborted = {**rollout("aborted", 1, 0, 0, "1 failed, over the limit of 0"),
               "targets": [{"device": "pi-1", "state": "reverted", "reason": "unhealthy; previous version restored"},
                           {"device": "pi-2", "state": "converged", "reason": None}]}
    assert rollout_line(aborted).endswith("- 1 failed, over the limit of 0 "
                                          "(pi-1 reverted: unhealthy; previous version restored)")


def test_without_a_terminal_watch_prints_one_line_per_change(capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([rollout(), rollout(), rollout(converged=2, updating=1, pending=0),
                    rollout(converged=2, updating=1, pending=0), rollout("completed", 3, 0, 0)])
    final = live.watch(lambda: next(answers), rollout_view, line=rollout_line, interval=0,
                       done=lambda r: not r["open"])
    assert final["state"] == "completed"
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(";")[1].split(",")[0] for line in lines] == [" converged 1/3", " converged 2/3",
                                                                    " converged 3/3"]
    assert not any("━" in line or "│" in line for line in lines), "no table, no progress bar"


def test_with_json_watch_prints_one_document_per_change(capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([rollout(), rollout(), rollout("completed", 3, 0, 0)])
    live.watch(lambda: next(answers), rollout_view, line=rollout_line, interval=0, done=lambda r: not r["open"],
               as_json=True)
    assert [line.startswith('{"app": "hello"') for line in capsys.readouterr().out.splitlines()] == [True, True]
