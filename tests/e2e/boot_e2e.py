"""A flashed card boots and the board comes online, on a real booted arm64 system.

Run with `bash scripts/dev.sh e2e-boot` (it builds the Pi-like image first; this file is not named
test_*.py so the main test run leaves it out). The image (TINYFLEET_PI_IMAGE, an .img.xz made by
scripts/build-pi-image.sh) is Debian bookworm arm64 laid out like Raspberry Pi OS, with cloud-init
22.4 reading the boot partition through NoCloud seedfrom as Raspberry Pi OS does.

The story, as a user lives it: pack an arm64 app, `tinyfleet provision flash` the .xz onto a card with
a hostname, an SSH key, Wi-Fi settings and the controller's key; boot the card (qemu-system-aarch64,
no network but the broker and the registry on this machine's loopback); the board installs the agent
from the wheels on its card (no package index), comes online, takes a rollout; then reboots and keeps
running what it ran, with nothing of the first boot done again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.images import publish_demo
from tests.support.bootvm import LAB_HOST, BootVM
from tests.support.cli import tinyfleet
from tests.support.fleet import ControllerProcess
from tinyfleet.oci.platform import Platform

DEVICE = "pi-e2e-0001"
HOSTNAME = "pi-kitchen"
SSID, PSK = "TinyfleetLab", "correct horse battery staple"
BOOT_TO_ONLINE_S = 1500  # TCG emulates every instruction: first boot (cloud-init, pip, dockerd) is slow
BROKER_PORT_IN_VM = 1883


@dataclass
class LiveController(ControllerProcess):
    """`tinyfleet controller` with production heartbeat settings (a real agent beats every 30 s)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at = self.proc.argv.index("--heartbeat-interval")
        del self.proc.argv[at:at + 2]


def figure(name: str, seconds: float) -> None:
    print(f"\n[e2e-boot] {name}: {seconds:.0f} s", flush=True)


def wait_for(check, timeout: float, what: str, vm: BootVM, interval: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert vm.proc is not None
        vm.proc.check_alive()
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r}); console tail:\n{vm.console()[-4000:]}")


@pytest.fixture(scope="module")
def pi_image() -> Path:
    given = os.environ.get("TINYFLEET_PI_IMAGE")
    assert given and Path(given).is_file(), \
        "TINYFLEET_PI_IMAGE must name the Pi-like image: run `bash scripts/dev.sh e2e-boot`, which builds it"
    return Path(given)


def test_a_flashed_card_boots_comes_online_takes_a_rollout_and_survives_a_reboot(  # type: ignore[no-untyped-def]
        pi_image, mosquitto, registry, demo_binaries, tmp_path) -> None:
    started = time.monotonic()
    ctl = LiveController(tmp_path / "controller", mosquitto.url).start()
    vm = None
    try:
        api = ctl.client()
        env = {"TINYFLEET_URL": ctl.url, "TINYFLEET_TOKEN_FILE": str(ctl.token_file), "TINYFLEET_CONFIG": "/none"}
        arm64 = {p: b for p, b in demo_binaries.items() if p == Platform.parse("linux/arm64")}
        app = publish_demo(f"127.0.0.1:{registry.port}", "e2e/hello", "1.0", arm64, version="1.0",
                           env=(("TINYHELLO_INTERVAL", "5"),))

        # --- the card ---------------------------------------------------------------------------------
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
        (tmp_path / "psk").write_text(PSK + "\n")
        card = tmp_path / "card.img"
        flashed = tinyfleet("provision", "flash", str(pi_image), "--target", str(card), "--device-id", DEVICE,
                            "--broker", f"mqtt://{LAB_HOST}:{BROKER_PORT_IN_VM}", "--hostname", HOSTNAME,
                            "--ssh-key", str(tmp_path / "id.pub"), "--wifi-ssid", SSID,
                            "--wifi-psk-file", str(tmp_path / "psk"), "--wifi-country", "DE",
                            "--controller-key", str(ctl.root / "signing-key.pub"),
                            "--passwd-file", str(tmp_path / "mosquitto.passwd"), "--json", timeout=900)
        assert flashed.returncode == 0, flashed.stderr
        summary = json.loads(flashed.stdout)
        assert summary["verified"] and summary["first_boot"] == "cloud-init", summary
        assert summary["boot_label"] == "CIDATA", summary
        wheels = [f for f in summary["boot_files_written"] if f.startswith("tinyfleet/wheels/")]
        assert any(w.startswith("tinyfleet/wheels/paho_mqtt-") for w in wheels), wheels

        # --- first boot -------------------------------------------------------------------------------
        vm = BootVM(card, tmp_path / "vm", forwards={BROKER_PORT_IN_VM: mosquitto.port, registry.port: registry.port},
                    loopback_ports=(registry.port,), ssh_key=tmp_path / "id").start()

        def online() -> bool:
            return any(d["id"] == DEVICE and d["online"] for d in api.devices())

        wait_for(online, BOOT_TO_ONLINE_S, f"{DEVICE} online", vm)
        figure("boot to online (first boot: cloud-init, agent installed from the card's wheels)",
               time.monotonic() - vm.started_at)
        listed = tinyfleet("devices", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert {d["id"]: d["online"] for d in json.loads(listed.stdout)}[DEVICE] is True
        assert api.device(DEVICE)["platform"] == "linux/arm64"

        vm.wait_ssh(300)  # the provisioned user, with the provisioned key
        first_boot = vm.root_shell("systemctl show -p ActiveEnterTimestampMonotonic --value tinyfleet-agent.service")
        figure("first boot: kernel start -> agent active (cloud-init, venv, pip from the card)", int(first_boot) / 1e6)
        assert vm.root_shell("hostname").strip() == HOSTNAME
        assert vm.root_shell("cat ~pi/.ssh/authorized_keys").strip() == (tmp_path / "id.pub").read_text().strip()
        assert vm.root_shell("stat -c '%a %U' /etc/tinyfleet/agent.toml").split() == ["600", "root"]
        assert "controller_key = \"ed25519:" in vm.root_shell("cat /etc/tinyfleet/agent.toml")
        assert vm.root_shell("ls /boot/firmware/tinyfleet/; ls /boot/firmware/tinyfleet/wheels | wc -l").count(
            "agent.toml") == 0, "the secret stays on the boot partition"
        assert vm.root_shell("systemctl is-active tinyfleet-agent.service").strip() == "active"
        assert "--no-index" in vm.root_shell("cat /usr/local/lib/tinyfleet/install-agent.sh")
        # the Wi-Fi settings reached the board: cloud-init 22.4 rendered them from the card's network-config
        netplan = vm.root_shell("cat /etc/netplan/50-cloud-init.yaml")
        assert SSID in netplan and "wlan0" in netplan, netplan
        assert "22.4" in vm.root_shell("cloud-init --version 2>&1")
        status = vm.root_shell("cloud-init status --wait --long 2>&1 || true")
        assert "status: done" in status, status

        # --- a rollout lands on the board's own engine ------------------------------------------------
        created = tinyfleet("release", "create", "hello", app.tag_ref, "--json", env=env, timeout=120)
        assert created.returncode == 0, created.stderr
        release = json.loads(created.stdout)
        rolled = tinyfleet("rollout", "start", "hello", str(release["id"]), "--to", f"device:{DEVICE}",
                           "--health-timeout", "900", "--json", env=env, timeout=120)
        assert rolled.returncode == 0, rolled.stderr

        def app_running() -> dict | None:
            apps = api.device(DEVICE)["apps"]
            return apps[0] if apps and apps[0].get("release") == release["id"] and \
                apps[0].get("phase") == "running" else None

        shown = wait_for(app_running, 900, "hello 1.0 running on the board", vm)
        generation = api.device(DEVICE)["reported_generation"]
        containers = vm.root_shell("docker ps --filter label=io.tinyfleet.app=hello "
                                   "--format '{{.Image}} {{.Status}}'")
        assert "healthy" in containers and f"127.0.0.1:{registry.port}/e2e/hello" in containers, (containers, shown)

        # --- reboot: the app still runs, nothing of the first boot again -----------------------------
        boot_id = vm.root_shell("cat /proc/sys/kernel/random/boot_id").strip()
        vm.ssh("sudo systemctl reboot", timeout=30)
        rebooted = time.monotonic()

        def booted_again() -> bool:
            done = vm.ssh("cat /proc/sys/kernel/random/boot_id", timeout=30)
            return done.returncode == 0 and done.stdout.strip() not in ("", boot_id)

        wait_for(booted_again, 900, "the VM back after its reboot", vm)
        wait_for(lambda: vm.ssh("sudo docker ps --filter label=io.tinyfleet.app=hello -q", timeout=30).stdout.strip(),
                 900, "the app running again after the reboot", vm)
        wait_for(online, 900, f"{DEVICE} online after the reboot", vm)
        figure("reboot to online", time.monotonic() - rebooted)
        assert api.device(DEVICE)["reported_generation"] == generation
        assert app_running() is not None
        # the board is online before cloud-init's last stage has run on this boot: wait for it to finish
        assert "status: done" in vm.root_shell("cloud-init status --wait 2>&1 || true", timeout=600)
        log = vm.root_shell("cat /var/log/cloud-init.log")
        # cloud-init names a module's run as listed in cloud.cfg ("config-scripts-user"; "scripts_user" in
        # some releases): both spellings count.
        ran = len(re.findall(r"Running config-scripts[-_]user using lock", log))
        skipped = len(re.findall(r"config-scripts[-_]user already ran", log))
        assert log.count("running 'init-local'") == 2, "cloud-init ran on both boots"
        assert ran == 1 and skipped >= 1, f"the first-boot commands ran once, then were skipped: {(ran, skipped)}"
        assert vm.root_shell("ls /var/lib/cloud/instances | wc -l").strip() == "1"
        figure("e2e wall time", time.monotonic() - started)
    finally:
        if vm is not None:
            (tmp_path / "vm" / "serial.log").exists() and print(f"[e2e-boot] serial console: {vm.serial_log}")
            vm.stop()
        ctl.stop()
