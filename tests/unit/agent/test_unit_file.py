"""The systemd unit the agent ships: restarts always, feeds a watchdog, and keeps least privilege
while still reaching the Docker socket."""

from __future__ import annotations

from pathlib import Path

from tinyfleet.agent.cli import unit_text

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "tinyfleet-agent.service"


def directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_packaged_unit_is_the_repository_unit() -> None:
    assert unit_text() == UNIT.read_text()


def test_unit_restarts_always_and_uses_the_watchdog() -> None:
    d = directives(UNIT.read_text())
    assert d["Type"] == "notify" and d["Restart"] == "always" and int(d["WatchdogSec"]) > 0
    assert d["ExecStart"].startswith("/opt/tinyfleet/bin/tinyfleet-agent --config /etc/tinyfleet/agent.toml")


def test_unit_is_hardened_without_locking_out_the_docker_socket() -> None:
    d = directives(UNIT.read_text())
    assert d["CapabilityBoundingSet"] == "" and d["NoNewPrivileges"] == "yes" and d["ProtectSystem"] == "strict"
    assert "AF_UNIX" in d["RestrictAddressFamilies"]
    assert "InaccessiblePaths" not in d and d.get("PrivateNetwork", "no") == "no"
    assert d["StateDirectory"] == "tinyfleet"
