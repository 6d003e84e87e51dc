"""What a board's wheelhouse is made of: pip platform tags for the board's architecture, and a folder
that holds exactly one agent wheel, whose version is what the board installs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyfleet.provisioning.errors import CredentialError
from tinyfleet.provisioning.installer import AgentSource, agent_steps
from tinyfleet.provisioning.wheelhouse import load, platform_tags


@pytest.mark.parametrize("platform, first, last", [
    ("linux/arm64", "manylinux_2_17_aarch64", "linux_aarch64"),
    ("linux/arm/v7", "manylinux_2_17_armv7l", "linux_armv7l"),
    ("linux/arm/v6", "manylinux_2_17_armv6l", "linux_armv6l"),
])
def test_wheels_are_chosen_for_the_boards_own_architecture(platform, first, last) -> None:
    tags = platform_tags(platform)
    assert tags[0] == first and tags[-1] == last
    assert "manylinux_2_36_" + last.split("_", 1)[1] in tags  # bookworm's glibc


def test_a_platform_without_wheels_is_refused() -> None:
    with pytest.raises(CredentialError, match="no wheels for platform"):
        platform_tags("linux/s390x")


def test_a_wheelhouse_pins_the_agent_version_it_holds(tmp_path: Path) -> None:
    for name in ("tinyfleet-0.1.0-py3-none-any.whl", "paho_mqtt-2.2.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    house = load(tmp_path)
    assert house.requirement == "tinyfleet==0.1.0" and len(house.wheels) == 2


@pytest.mark.parametrize("names, error", [
    ((), "holds 0"),
    (("tinyfleet-0.1.0-py3-none-any.whl", "tinyfleet-0.2.0-py3-none-any.whl"), "holds 2"),
])
def test_a_wheelhouse_needs_exactly_one_agent(tmp_path: Path, names, error) -> None:
    for name in names:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(CredentialError, match=error):
        load(tmp_path)


def test_the_install_step_uses_no_index_with_a_wheelhouse() -> None:
    install = {s.name: s.command for s in agent_steps(AgentSource(find_links="/w", pinned="tinyfleet==0.1.0"))}
    assert "--no-index --find-links /w tinyfleet==0.1.0" in install["install agent"]
