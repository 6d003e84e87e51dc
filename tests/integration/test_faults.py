"""The fault suite (bench/faults.py) against the real services: each case breaks one thing on purpose,
prints what was expected and what was seen with its figures, and must come out as expected.
`bash scripts/dev.sh bench faults` prints the same cases as a report."""

from __future__ import annotations

from pathlib import Path

from bench import faults


def check(case: faults.Case) -> None:
    print(f"\n{case}")
    assert case.ok, str(case)


def test_kill_9_during_the_state_write_leaves_the_old_or_the_new_state(tmp_path: Path) -> None:
    check(faults.state_write_kill(tmp_path, cycles=50))


def test_dockerd_restarted_under_a_running_agent(tmp_path: Path, mosquitto, registry, qemu) -> None:  # type: ignore[no-untyped-def]
    check(faults.dockerd_restart(tmp_path, mosquitto.url, registry.host))


def test_registry_down_then_stalled_during_an_update(tmp_path: Path, mosquitto, registry, dockerd) -> None:  # type: ignore[no-untyped-def]
    check(faults.registry_outage(tmp_path, mosquitto.url, registry.host, dockerd.url))


def test_mosquitto_restarted_while_boards_update_loses_no_report(tmp_path: Path, registry, dockerd) -> None:  # type: ignore[no-untyped-def]
    check(faults.mosquitto_restart(tmp_path, registry.host, dockerd.url))


def test_controller_killed_mid_batch_resumes_and_updates_no_board_twice(tmp_path: Path, mosquitto, registry,  # type: ignore[no-untyped-def]
                                                                         dockerd) -> None:
    check(faults.controller_kill(tmp_path, mosquitto.url, registry.host, dockerd.url))


def test_disk_full_refuses_the_update_clearly_and_the_old_version_runs(tmp_path: Path, mosquitto, registry) -> None:  # type: ignore[no-untyped-def]
    check(faults.disk_full(tmp_path, mosquitto.url, registry.host))


def test_disk_filling_up_during_a_pull_fails_it_clearly_and_the_old_version_runs(tmp_path: Path, mosquitto,  # type: ignore[no-untyped-def]
                                                                                  registry) -> None:
    check(faults.disk_full_mid_pull(tmp_path, mosquitto.url, registry.host))
