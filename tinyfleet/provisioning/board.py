"""Provision a running board over its console: who it is, the agent installed, its configuration
written (mode 0600, root), the unit enabled and running. Every step is named, bounded in time, and
safe to repeat: re-running on a provisioned board keeps its secret and ends in the same state."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import structlog

from tinyfleet.provisioning.device import CA_PATH, CONFIG_PATH, DeviceSettings
from tinyfleet.provisioning.errors import StepFailed
from tinyfleet.provisioning.installer import AgentSource, agent_steps
from tinyfleet.provisioning.shell import Shell

log = structlog.get_logger("tinyfleet.provisioning.board")

ARCH_PLATFORM = {"armv6l": "linux/arm/v6", "armv7l": "linux/arm/v7", "armv8l": "linux/arm/v7",
                 "aarch64": "linux/arm64", "arm64": "linux/arm64", "x86_64": "linux/amd64", "i686": "linux/386",
                 "riscv64": "linux/riscv64"}
WHEEL_DIR = "/usr/local/lib/tinyfleet/wheels"
IDENTITY = ("cat /sys/firmware/devicetree/base/serial-number 2>/dev/null | tr -d '\\000'; echo; "
            "cat /proc/device-tree/model 2>/dev/null | tr -d '\\000'; echo; uname -m; cat /etc/machine-id 2>/dev/null")


@dataclass(frozen=True)
class Identity:
    serial: str
    model: str
    arch: str
    machine_id: str

    @property
    def platform(self) -> str | None:
        return ARCH_PLATFORM.get(self.arch)


def parse_identity(output: str) -> Identity:
    lines = (output.replace("\r", "").split("\n") + ["", "", "", ""])[:4]
    serial, model, arch, machine_id = (line.strip() for line in lines)
    return Identity(serial.lstrip("0") or serial or machine_id, model or "unknown", arch, machine_id)


def read_identity(shell: Shell) -> Identity:
    identity = parse_identity(shell.run(IDENTITY, "read identity", check=True).output)
    if not identity.arch:
        raise StepFailed("read identity", "uname -m printed nothing", shell.seen())
    return identity


def existing_secret(shell: Shell) -> str | None:
    """The MQTT password in the board's current agent.toml, if any (read unrecorded: it is a secret)."""
    with shell.console.unrecorded("existing agent.toml read (secret, not shown)"):
        result = shell.run(f"cat {CONFIG_PATH} 2>/dev/null", "read existing configuration")
    if not result.ok:
        return None
    try:
        value = tomllib.loads(result.output).get("mqtt_password")
    except tomllib.TOMLDecodeError:
        return None
    if isinstance(value, str):
        shell.console.redact(value)
        return value
    return None


def board_python(shell: Shell) -> str:
    """The board's python3 as MAJOR.MINOR (the wheelhouse must be built for it)."""
    out = shell.run("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'", "read python version",
                    check=True).output.strip()
    return out.splitlines()[-1] if out else ""


def install(shell: Shell, settings: DeviceSettings, source: AgentSource, wheels: tuple[Path, ...] = (),
            pinned: str | None = None) -> bool:
    """Everything after login and identity. Returns whether the unit ended active. `wheels` are uploaded
    (each checked by sha256) to the board's wheel folder; with `pinned` pip installs from them alone."""
    shell.run("command -v python3 >/dev/null && python3 -c 'import venv, ensurepip'", "check python3-venv",
              check=True)
    for number, wheel in enumerate(wheels, start=1):
        shell.upload(wheel.read_bytes(), f"{WHEEL_DIR}/{wheel.name}", f"upload wheel {number}/{len(wheels)} "
                                                                        f"({wheel.name})")
    if wheels and pinned:
        source = AgentSource(find_links=WHEEL_DIR, pinned=pinned)
    elif wheels:
        source = AgentSource(source.index_url, f"{WHEEL_DIR}/{wheels[0].name}")
    shell.run("install -d -m 0755 -o root -g root /etc/tinyfleet", "create /etc/tinyfleet", check=True)
    if settings.ca_pem is not None:
        shell.upload(settings.ca_pem.encode(), CA_PATH, "upload CA certificate", mode="0644")
    shell.console.redact(settings.mqtt_password)
    shell.upload(settings.agent_toml().encode(), CONFIG_PATH, "write agent configuration", mode="0600", secret=True)
    shell.run(f"chown root:root {CONFIG_PATH} && [ \"$(stat -c %a {CONFIG_PATH})\" = 600 ]",
              "check configuration permissions", check=True)
    for step in agent_steps(source):
        log.info("board step", step=step.name)
        shell.run(step.command, step.name, timeout=step.timeout, check=True)
    return True
