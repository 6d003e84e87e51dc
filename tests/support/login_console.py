"""A board's serial console for tests: a getty-like login prompt in front of a real shell, on the
pty it is started on (`socat ... EXEC:...,pty`). Run as
    python -m tests.support.login_console --password-file F [--echo off] [--shell sh|bash] [--drop-after-login]

It behaves like agetty + login on a Raspberry Pi: a banner, `raspberrypi login:`, `Password:` with
echo off, `Login incorrect` after a delay, then a login shell. Kernel messages are written to the
console at the level the kernel would print them: while the first field of /proc/sys/kernel/printk
(bind-mounted to a test file inside the board's namespace) is above 6, noise keeps coming - on top of
prompts, typing and command output - and it stops once the console log level is lowered."""

from __future__ import annotations

import argparse
import os
import pwd
import random
import sys
import termios
import time

PRINTK = "/proc/sys/kernel/printk"
NOISE = ["usb 1-1.3: new high-speed USB device number 4 using dwc_otg",
         "brcmfmac: brcmf_c_preinit_dcmds: Firmware: BCM4345/6 wl0: Nov  1 2021 00:37:25",
         "Under-voltage detected! (0x00050005)", "EXT4-fs (mmcblk0p2): re-mounted. Opts: (null)",
         "Bluetooth: hci0: BCM: chip id 107"]


def console_level() -> int:
    try:
        with open(PRINTK) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 7


def start_noise(fd: int, seconds: float, interval: float) -> None:
    """A child process writing kernel messages to the console while the log level lets them through."""
    if os.fork() != 0:
        return
    started = time.monotonic()
    rnd = random.Random(os.getpid())
    try:
        while time.monotonic() - started < seconds:
            time.sleep(rnd.uniform(interval / 2, interval))
            if console_level() > 6:
                stamp = time.monotonic() - started + 3.0
                os.write(fd, f"[{stamp:12.6f}] {rnd.choice(NOISE)}\r\n".encode())
    except OSError:
        pass
    os._exit(0)


def set_echo(fd: int, on: bool) -> None:
    attrs = termios.tcgetattr(fd)
    attrs[3] = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def read_line(fd: int) -> str | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            return None
        data += chunk
    return data.decode(errors="replace").strip()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", default="root")
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--echo", choices=("on", "off"), default="on")
    parser.add_argument("--shell", default="bash")
    parser.add_argument("--noise-seconds", type=float, default=30.0)
    parser.add_argument("--drop-after-login", action="store_true")
    parser.add_argument("--garbage", action="store_true", help="line noise before the banner (a baud mismatch)")
    args = parser.parse_args()
    with open(args.password_file) as f:
        password = f.read().strip()
    fd = sys.stdin.fileno()
    attrs = termios.tcgetattr(fd)
    attrs[1] |= termios.OPOST | termios.ONLCR  # output \r\n like a real console
    attrs[3] |= termios.ICANON | termios.ISIG | termios.ECHOE
    attrs[0] |= termios.ICRNL  # the Enter key sends \r
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    os.write(fd, f"[{2.5:12.6f}] {NOISE[0]}\r\n".encode())  # the boot is still talking when we connect
    start_noise(fd, args.noise_seconds, 0.4)
    if args.garbage:
        os.write(fd, random.Random(1).randbytes(512).replace(b"\n", b"~"))
    os.write(fd, b"\r\nDebian GNU/Linux 12 raspberrypi ttyS0\r\n\r\n")
    while True:
        set_echo(fd, args.echo == "on")
        os.write(fd, b"raspberrypi login: ")
        user = read_line(fd)
        if user is None:
            return 0
        if not user:
            continue
        os.write(fd, b"Password: ")
        set_echo(fd, False)
        given = read_line(fd)
        set_echo(fd, args.echo == "on")
        os.write(fd, b"\r\n")
        if given is None:
            return 0
        if user != args.user or given != password:
            time.sleep(0.3)
            os.write(fd, b"\r\nLogin incorrect\r\n")
            continue
        if args.drop_after_login:
            return 0  # the cable is pulled right after logging in
        os.write(fd, b"Linux raspberrypi 6.6.51+rpt-rpi-v8 #1 SMP PREEMPT aarch64\r\n\r\n")
        account = pwd.getpwnam(args.user)
        if account.pw_uid != 0:  # log in as that user, as login(1) would
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
        prompt = "root@raspberrypi:~# " if account.pw_uid == 0 else f"{args.user}@raspberrypi:~ $ "
        env = {"PATH": os.environ["PATH"], "HOME": account.pw_dir, "TERM": "vt100", "USER": args.user,
               "PS1": prompt, **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "TF_"))}}
        argv = [args.shell, "--norc", "--noprofile", "-i"] if args.shell.endswith("bash") else [args.shell, "-i"]
        os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    sys.exit(main())
