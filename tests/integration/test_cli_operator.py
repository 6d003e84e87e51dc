"""The operator's `tinyfleet` commands against a real `tinyfleet controller` process on the real broker
and registry, with EMULATED devices: output for people and for scripts, and exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.process import free_port
from tests.support.cli import tinyfleet
from tests.support.emulated_device import EmulatedDevice
from tests.support.fleet import ControllerProcess, emulated_fleet, push_demo_image
from tests.support.wait import eventually

REPO = "it/ctl-cli"
PREFIX = "cli"


@pytest.fixture(scope="module")
def images(registry, demo_binaries) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"v1": push_demo_image(registry.host, REPO, "1.0", demo_binaries, version="1"),
            "v3": push_demo_image(registry.host, REPO, "3.0", demo_binaries, version="3", broken=True),
            "v7only": push_demo_image(registry.host, REPO, "v7only", demo_binaries, version="7",
                                      platforms=("linux/arm/v7",))}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ctl(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,  # type: ignore[no-untyped-def]
        mosquitto) -> Iterator[ControllerProcess]:
    """The controller process, on each store in turn: the module's tests run [sqlite], then [postgresql]."""
    database = request.getfixturevalue("postgres").create_schema("cli") if request.param == "postgresql" else None
    proc = ControllerProcess(tmp_path_factory.mktemp(f"cli-ctl-{request.param}"), mosquitto.url,
                             database=database).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def fleet(ctl: ControllerProcess, mosquitto) -> Iterator[list[EmulatedDevice]]:  # type: ignore[no-untyped-def]
    with emulated_fleet(mosquitto.port, PREFIX, ["linux/arm64", "linux/arm/v6", "linux/arm/v7"]) as devices:
        api = ctl.client()
        eventually(lambda: sum(d["online"] for d in api.devices(f"group:{PREFIX}") or api.devices()) >= 3,
                   what="emulated devices online")
        yield devices


@pytest.fixture
def env(ctl: ControllerProcess) -> dict[str, str]:
    return {"TINYFLEET_URL": ctl.url, "TINYFLEET_TOKEN_FILE": str(ctl.token_file), "TINYFLEET_CONFIG": "/nonexistent"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return tinyfleet(*args, env=env, timeout=120)


def ok_json(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    result = run(env, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_devices_are_listed_for_people_and_for_scripts(env, fleet) -> None:  # type: ignore[no-untyped-def]
    listed = {d["id"]: d for d in ok_json(env, "devices")}
    assert {f"{PREFIX}-0", f"{PREFIX}-1", f"{PREFIX}-2"} <= set(listed)
    assert listed[f"{PREFIX}-1"]["platform"] == "linux/arm/v6" and listed[f"{PREFIX}-1"]["online"]
    table = run(env, "devices")
    assert table.returncode == 0 and f"{PREFIX}-2" in table.stdout and "online" in table.stdout
    assert "need attention" in table.stdout and "linux/arm/v6" in table.stdout
    everything = run(env, "devices", "--all")
    assert everything.returncode == 0 and "more (--all" not in everything.stdout
    shown = run(env, "device", "show", f"{PREFIX}-1")
    assert shown.returncode == 0 and "linux/arm/v6" in shown.stdout


def test_tags_groups_and_pins(env, fleet) -> None:  # type: ignore[no-untyped-def]
    device = f"{PREFIX}-0"
    assert ok_json(env, "device", "tag", device, "site=berlin", "rack=3")["tags"] == {"rack": "3", "site": "berlin"}
    for d in fleet:
        ok_json(env, "device", "join", d.device_id, PREFIX)
    assert [d["id"] for d in ok_json(env, "devices", "--selector", "tag:site=berlin")] == [device]
    assert len(ok_json(env, "devices", "--selector", f"group:{PREFIX}")) == 3
    assert ok_json(env, "device", "pin", device, "*")["pins"] == {"*": None}
    assert ok_json(env, "device", "unpin", device, "*")["pins"] == {}
    assert ok_json(env, "device", "untag", device, "rack")["tags"] == {"site": "berlin"}


def test_device_update_force_sends_the_device_a_signed_document_that_forces_the_app(env, fleet) -> None:  # type: ignore[no-untyped-def]
    device = fleet[2]
    done = ok_json(env, "device", "update", "--force", device.device_id, "--app", "hello")
    assert done["device"] == device.device_id and done["forced"] == ["hello"]
    got = eventually(lambda: next((r.desired for r in device.received if r.desired.generation == done["generation"]),
                                  None), what="the forced document on the device")
    assert got.force == ("hello",)
    line = run(env, "device", "update", "--force", device.device_id)
    assert line.returncode == 0 and "past their update locks" in line.stdout


@pytest.mark.parametrize("args,code,message", [
    (["device", "show", "nope"], 5, "no device 'nope'"),
    (["device", "show", "bad$id"], 2, "may hold only"),
    (["device", "tag", f"{PREFIX}-0", "novalue"], 2, "is not KEY=VALUE"),
    (["device", "leave", f"{PREFIX}-0", "never-joined"], 5, "not in group"),
    (["devices", "--selector", "planet:mars"], 2, "selector 'planet:mars'"),
    (["release", "create", "hello", "Not A Ref"], 2, "not an image reference"),
    (["release", "create", "hello", "127.0.0.1:9/it/x:1"], 6, "cannot reach the registry 127.0.0.1:9"),
    (["rollout", "start", "hello", "99", "--to", "all"], 5, "has no release '99'"),
    (["rollout", "start", "hello", "1", "--to", "all", "--batch", "lots"], 2, "batch 'lots'"),
    (["rollout", "status", "4242"], 5, "no rollout 4242"),
    (["rollout", "pause", "4242"], 5, "no rollout 4242"),
])
def test_mistakes_give_one_clear_line_and_a_meaningful_exit_code(env, fleet, args, code, message) -> None:  # type: ignore[no-untyped-def]
    result = run(env, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr and result.stderr.startswith("tinyfleet: error: ")
    assert "Traceback" not in result.stderr


def test_release_create_prints_the_id_and_refuses_what_the_fleet_cannot_run(env, fleet, images, registry) -> None:  # type: ignore[no-untyped-def]
    created = run(env, "release", "create", "hello", images["v1"])
    assert created.returncode == 0, created.stderr
    release_id = int(created.stdout.strip())
    whole = ok_json(env, "release", "create", "hello", images["v1"])
    assert whole["id"] == release_id and whole["version"] == "1.0" and len(whole["platforms"]) == 4
    over = run(env, "release", "create", "hello", images["v1"], "--max-bytes", "1000")
    assert over.returncode == 3 and "over the budget of 1000 bytes" in over.stderr
    missing = run(env, "release", "create", "hello", images["v7only"])
    assert missing.returncode == 4 and "no image for linux/arm/v6" in missing.stderr
    absent = run(env, "release", "create", "hello", f"{registry.host}/{REPO}:9.9")
    assert absent.returncode == 5
    listed = ok_json(env, "release", "list", "--app", "hello")
    assert release_id in [r["id"] for r in listed]
    table = run(env, "release", "list")
    assert table.returncode == 0 and "1.0" in table.stdout


def test_a_rollout_is_started_watched_and_its_outcome_is_the_exit_code(env, fleet, images) -> None:  # type: ignore[no-untyped-def]
    v1 = ok_json(env, "release", "create", "hello", images["v1"])
    canary = fleet[0]
    canary.release.clear()  # hold the canary so the watch sees the rollout move
    exe = Path(sys.executable).parent / "tinyfleet"
    watch = subprocess.Popen([str(exe), "rollout", "start", "hello", "1.0", "--to", f"group:{PREFIX}", "--canary", "1",
                              "--batch", "1", "--health-timeout", "30", "--watch", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        first = json.loads(watch.stdout.readline())  # type: ignore[union-attr]
        assert first["state"] == "running" and first["release"] == v1["id"] and first["total"] == 3
    finally:
        canary.release.set()
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    lines = [first, *(json.loads(line) for line in out.splitlines())]
    assert lines[-1]["state"] == "completed" and lines[-1]["counts"]["converged"] == 3
    assert [line["batches_started"] for line in lines] == sorted(line["batches_started"] for line in lines)
    started = lines[-1]
    assert run(env, "rollout", "pause", str(started["id"])).returncode == 8, "a completed rollout cannot pause"
    shown = run(env, "rollout", "status", str(started["id"]))
    assert shown.returncode == 0 and "completed" in shown.stdout and "converged" in shown.stdout
    recent = run(env, "rollout", "status")
    assert recent.returncode == 0 and f"group:{PREFIX}" in recent.stdout

    v3 = ok_json(env, "release", "create", "hello", images["v3"])
    for d in fleet:
        d.fail_images.add(v3["image"])
    bad = run(env, "rollout", "start", "hello", str(v3["id"]), "--to", f"group:{PREFIX}", "--watch", "--json",
              "--health-timeout", "30")
    assert bad.returncode == 1, "an aborted rollout exits 1"
    final = json.loads(bad.stdout.splitlines()[-1])
    assert final["state"] == "aborted" and final["counts"]["reverted"] == 1 and final["counts"]["skipped"] == 2
    assert all(d.runs("hello") == v1["image"] for d in fleet)


def test_pause_resume_and_abort(env, fleet, images) -> None:  # type: ignore[no-untyped-def]
    ok_json(env, "release", "create", "hello", images["v1"])
    blocker = fleet[0]
    blocker.release.clear()
    try:
        other = ok_json(env, "release", "create", "other", images["v1"])
        r = ok_json(env, "rollout", "start", "other", str(other["id"]), "--to", f"group:{PREFIX}")
        assert ok_json(env, "rollout", "pause", str(r["id"]))["state"] == "paused"
        assert run(env, "rollout", "pause", str(r["id"])).returncode == 8
        assert ok_json(env, "rollout", "resume", str(r["id"]))["state"] == "running"
        aborted = ok_json(env, "rollout", "abort", str(r["id"]))
        assert aborted["state"] == "aborted"
    finally:
        blocker.release.set()


def test_devices_watch_follows_the_fleet_until_interrupted(env, fleet) -> None:  # type: ignore[no-untyped-def]
    exe = Path(sys.executable).parent / "tinyfleet"
    proc = subprocess.Popen([str(exe), "devices", "--watch", "--json", "--interval", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert f"{PREFIX}-0" in {d["id"] for d in first}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


@pytest.mark.parametrize("override,code,message", [
    ({"TINYFLEET_TOKEN_FILE": "/nonexistent/token"}, 2, "no API token"),
    ({"TINYFLEET_TOKEN": "wrong-token", "TINYFLEET_TOKEN_FILE": ""}, 7, "missing or wrong API token"),
    ({"TINYFLEET_URL": "http://127.0.0.1:9"}, 6, "cannot reach the controller"),
])
def test_connection_problems_have_their_own_exit_codes(env, override, code, message) -> None:  # type: ignore[no-untyped-def]
    result = run({**env, **override}, "devices")
    assert result.returncode == code and message in result.stderr, result.stderr


def test_the_config_file_supplies_url_and_token(env, ctl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "cli.toml"
    config.write_text(f'url = "{ctl.url}"\ntoken_file = "{ctl.token_file}"\n')
    result = run({"TINYFLEET_CONFIG": str(config), "TINYFLEET_URL": "", "TINYFLEET_TOKEN_FILE": ""}, "devices",
                 "--json")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args,message", [
    (["--listen", "nonsense"], "must be HOST:PORT"),
    (["--broker", "http://127.0.0.1:1883"], "mqtt://HOST"),
    (["--broker", "mqtt://user:secret@127.0.0.1:1883"], "not in the URL"),
])
def test_the_controller_refuses_bad_settings(tmp_path, args, message) -> None:  # type: ignore[no-untyped-def]
    result = tinyfleet("controller", "--db", str(tmp_path / "c.db"), "--listen", f"127.0.0.1:{free_port()}", *args,
                       timeout=30)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "secret" not in result.stderr


def test_the_controller_says_so_when_its_port_is_taken(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tinyfleet("controller", "--db", str(tmp_path / "c.db"), "--listen", f"127.0.0.1:{port}",
                           "--broker", "mqtt://127.0.0.1:9", timeout=30)
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
