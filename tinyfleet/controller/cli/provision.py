"""`tinyfleet provision flash | customize | serial | credentials`: put the agent onto boards, either
baked into an SD card image or installed over a serial console, each device with its own MQTT
identity that the broker learns through its password file."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import structlog

from tinyfleet.agent import logs
from tinyfleet.controller.cli.common import Exit, fail, human_bytes, print_json
from tinyfleet.provisioning import credentials, errors, flash, target, wheelhouse
from tinyfleet.provisioning.board import board_python, existing_secret, install, read_identity
from tinyfleet.provisioning.bootpartition import Customized, customize
from tinyfleet.provisioning.console import Console
from tinyfleet.provisioning.device import DeviceSettings
from tinyfleet.provisioning.fat import FatVolume
from tinyfleet.provisioning.firstboot import BootOptions, Style, Wifi
from tinyfleet.provisioning.image import open_image
from tinyfleet.provisioning.installer import AgentSource
from tinyfleet.provisioning.shell import Shell

DEFAULT_PASSWD = os.environ.get("TINYFLEET_MOSQUITTO_PASSWD", ".tinyfleet/mosquitto.passwd")
EXIT = {errors.TruncatedImage: Exit.REFUSED, errors.ImageError: Exit.REFUSED, errors.TargetError: Exit.REFUSED,
        errors.VerifyFailed: Exit.FAILED, errors.FatError: Exit.FAILED, errors.ConsoleClosed: Exit.UNAVAILABLE,
        errors.ConsoleError: Exit.UNAVAILABLE, errors.LoginFailed: Exit.UNAUTHORIZED, errors.StepFailed: Exit.FAILED,
        errors.CredentialError: Exit.USAGE}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("provision", help="put the agent onto boards: SD card images and serial consoles")
    cmds = group.add_subparsers(dest="provision_command", metavar="COMMAND", required=True)

    f = cmds.add_parser("flash", help="write an image (.img/.xz/.gz/.zip) with the agent baked in, then verify")
    f.add_argument("image", metavar="IMAGE", type=Path)
    f.add_argument("--target", required=True, type=Path, help="a card (/dev/sdX) or an image file to create")
    f.add_argument("--yes", action="store_true", help="do not ask before overwriting a block device")
    _device_flags(f)
    _boot_flags(f)
    f.set_defaults(handler=do_flash)

    c = cmds.add_parser("customize", help="bake the agent into a raw .img file in place, without flashing")
    c.add_argument("image", metavar="IMAGE", type=Path)
    _device_flags(c)
    _boot_flags(c)
    c.set_defaults(handler=do_customize)

    s = cmds.add_parser("serial", help="install the agent on a running board over its serial console")
    s.add_argument("--port", required=True, help="/dev/ttyUSB0, socket://HOST:PORT or rfc2217://HOST:PORT")
    s.add_argument("--baud", type=int, default=115200, help="line speed (8N1; default 115200)")
    s.add_argument("--user", required=True, help="login name: root, or a user who may sudo (e.g. pi)")
    s.add_argument("--password-file", type=Path, help="file holding the login password (never on the command line)")
    s.add_argument("--login-timeout", type=float, default=60.0, metavar="SECONDS")
    _install_flags(s)
    _device_flags(s)
    s.set_defaults(handler=do_serial)

    w = cmds.add_parser("wheelhouse", help="the agent and its dependency wheels for a board (then install offline)")
    w.add_argument("--out", required=True, type=Path, help="folder to fill (give it later as --wheelhouse)")
    w.add_argument("--wheel", type=Path, help="the agent wheel (default: built from this source checkout)")
    w.add_argument("--platform", default=wheelhouse.DEFAULT_PLATFORM, help="the board's (default linux/arm64)")
    w.add_argument("--board-python", default=wheelhouse.DEFAULT_PYTHON, metavar="X.Y",
                   help="the board's python3 (default 3.11, Debian/Raspberry Pi OS bookworm)")
    w.add_argument("--index-url", help="where the dependencies are downloaded from (default PyPI)")
    w.add_argument("--json", action="store_true")
    w.set_defaults(handler=do_wheelhouse)

    cr = cmds.add_parser("credentials", help="per-device MQTT credentials the broker knows (hashes only)")
    ccmds = cr.add_subparsers(dest="credentials_command", metavar="COMMAND", required=True)
    for name, helptext, handler in (("list", "device ids with broker credentials", do_cred_list),
                                    ("export", "the password-file entries, for mosquitto or the controller",
                                     do_cred_export),
                                    ("revoke", "remove a device's credentials", do_cred_revoke),
                                    ("acl", "Mosquitto ACL patterns: each device reaches only its own topics",
                                     do_cred_acl)):
        p = ccmds.add_parser(name, help=helptext)
        _passwd_flag(p)
        if name == "revoke":
            p.add_argument("device_id", metavar="DEVICE_ID")
        if name == "export":
            p.add_argument("--format", choices=("mosquitto", "json"), default="mosquitto")
        if name == "list":
            p.add_argument("--json", action="store_true")
        if name == "acl":
            p.add_argument("--controller-user", default="controller",
                           help="the controller's MQTT user, which may use every device's topics (default controller)")
        p.set_defaults(handler=handler)


def _passwd_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passwd-file", type=Path, default=Path(DEFAULT_PASSWD),
                   help="the broker's Mosquitto password file to add this device to "
                        "(env TINYFLEET_MOSQUITTO_PASSWD; default .tinyfleet/mosquitto.passwd)")


def _device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-id", required=True, type=_device_id, help="the device's id, also its MQTT username")
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT (no credentials)")
    p.add_argument("--ca-file", type=Path, help="PEM CA certificate for mqtts with a private CA")
    p.add_argument("--platform", help="override the agent's platform detection, e.g. linux/arm/v6")
    p.add_argument("--controller-key", metavar="FILE",
                   help="the controller's signing-key.pub (or its text, ed25519:...): the board runs what it signs")
    p.add_argument("--insecure-accept-unsigned", action="store_true",
                   help="no controller key: the board accepts desired states from any broker client (tests only)")
    p.add_argument("--mqtt-password-file", type=Path,
                   help="use this device secret instead of a new random one (the file's first line)")
    _passwd_flag(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")


def _device_id(text: str) -> str:
    """Refused before anything is touched: a reserved name (the controller's broker user) or a bad id."""
    try:
        return credentials.check_device_username(text)
    except errors.CredentialError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _boot_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--first-boot", choices=("auto", *[s.value for s in Style]), default="auto",
                   help="first-boot format: cloud-init (current Raspberry Pi OS), firstrun (bookworm-era); "
                        "default: detect from the boot partition")
    _install_flags(p)
    p.add_argument("--board-python", default=wheelhouse.DEFAULT_PYTHON, metavar="X.Y",
                   help="the image's python3, for the bundled wheels (default 3.11: Raspberry Pi OS bookworm)")
    p.add_argument("--hostname")
    p.add_argument("--wifi-ssid")
    p.add_argument("--wifi-psk-file", type=Path, help="file holding the Wi-Fi passphrase")
    p.add_argument("--wifi-country", default="GB", help="regulatory domain (default GB)")
    p.add_argument("--ssh-key", type=Path, help="public key file to authorise for --ssh-user")
    p.add_argument("--ssh-user", default="pi")
    p.add_argument("--enable-uart", action="store_true", help="enable_uart=1 and a serial console on cmdline.txt")


def _install_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wheelhouse", type=Path, metavar="DIR",
                   help="the agent and its dependencies (`tinyfleet provision wheelhouse`): installed with no network")
    p.add_argument("--wheel", type=Path,
                   help="the agent wheel; its dependency wheels for the board are fetched (or taken from the cache) "
                        "and carried along too, unless --index-url is given")
    p.add_argument("--index-url", help="the board installs from this pip index instead (with --wheel: only the "
                                       "dependencies); by default it needs no index at all")


def _wheels(args: argparse.Namespace, platform: str | None, python: str, work: Path) -> tuple[tuple[Path, ...],
                                                                                                str | None]:
    """What the board gets: (wheels, the pinned agent requirement they satisfy with no index), or a lone
    agent wheel whose dependencies come from --index-url, or nothing (all from --index-url)."""
    if args.wheelhouse:
        house = wheelhouse.load(args.wheelhouse)
        return house.wheels, house.requirement
    if args.index_url:
        return ((args.wheel,) if args.wheel else ()), None
    house = wheelhouse.build(work, platform or wheelhouse.DEFAULT_PLATFORM, python, args.wheel)
    return house.wheels, house.requirement


def _configure_logging(verbose: bool) -> None:
    logs.configure("info" if verbose else "warning")


def _first_line(path: Path, what: str) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise errors.CredentialError(f"cannot read {what} {path}: {exc.strerror}") from exc
    return lines[0].strip() if lines else ""


def _settings(args: argparse.Namespace, secret: str | None = None) -> tuple[DeviceSettings, bool]:
    """The device's settings with its credential (reused when `secret` still matches the broker's hash).
    The broker's password file learns the credential before the device does."""
    passwd = credentials.PasswordFile(args.passwd_file)
    known = passwd.hash_for(args.device_id)
    reused = bool(secret and known and credentials.matches(secret, known))
    if not reused:
        given = _first_line(args.mqtt_password_file, "--mqtt-password-file") if args.mqtt_password_file else None
        cred = credentials.issue(args.device_id, given)
    else:
        cred = credentials.DeviceCredential(args.device_id, secret or "")
    ca = None
    if args.ca_file:
        try:
            ca = args.ca_file.read_text()
        except OSError as exc:
            raise errors.CredentialError(f"cannot read --ca-file {args.ca_file}: {exc.strerror}") from exc
    settings = DeviceSettings(args.device_id, args.broker, cred.username, cred.secret, ca, args.platform,
                              _controller_key(args.controller_key), args.insecure_accept_unsigned)
    if not reused:
        passwd.put(cred)
    return settings, reused


def _controller_key(given: str | None) -> str | None:
    if given is None or given.startswith("ed25519:"):
        return given
    try:
        return Path(given).read_text().strip()
    except OSError as exc:
        raise errors.CredentialError(f"cannot read --controller-key {given}: {exc.strerror}") from exc


def _boot_options(args: argparse.Namespace) -> BootOptions:
    wifi = None
    if args.wifi_ssid:
        if not args.wifi_psk_file:
            raise errors.CredentialError("--wifi-ssid needs --wifi-psk-file")
        wifi = Wifi(args.wifi_ssid, _first_line(args.wifi_psk_file, "--wifi-psk-file"), args.wifi_country)
    ssh_key = _first_line(args.ssh_key, "--ssh-key") if args.ssh_key else None
    if args.wheel and not args.wheel.is_file():
        raise errors.CredentialError(f"--wheel {args.wheel} is not a file")
    return BootOptions(hostname=args.hostname, wifi=wifi, ssh_user=args.ssh_user, ssh_key=ssh_key,
                       enable_uart=args.enable_uart, index_url=args.index_url)


def _style(args: argparse.Namespace) -> Style | None:
    return None if args.first_boot == "auto" else Style(args.first_boot)


def _report(args: argparse.Namespace, summary: dict) -> None:
    if args.json:
        print_json(summary)
    else:
        for key, value in summary.items():
            print(f"{key:>18}: {', '.join(value) if isinstance(value, list) else value}")


def _customized(done: Customized) -> dict:
    return {"first_boot": done.style.value, "boot_files_written": list(done.written), "cmdline": done.cmdline,
            "boot_label": done.label}


def do_wheelhouse(args: argparse.Namespace) -> int:
    _configure_logging(False)
    try:
        house = wheelhouse.build(args.out, args.platform, args.board_python, args.wheel, args.index_url)
    except errors.ProvisioningError as exc:
        return fail(str(exc), EXIT.get(type(exc), Exit.FAILED))
    _report(args, {"wheelhouse": str(house.folder), "agent": house.requirement, "platform": args.platform,
                   "python": args.board_python, "wheels": [w.name for w in house.wheels]})
    return Exit.OK


def do_customize(args: argparse.Namespace) -> int:
    _configure_logging(args.verbose)
    try:
        options = _boot_options(args)
        flash.check_customizable(args.image)
        settings, _ = _settings(args)
        with tempfile.TemporaryDirectory(prefix="tinyfleet-wheelhouse-") as work:
            wheels, pinned = _wheels(args, args.platform, args.board_python, Path(work))
            table, boot, done = flash.customize_in_place(
                args.image, lambda vol: customize(vol, settings, options, _style(args), wheels, pinned))
    except errors.ProvisioningError as exc:
        return fail(str(exc), EXIT.get(type(exc), Exit.FAILED))
    _report(args, {"image": str(args.image), "device_id": args.device_id, "partition_table": table.scheme,
                   "boot_partition": f"{boot.number} at {boot.start} bytes", **_customized(done)})
    return Exit.OK


def _confirm(args: argparse.Namespace, tgt: target.Target) -> bool:
    if not tgt.is_block or args.yes:
        return True
    if not sys.stdin.isatty():
        return False
    answer = input(f"Write {args.image} to {tgt.path} ({human_bytes(tgt.size)})? Everything on it is lost. [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def do_flash(args: argparse.Namespace) -> int:
    _configure_logging(args.verbose)
    stack = contextlib.ExitStack()
    try:
        options = _boot_options(args)
        tgt = target.check(args.target, args.image)
        if not _confirm(args, tgt):
            return fail(f"not writing {tgt.path}: confirm with --yes (or answer y at the prompt)", Exit.REFUSED)
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="tinyfleet-wheelhouse-"))
        wheels, pinned = _wheels(args, args.platform, args.board_python, Path(work))

        def bake(volume: FatVolume) -> Customized:  # the credential is issued once the image proved readable
            return customize(volume, _settings(args)[0], options, _style(args), wheels, pinned)

        with open_image(args.image) as image, _progress(args) as progress:
            written = flash.write(image, tgt.path, bake, progress)
        flash.verify(written)
    except errors.ProvisioningError as exc:
        return fail(str(exc), EXIT.get(type(exc), Exit.FAILED))
    finally:
        stack.close()
    _report(args, {"target": str(written.target), "device_id": args.device_id, "bytes": written.size,
                   "sha256": written.sha256, "verified": True, "partition_table": written.table.scheme,
                   **_customized(written.customized)})
    return Exit.OK


class _progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.live = sys.stderr.isatty() and not args.json
        self.bar = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.live:
            return None
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, Progress, TimeRemainingColumn
        self.bar = Progress("[progress.description]{task.description}", BarColumn(), "{task.percentage:>3.0f}%",
                            "{task.fields[written]} written", TimeRemainingColumn(), console=RichConsole(stderr=True))
        self.bar.start()
        task = self.bar.add_task("writing", total=1.0, written="0 B")
        return lambda fraction, written: self.bar.update(  # type: ignore[union-attr]
            task, completed=fraction, written=human_bytes(written))

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def do_serial(args: argparse.Namespace) -> int:
    _configure_logging(args.verbose)
    log = structlog.get_logger("tinyfleet.provision")
    try:
        password = _first_line(args.password_file, "--password-file") if args.password_file else None
        if args.wheel and not args.wheel.is_file():
            raise errors.CredentialError(f"--wheel {args.wheel} is not a file")
        with Console.open(args.port, args.baud) as console:
            shell = Shell(console)
            log.info("logging in", port=args.port, user=args.user)
            shell.login(args.user, password, args.login_timeout)
            level = shell.quiet_kernel()
            identity = read_identity(shell)
            log.info("board identified", serial=identity.serial, model=identity.model, arch=identity.arch)
            settings, reused = _settings(args, existing_secret(shell))
            with tempfile.TemporaryDirectory(prefix="tinyfleet-wheelhouse-") as work:
                wheels, pinned = _wheels(args, args.platform or identity.platform, board_python(shell), Path(work))
                active = install(shell, settings, AgentSource(args.index_url), wheels, pinned)
            shell.run(f"echo {int(level) if level.isdigit() else 7} > /proc/sys/kernel/printk",
                      "restore console log level")
            shell.logout()
    except errors.ProvisioningError as exc:
        return fail(str(exc), EXIT.get(type(exc), Exit.FAILED))
    _report(args, {"device_id": args.device_id, "serial_number": identity.serial, "model": identity.model,
                   "architecture": identity.arch, "platform": args.platform or identity.platform or "unknown",
                   "secret": "kept (still valid)" if reused else "new", "agent_active": active})
    return Exit.OK


def do_cred_list(args: argparse.Namespace) -> int:
    try:
        names = sorted(credentials.PasswordFile(args.passwd_file).entries())
    except errors.ProvisioningError as exc:
        return fail(str(exc), EXIT.get(type(exc), Exit.FAILED))
    if args.json:
        print_json(names)
    else:
        print("\n".join(names))
    return Exit.OK


def do_cred_export(args: argparse.Namespace) -> int:
    try:
        entries = credentials.PasswordFile(args.passwd_file).entries()
    except errors.ProvisioningError as exc:
        return fail(str(exc), EXIT.get(type(exc), Exit.FAILED))
    if args.format == "json":
        print_json([{"device_id": user, "mqtt_username": user, "password_hash": hashed}
                    for user, hashed in entries.items()])
    else:
        sys.stdout.write("".join(f"{user}:{hashed}\n" for user, hashed in entries.items()))
    return Exit.OK


def do_cred_revoke(args: argparse.Namespace) -> int:
    try:
        removed = credentials.PasswordFile(args.passwd_file).remove(args.device_id)
    except errors.ProvisioningError as exc:
        return fail(str(exc), EXIT.get(type(exc), Exit.FAILED))
    if not removed:
        return fail(f"{args.device_id} has no credentials in {args.passwd_file}", Exit.NOT_FOUND)
    print(f"revoked {args.device_id} (reload the broker: kill -HUP its pid)")
    return Exit.OK


def do_cred_acl(args: argparse.Namespace) -> int:
    try:
        sys.stdout.write(credentials.acl(args.controller_user))
    except errors.CredentialError as exc:
        return fail(str(exc), Exit.USAGE)
    return Exit.OK

