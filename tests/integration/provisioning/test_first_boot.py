"""The first-boot scripts baked into an image, run for real on a board (a shell in its own mount
namespace, as the serial tests use): secrets leave the boot partition for /etc/tinyfleet (0600),
the installer unit is enabled, and the installer it runs leaves the agent active."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path

import pytest

from tests.support import piimage, serialboard
from tests.support.cli import CONTROLLER_KEY, tinyfleet
from tinyfleet.provisioning.console import Console
from tinyfleet.provisioning.shell import Shell

PASSWORD = "Board-Pass-7f3e"


def extract_boot(image: Path, dest: Path) -> Path:
    dest.mkdir()
    piimage.run("mcopy", "-s", "-n", "-i", f"{image}@@{piimage.BOOT_START}", "::/*", str(dest), env=piimage.MTOOLS_ENV)
    return dest


@pytest.mark.parametrize("variant", ["firstrun-short-names", "cloud-init"])
def test_first_boot_moves_the_secret_and_installs_the_agent(pi_image, start_board, agent_wheel, tmp_path,
                                                            variant) -> None:  # type: ignore[no-untyped-def]
    image = pi_image(variant)
    baked = tinyfleet("provision", "customize", str(image), "--device-id", "pi-0200", "--broker",
                      "mqtt://10.0.0.1:1883", "--passwd-file", str(tmp_path / "passwd"), "--hostname", "pi-fb",
                      "--wheel", str(agent_wheel), "--controller-key", CONTROLLER_KEY)
    assert baked.returncode == 0, baked.stderr
    boot = extract_boot(image, tmp_path / "boot")
    secret_before = tomllib.loads((boot / "tinyfleet" / "agent.toml").read_text())["mqtt_password"]
    board = start_board(password=PASSWORD, env=serialboard.env_for_offline_pip(agent_wheel.parent))
    with Console.open(board.url) as console:
        sh = Shell(console)
        sh.login("root", PASSWORD, timeout=20)
        if variant == "cloud-init":
            runcmd = re.search(r"- \[sh, (\S+), --now\]", (boot / "user-data").read_text())
            assert runcmd is not None
            command = f"sh {runcmd.group(1).replace('/boot/firmware', str(boot))} --now"
        else:
            command = f"bash {next(boot.glob('firstrun.sh'))}"  # what systemd.run= runs
        first = sh.run(command, "first boot", timeout=60)
        assert first.ok, first.output
        installed = sh.run("sh /usr/local/lib/tinyfleet/install-agent.sh", "tinyfleet-install.service", timeout=300)
        assert installed.ok, installed.output
    config = board.etc("/etc/tinyfleet/agent.toml")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert tomllib.loads(config.read_text())["mqtt_password"] == secret_before
    assert not (boot / "tinyfleet" / "agent.toml").exists(), "the secret is gone from the boot partition"
    assert (board.state / "systemd" / "tinyfleet-install.service.enabled").exists()
    assert board.unit_state("tinyfleet-agent.service") == "active"
    assert (board.state / "usr-local-lib" / "tinyfleet" / "wheels" / agent_wheel.name).exists()
    wheels = board.state / "usr-local-lib" / "tinyfleet" / "wheels"
    assert list(wheels.glob("paho_mqtt-*.whl")), "its dependencies too"
    cmdline = next(p for p in boot.iterdir() if p.name.lower() == "cmdline.txt").read_text()
    assert "systemd.run" not in cmdline and cmdline.count("\n") == 1
    if variant != "cloud-init":
        assert not (boot / "firstrun.sh").exists(), "firstrun.sh removes itself"
        assert board.etc("/etc/hostname").read_text().strip() == "pi-fb"
