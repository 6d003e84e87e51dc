"""Provisioning over a serial console: a real shell behind a login prompt on a pty, reached through
socket:// (socat), with kernel messages on the console until it is quieted, echo on or off, a wrong
password, a dropped line, a hanging command, and a 100 KB upload checked by sha256."""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from pathlib import Path

import pytest

from tests.support import serialboard
from tests.support.cli import CONTROLLER_KEY, tinyfleet
from tinyfleet.provisioning import credentials
from tinyfleet.provisioning.console import Console
from tinyfleet.provisioning.errors import ConsoleError, LoginFailed, StepFailed
from tinyfleet.provisioning.shell import KERNEL_LINE, Shell

PASSWORD = "Board-Pass-7f3e"
AGENT_UNIT = "tinyfleet-agent.service"


def serial(board: serialboard.SerialBoard, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    (tmp_path / "login-password").write_text(PASSWORD + "\n")
    result = tinyfleet("provision", "serial", "--port", board.url, "--user", "root", "--password-file",
                       str(tmp_path / "login-password"), "--device-id", "pi-0100", "--broker", "mqtt://10.0.0.1:1883",
                       "--passwd-file", str(tmp_path / "passwd"), "--login-timeout", "20", "-v",
                       "--controller-key", CONTROLLER_KEY, *extra)
    return result.returncode, result.stdout, result.stderr


def test_serial_provisioning_installs_configures_and_starts_the_agent_and_is_idempotent(
        start_board, agent_wheel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD, env=serialboard.env_for_offline_pip(agent_wheel.parent))
    code, out, err = serial(board, tmp_path, "--wheel", str(agent_wheel))
    assert code == 0, err
    config_file = board.etc("/etc/tinyfleet/agent.toml")
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600 and config_file.stat().st_uid == 0
    config = tomllib.loads(config_file.read_text())
    assert (config["device_id"], config["broker"], config["mqtt_username"]) == ("pi-0100", "mqtt://10.0.0.1:1883",
                                                                               "pi-0100")
    broker_knows = credentials.PasswordFile(tmp_path / "passwd").entries()["pi-0100"]
    assert credentials.matches(config["mqtt_password"], broker_knows)
    assert board.unit_state(AGENT_UNIT) == "active"
    assert (board.state / "opt/tinyfleet/bin/tinyfleet-agent").exists(), "the agent's venv is at /opt/tinyfleet"
    unit = board.etc("/etc/systemd/system/tinyfleet-agent.service").read_text()
    assert "ExecStart=/opt/tinyfleet/bin/tinyfleet-agent --config /etc/tinyfleet/agent.toml" in unit
    for secret in (config["mqtt_password"], PASSWORD):
        assert secret not in out + err, "secrets never reach the output or the logs"
    assert "x86_64" in out or "aarch64" in out
    assert board.console_level() == "7", "the console log level is put back afterwards"

    again_code, again_out, again_err = serial(board, tmp_path, "--wheel", str(agent_wheel))
    assert again_code == 0, again_err
    assert "kept" in again_out
    assert tomllib.loads(config_file.read_text()) == config
    assert board.unit_state(AGENT_UNIT) == "active"


@pytest.mark.parametrize("echo, shell, garbage", [(True, "bash", False), (False, "sh", True)])
def test_login_through_kernel_noise_then_a_checked_100kb_upload(start_board, tmp_path, echo, shell, garbage) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD, echo=echo, shell=shell, garbage=garbage)
    data = os.urandom(100 * 1024)
    dest = tmp_path / "upload" / "blob.bin"
    with Console.open(board.url) as console:
        sh = Shell(console)
        sh.login("root", PASSWORD, timeout=20)
        assert KERNEL_LINE.search(console.transcript()), "kernel messages were on the console during login"
        sh.quiet_kernel()
        assert board.console_level() == "1"
        sh.upload(data, str(dest), "upload blob", mode="0640")
        check = sh.run(f"sha256sum < {dest} | cut -c1-64; stat -c %a {dest}", "check upload", check=True)
        failing = sh.run("echo partial; exit 3", "failing command")
    assert dest.read_bytes() == data
    assert check.output.split() == [hashlib.sha256(data).hexdigest(), "640"]
    assert (failing.exit_code, failing.output) == (3, "partial\n"), "real exit codes, output without echo"


def test_an_already_logged_in_shell_is_used_as_it_is(start_board) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD)
    with Console.open(board.url) as console:
        sh = Shell(console)
        sh.login("root", PASSWORD, timeout=20)
        pid = sh.run("echo $PPID", "shell pid").output
        sh.login("root", None, timeout=20)  # no password needed: the shell is already there
        assert sh.run("echo $PPID", "shell pid").output == pid


def test_a_wrong_password_fails_naming_the_step_and_showing_the_console(start_board, tmp_path) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password="the-real-one-123")
    code, out, err = serial(board, tmp_path)
    assert code == 7, err
    assert "step 'login'" in err and "Login incorrect" in err and "console showed last" in err
    assert PASSWORD not in err + out
    assert not (tmp_path / "passwd").exists(), "no credential for a board we never reached"


def test_a_dropped_line_is_reported_as_transient(start_board, tmp_path) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD, drop_after_login=True)
    code, _, err = serial(board, tmp_path)
    assert code == 6, err
    assert "dropped" in err


def test_a_hanging_step_times_out_with_its_name_and_the_shell_recovers(start_board) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD)
    with Console.open(board.url) as console:
        sh = Shell(console)
        sh.login("root", PASSWORD, timeout=20)
        with pytest.raises(StepFailed, match=r"step 'wait for godot': no answer within 1s"):
            sh.run("sleep 30", "wait for godot", timeout=1)
        assert sh.run("echo still here", "after the timeout", timeout=10).output == "still here\n"


def test_errors_from_the_line_are_typed(start_board) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD)
    with Console.open(board.url) as console, pytest.raises(LoginFailed, match="asks for a password"):
        Shell(console).login("root", None, timeout=10)
    board.stop()
    with pytest.raises(ConsoleError, match="cannot open the console"):
        Console.open(board.url)


def test_a_sudoer_login_becomes_root_through_sudo_and_logs_out(start_board) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD, user="pi")
    with Console.open(board.url) as console:
        sh = Shell(console)
        sh.login("pi", PASSWORD, timeout=20)
        assert sh.run("id -u; echo $SUDO_USER", "who am i", check=True).output.split() == ["0", "pi"]
        sh.logout()
        assert sh.depth == 0
        assert PASSWORD not in console.transcript()


def test_a_user_who_may_not_sudo_gets_a_clear_error(start_board) -> None:  # type: ignore[no-untyped-def]
    board = start_board(password=PASSWORD, user="pi", sudoer=False)
    with Console.open(board.url) as console, pytest.raises(LoginFailed, match="step 'become root'"):
        Shell(console).login("pi", PASSWORD, timeout=20)
