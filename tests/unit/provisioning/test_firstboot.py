"""First-boot plans: the cmdline stays one line, every edit is idempotent, and each image gets the
format it expects."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import CONTROLLER_KEY
from tinyfleet.provisioning.device import DeviceSettings
from tinyfleet.provisioning.firstboot import (
    FIRSTRUN_TOKENS,
    NOCLOUD_TOKEN,
    BootOptions,
    Style,
    Wifi,
    detect,
    edit_cmdline,
    edit_config_txt,
    plan,
    seed_label,
)

BASE = "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
SETTINGS = DeviceSettings("pi-0001", "mqtts://broker.example.com:8883", "pi-0001", "s3cret-with-\"quote\"",
                          controller_key=CONTROLLER_KEY)


@pytest.mark.parametrize("cmdline, add, remove, expected", [
    ("a b\n", ("c",), (), "a b c\n"),
    ("a b c\n", ("c",), (), "a b c\n"),  # already there: unchanged
    ("a\nb\r\n", ("c",), (), "a b c\n"),  # a second line is folded into the one line
    ("a systemd.run=/x systemd.run_success_action=reboot b", ("z",), ("systemd.run",), "a b z\n"),
    ("", ("c",), (), "c\n"),
])
def test_cmdline_edits_keep_one_line(cmdline: str, add: tuple, remove: tuple, expected: str) -> None:
    assert edit_cmdline(cmdline, add, remove) == expected
    assert edit_cmdline(expected, add, remove) == expected


@pytest.mark.parametrize("config, expected_tail", [
    ("", "enable_uart=1\n"),
    ("dtparam=audio=on\n", "dtparam=audio=on\nenable_uart=1\n"),
    ("a=1\n[cm4]\notg_mode=1\n", "[cm4]\notg_mode=1\n\n[all]\nenable_uart=1\n"),
    ("a=1\n[cm4]\notg_mode=1\n[all]\nb=2", "[all]\nb=2\nenable_uart=1\n"),
])
def test_enable_uart_applies_to_every_model_and_only_once(config: str, expected_tail: str) -> None:
    once = edit_config_txt(config)
    assert once.endswith(expected_tail)
    assert edit_config_txt(once) == once


def test_enable_uart_under_a_model_section_does_not_count() -> None:
    text = "[pi0]\nenable_uart=1\n"
    assert edit_config_txt(text).endswith("[all]\nenable_uart=1\n")


@pytest.mark.parametrize("names, cmdline, style", [
    (["config.txt", "cmdline.txt", "user-data", "meta-data"], BASE, Style.CLOUD_INIT),
    (["CONFIG.TXT", "CMDLINE.TXT", "NETWORK-CONFIG"], BASE, Style.CLOUD_INIT),
    (["config.txt", "cmdline.txt"], BASE + " ds=nocloud", Style.CLOUD_INIT),
    (["config.txt", "cmdline.txt"], BASE, Style.FIRSTRUN),
])
def test_detect_the_first_boot_format(names: list[str], cmdline: str, style: Style) -> None:
    assert detect(names, cmdline) is style


def test_cloud_init_plan_seeds_nocloud_and_runs_the_first_boot_script() -> None:
    edits = plan(Style.CLOUD_INIT, SETTINGS, BootOptions(hostname="pi-one", ssh_key="ssh-ed25519 AAAA op@x"), BASE,
                 None)
    assert NOCLOUD_TOKEN in edits.cmdline.split() and edits.cmdline.count("\n") == 1
    user_data = edits.files["user-data"].decode()
    assert user_data.startswith("#cloud-config\n")
    assert "/boot/firmware/tinyfleet/firstboot.sh, --now]" in user_data
    assert '"ssh-ed25519 AAAA op@x"' in user_data and 'hostname: "pi-one"' in user_data
    assert "mqtt_password" not in user_data, "the secret stays in tinyfleet/agent.toml, which first boot deletes"
    assert edits.secrets == ("tinyfleet/agent.toml",)
    assert edits.delete == ("firstrun.sh",)
    assert edits.config_txt is None


def test_firstrun_plan_appends_systemd_run_tokens_once() -> None:
    edits = plan(Style.FIRSTRUN, SETTINGS, BootOptions(enable_uart=True), BASE, "arm_boost=1\n")
    again = plan(Style.FIRSTRUN, SETTINGS, BootOptions(enable_uart=True), edits.cmdline, edits.config_txt)
    assert again.cmdline == edits.cmdline
    assert edits.cmdline.rstrip("\n").endswith(" ".join(FIRSTRUN_TOKENS))
    assert edits.cmdline.count("console=serial0,115200") == 1
    assert again.config_txt == edits.config_txt and edits.config_txt.count("enable_uart=1") == 1
    script = edits.files["firstrun.sh"].decode()
    assert 'sh "$HERE/tinyfleet/firstboot.sh"' in script and 'rm -f "$HERE/firstrun.sh"' in script


def test_switching_format_removes_the_other_formats_cmdline_tokens() -> None:
    firstrun = plan(Style.FIRSTRUN, SETTINGS, BootOptions(), BASE, None).cmdline
    cloud = plan(Style.CLOUD_INIT, SETTINGS, BootOptions(), firstrun, None).cmdline
    assert "systemd.run" not in cloud and NOCLOUD_TOKEN in cloud
    back = plan(Style.FIRSTRUN, SETTINGS, BootOptions(), cloud, None).cmdline
    assert "ds=nocloud" not in back and back == firstrun


def test_an_image_with_its_own_nocloud_seed_keeps_it() -> None:
    own = BASE.strip() + " ds=nocloud;s=file:///boot/custom/\n"
    assert plan(Style.CLOUD_INIT, SETTINGS, BootOptions(), own, None).cmdline == own


def test_wifi_values_are_escaped_and_marked_secret() -> None:
    wifi = Wifi('my "home" net: 5G', 'pa$$ "word"\\', "DE")
    edits = plan(Style.CLOUD_INIT, SETTINGS, BootOptions(wifi=wifi), BASE, None)
    network = edits.files["network-config"].decode()
    ssid_line = next(line for line in network.splitlines() if "my" in line).strip().rstrip(":")
    psk_line = next(line for line in network.splitlines() if "password:" in line).split("password: ", 1)[1]
    assert json.loads(ssid_line) == wifi.ssid and json.loads(psk_line) == wifi.psk
    assert "network-config" in edits.secrets


def test_meta_data_instance_id_is_stable_for_the_same_inputs() -> None:
    one = plan(Style.CLOUD_INIT, SETTINGS, BootOptions(hostname="a"), BASE, None).files["meta-data"]
    two = plan(Style.CLOUD_INIT, SETTINGS, BootOptions(hostname="a"), BASE, None).files["meta-data"]
    other = plan(Style.CLOUD_INIT, SETTINGS, BootOptions(hostname="b"), BASE, None).files["meta-data"]
    assert one == two != other


def test_a_lone_bundled_wheel_is_installed_from_the_board_copy_with_its_dependencies_from_the_index() -> None:
    options = BootOptions(wheels=("tinyfleet-0.1.0-py3-none-any.whl",), index_url="https://pypi.example/simple")
    edits = plan(Style.CLOUD_INIT, SETTINGS, options, BASE, None)
    installer = edits.files["tinyfleet/install-agent.sh"].decode()
    assert "/usr/local/lib/tinyfleet/wheels/tinyfleet-0.1.0-py3-none-any.whl" in installer
    assert "--index-url https://pypi.example/simple" in installer and "--no-index" not in installer
    assert '"$HERE"/wheels/*.whl' in edits.files["tinyfleet/firstboot.sh"].decode()


def test_a_wheelhouse_on_the_card_installs_with_no_index_at_all() -> None:
    options = BootOptions(wheels=("tinyfleet-0.1.0-py3-none-any.whl", "paho_mqtt-2.2.0-py3-none-any.whl"),
                          pinned="tinyfleet==0.1.0")
    installer = plan(Style.CLOUD_INIT, SETTINGS, options, BASE, None).files["tinyfleet/install-agent.sh"].decode()
    assert "--no-index --find-links /usr/local/lib/tinyfleet/wheels tinyfleet==0.1.0" in installer
    assert "--index-url" not in installer


@pytest.mark.parametrize("current, files, wanted", [
    ("BOOTFS", {"network-config": b"x"}, "CIDATA"),  # Raspberry Pi OS: mounted by PARTUUID, safe to relabel
    ("bootfs", {"network-config": b"x"}, "CIDATA"),
    ("CIDATA", {"network-config": b"x"}, None),  # already (an earlier run)
    ("BOOTFS", {"user-data": b"x"}, None),  # no network-config: nothing to make cloud-init find
    ("system-boot", {"network-config": b"x"}, None),  # Ubuntu mounts its boot partition by this label
])
def test_a_card_with_network_config_is_labelled_so_every_cloud_init_reads_it(current, files, wanted) -> None:
    assert seed_label(current, files) == wanted
