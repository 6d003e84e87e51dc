"""Pure: what to put on a boot partition so the first boot installs the agent. Two formats, the ones
Raspberry Pi Imager writes: cloud-init NoCloud files (current Raspberry Pi OS) and `firstrun.sh` run
by `systemd.run=` (bookworm-era images). Every edit is idempotent: applying a plan to its own output
changes nothing but the per-run secret.

On the boot partition (mounted at /boot/firmware on the board):
    tinyfleet/agent.toml            the device's config with its secret; moved to /etc/tinyfleet (0600), then deleted
    tinyfleet/ca.pem                optional private CA
    tinyfleet/firstboot.sh          moves secrets, installs tinyfleet-install.service (runs after network-online)
    tinyfleet/install-agent.sh      the installer steps (provisioning.installer), also used over serial
    tinyfleet/wheels/*.whl          the agent and its dependencies for the board (a wheelhouse): installed
                                    with `pip --no-index --find-links`, no network needed
    user-data, meta-data, network-config   (cloud-init)   |   firstrun.sh   (firstrun)

network-config: cloud-init reads it from a NoCloud seed *directory* or from a file system labelled
CIDATA, but through `s=file://` seedfrom (how Raspberry Pi OS points cloud-init at /boot/firmware)
cloud-init 22.4 (Debian bookworm) reads only meta-data, user-data and vendor-data: the Wi-Fi settings
would be lost. So when a card carries a network-config, its boot partition is labelled CIDATA
(`seed_label`): every cloud-init version finds the seed by label, and Raspberry Pi OS mounts the
partition by PARTUUID, not by label.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from enum import StrEnum

from tinyfleet.provisioning.device import CA_PATH, CONFIG_PATH, DeviceSettings
from tinyfleet.provisioning.installer import AgentSource, agent_steps, as_script

BOOT_MOUNT = "/boot/firmware"  # where Raspberry Pi OS (bookworm and later) mounts the boot partition
SUBDIR = "tinyfleet"
FIRSTRUN_TOKENS = ("systemd.run=/boot/firstrun.sh", "systemd.run_success_action=reboot",
                   "systemd.unit=kernel-command-line.target")
NOCLOUD_TOKEN = f"ds=nocloud;s=file://{BOOT_MOUNT}/"
SERIAL_CONSOLE_TOKEN = "console=serial0,115200"
WHEELS = f"{SUBDIR}/wheels"  # on the boot partition
BOARD_WHEELS = "/usr/local/lib/tinyfleet/wheels"
SEED_LABEL = "CIDATA"
RELABELLED = ("bootfs", "cidata")  # Raspberry Pi OS's label (mounted by PARTUUID), or ours from an earlier run
INSTALL_UNIT = """\
[Unit]
Description=tinyfleet: install the agent (first boot, retried until it succeeds)
Wants=network-online.target
After=network-online.target
ConditionPathExists=!/var/lib/tinyfleet/.installed

[Service]
Type=oneshot
ExecStart=/bin/sh /usr/local/lib/tinyfleet/install-agent.sh
ExecStartPost=/bin/sh -c 'mkdir -p /var/lib/tinyfleet && touch /var/lib/tinyfleet/.installed'
Restart=on-failure
RestartSec=30

[Install]
WantedBy=multi-user.target
"""


class Style(StrEnum):
    CLOUD_INIT = "cloud-init"
    FIRSTRUN = "firstrun"


@dataclass(frozen=True)
class Wifi:
    ssid: str
    psk: str
    country: str = "GB"


@dataclass(frozen=True)
class BootOptions:
    hostname: str | None = None
    wifi: Wifi | None = None
    ssh_user: str = "pi"
    ssh_key: str | None = None
    enable_uart: bool = False
    index_url: str | None = None
    wheels: tuple[str, ...] = ()  # wheel file names the caller puts in tinyfleet/wheels/
    pinned: str | None = None  # with wheels: the agent requirement they satisfy, installed with no index


@dataclass(frozen=True)
class BootEdits:
    files: dict[str, bytes] = field(default_factory=dict)
    cmdline: str = ""
    config_txt: str | None = None  # None: leave config.txt alone
    delete: tuple[str, ...] = ()  # files of the other style, left by an earlier run
    secrets: tuple[str, ...] = ()  # which of `files` hold secrets (never logged)


def detect(names: list[str], cmdline: str) -> Style:
    """cloud-init when the image already carries NoCloud seed files or asks for them on the cmdline."""
    lowered = {n.lower() for n in names}
    if lowered & {"user-data", "meta-data", "network-config"} or "ds=nocloud" in cmdline:
        return Style.CLOUD_INIT
    return Style.FIRSTRUN


def edit_cmdline(cmdline: str, add: tuple[str, ...], remove_prefixes: tuple[str, ...] = ()) -> str:
    """One line in, one line out: drop tokens by prefix, then append each token not already there."""
    tokens = [t for t in cmdline.replace("\r", " ").replace("\n", " ").split()
              if not any(t.startswith(p) for p in remove_prefixes)]
    for token in add:
        if token not in tokens:
            tokens.append(token)
    return " ".join(tokens) + "\n"


def edit_config_txt(text: str) -> str:
    """Make sure `enable_uart=1` applies to every model: under [all] (or before any section)."""
    section = "all"
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
        elif line.replace(" ", "") == "enable_uart=1" and section == "all":
            return text
    tail = "" if text.endswith("\n") or not text else "\n"
    if section == "all":  # already in effect for every model at the end of the file
        return f"{text}{tail}enable_uart=1\n"
    return f"{text}{tail}\n[all]\nenable_uart=1\n"


def plan(style: Style, settings: DeviceSettings, options: BootOptions, cmdline: str,
         config_txt: str | None) -> BootEdits:
    files: dict[str, bytes] = {f"{SUBDIR}/agent.toml": settings.agent_toml().encode()}
    secrets = [f"{SUBDIR}/agent.toml"]
    if settings.ca_pem is not None:
        files[f"{SUBDIR}/ca.pem"] = settings.ca_pem.encode()
    steps = agent_steps(_source(options))
    files[f"{SUBDIR}/install-agent.sh"] = as_script(steps, "# tinyfleet: install the agent (first boot)").encode()
    files[f"{SUBDIR}/tinyfleet-install.service"] = INSTALL_UNIT.encode()
    files[f"{SUBDIR}/firstboot.sh"] = _firstboot_sh(options).encode()
    serial = (SERIAL_CONSOLE_TOKEN,) if options.enable_uart else ()
    if style is Style.CLOUD_INIT:
        user_data = _user_data(options)
        files["user-data"] = user_data.encode()
        files["meta-data"] = _meta_data(settings, options, user_data).encode()
        if options.wifi is not None:
            files["network-config"] = _network_config(options.wifi).encode()
            secrets.append("network-config")
        new_cmdline = edit_cmdline(cmdline, (NOCLOUD_TOKEN, *serial), ("systemd.run", "systemd.unit=kernel-command"))
        if any(t.startswith("ds=") and t != NOCLOUD_TOKEN for t in cmdline.split()):  # keep the image's own seed
            new_cmdline = edit_cmdline(cmdline, serial, ("systemd.run", "systemd.unit=kernel-command"))
        delete: tuple[str, ...] = ("firstrun.sh",)
    else:
        files["firstrun.sh"] = _firstrun_sh(options).encode()
        if options.wifi is not None:
            secrets.append("firstrun.sh")
        new_cmdline = edit_cmdline(cmdline, (*FIRSTRUN_TOKENS, *serial),
                                   ("systemd.run", "systemd.unit=kernel-command", "ds=nocloud"))
        delete = ()
    config = edit_config_txt(config_txt or "") if options.enable_uart else None
    return BootEdits(files, new_cmdline, config, delete, tuple(secrets))


def _source(options: BootOptions) -> AgentSource:
    if options.wheels and options.pinned:
        return AgentSource(find_links=BOARD_WHEELS, pinned=options.pinned)
    if options.wheels:  # one agent wheel, its dependencies from the index
        return AgentSource(options.index_url, f"{BOARD_WHEELS}/{options.wheels[0]}")
    return AgentSource(options.index_url)


def seed_label(current: str, files: dict[str, bytes]) -> str | None:
    """The label the boot partition needs so every cloud-init reads its network-config (None: leave it).
    Only Raspberry Pi OS's own label is replaced: other systems may mount the partition by its label."""
    if "network-config" in files and current.strip().lower() in RELABELLED and current.strip() != SEED_LABEL:
        return SEED_LABEL
    return None


def _yaml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML flow scalar, with every escape right


def _firstboot_sh(options: BootOptions) -> str:
    wheel = ""
    if options.wheels:
        wheel = (f"install -d -m 0755 {BOARD_WHEELS}\n"
                 f'for w in "$HERE"/wheels/*.whl; do install -m 0644 "$w" {BOARD_WHEELS}/; done\n')
    return f"""#!/bin/sh
# tinyfleet first boot (written by `tinyfleet provision`): takes this device's secrets off the boot
# partition into /etc/tinyfleet (root only), then leaves the agent install to tinyfleet-install.service,
# which waits for the network and retries until pip succeeds.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
umask 077
install -d -m 0755 -o root -g root /etc/tinyfleet /usr/local/lib/tinyfleet
if [ -f "$HERE/agent.toml" ]; then
  install -m 0600 -o root -g root "$HERE/agent.toml" {CONFIG_PATH}
  rm -f "$HERE/agent.toml"
fi
if [ -f "$HERE/ca.pem" ]; then
  install -m 0644 -o root -g root "$HERE/ca.pem" {CA_PATH}
  rm -f "$HERE/ca.pem"
fi
{wheel}install -m 0755 "$HERE/install-agent.sh" /usr/local/lib/tinyfleet/install-agent.sh
install -m 0644 "$HERE/tinyfleet-install.service" /etc/systemd/system/tinyfleet-install.service
systemctl enable tinyfleet-install.service
if [ "${{1:-}}" = "--now" ]; then systemctl start --no-block tinyfleet-install.service; fi
sync
"""


def _user_data(options: BootOptions) -> str:
    lines = ["#cloud-config", "# written by `tinyfleet provision`"]
    if options.hostname:
        lines += [f"hostname: {_yaml(options.hostname)}", "manage_etc_hosts: true"]
    if options.ssh_key:
        lines += ["users:", f"  - name: {_yaml(options.ssh_user)}", "    groups: users,adm,dialout,sudo",
                  "    shell: /bin/bash", "    sudo: ALL=(ALL) NOPASSWD:ALL", "    lock_passwd: true",
                  "    ssh_authorized_keys:", f"      - {_yaml(options.ssh_key.strip())}",
                  "ssh_pwauth: false"]
    lines.append("runcmd:")
    if options.ssh_key:
        lines.append("  - [systemctl, enable, --now, ssh]")
    lines.append(f"  - [sh, {BOOT_MOUNT}/{SUBDIR}/firstboot.sh, --now]")
    return "\n".join(lines) + "\n"


def _meta_data(settings: DeviceSettings, options: BootOptions, user_data: str) -> str:
    # A new instance-id makes cloud-init run again on a re-flashed card; derived, so re-runs agree.
    digest = hashlib.sha256(user_data.encode()).hexdigest()[:12]
    lines = [f"instance-id: {_yaml('tinyfleet-' + settings.device_id + '-' + digest)}"]
    if options.hostname:
        lines.append(f"local-hostname: {_yaml(options.hostname)}")
    return "\n".join(lines) + "\n"


def _network_config(wifi: Wifi) -> str:
    return (f"network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n      optional: true\n"
            f"      regulatory-domain: {_yaml(wifi.country)}\n      access-points:\n"
            f"        {_yaml(wifi.ssid)}:\n          password: {_yaml(wifi.psk)}\n")


def _firstrun_sh(options: BootOptions) -> str:
    q = shlex.quote
    parts = ["#!/bin/bash", "# tinyfleet firstrun (written by `tinyfleet provision`), run once by systemd.run=",
             "set +e", 'HERE=$(cd "$(dirname "$0")" && pwd)', "CUSTOM=/usr/lib/raspberrypi-sys-mods/imager_custom"]
    if options.hostname:
        h = q(options.hostname)
        parts += [f'if [ -x "$CUSTOM" ]; then "$CUSTOM" set_hostname {h}; else',
                  '  OLD=$(tr -d " \\t\\n\\r" < /etc/hostname)', f"  echo {h} > /etc/hostname",
                  f'  sed -i "s/127.0.1.1.*$OLD/127.0.1.1\\t"{h}"/g" /etc/hosts', "fi"]
    if options.ssh_key:
        u, k = q(options.ssh_user), q(options.ssh_key.strip())
        parts += [f'if [ -x "$CUSTOM" ]; then "$CUSTOM" enable_ssh -k {k}; else',
                  f'  HOMEDIR=$(getent passwd {u} | cut -d: -f6); install -d -m 700 -o {u} "$HOMEDIR/.ssh"',
                  f'  grep -qxF {k} "$HOMEDIR/.ssh/authorized_keys" 2>/dev/null || echo {k} >> '
                  '"$HOMEDIR/.ssh/authorized_keys"',
                  f'  chown {u} "$HOMEDIR/.ssh/authorized_keys"; chmod 600 "$HOMEDIR/.ssh/authorized_keys"',
                  "  systemctl enable ssh", "fi"]
    if options.wifi:
        s, p, c = q(options.wifi.ssid), q(options.wifi.psk), q(options.wifi.country)
        parts += [f'if [ -x "$CUSTOM" ]; then "$CUSTOM" set_wlan {s} {p} {c}; else',
                  "  umask 077; F=/etc/NetworkManager/system-connections/preconfigured.nmconnection",
                  f"  printf '[connection]\\nid=preconfigured\\ntype=wifi\\n[wifi]\\nmode=infrastructure\\nssid=%s\\n"
                  f"[wifi-security]\\nkey-mgmt=wpa-psk\\npsk=%s\\n[ipv4]\\nmethod=auto\\n' {s} {p} > \"$F\"",
                  f"  iw reg set {c} 2>/dev/null; rfkill unblock wifi 2>/dev/null", "fi"]
    tokens = " ".join(FIRSTRUN_TOKENS)
    parts += ['sh "$HERE/tinyfleet/firstboot.sh"',
              # vfat finds cmdline.txt in any case; a copy of the partition elsewhere may not
              'CMDLINE="$HERE/cmdline.txt"; for f in "$HERE"/*; do',
              '  [ "$(basename "$f" | tr "[:upper:]" "[:lower:]")" = cmdline.txt ] && CMDLINE=$f; done',
              f"sed -i 's| {tokens}||' \"$CMDLINE\"",
              'rm -f "$HERE/firstrun.sh"', "exit 0"]
    return "\n".join(parts) + "\n"
