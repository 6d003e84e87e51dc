"""A running "board" behind a serial console, for tests: socat relays a loopback TCP port
(pyserial's socket://) to a pty on which login_console.py shows a login prompt in front of a real
shell. The board lives in its own mount namespace, so installing the agent there writes real files
at the real paths (/opt/tinyfleet, /etc/tinyfleet, /etc/systemd/system, /usr/local/lib/tinyfleet)
without touching this machine: /opt and /usr/local/lib are folders of the test, /etc is a copy of
this machine's /etc in the test's folder (overlayfs on the sandbox's own overlay root fails now and
then, a copy never does), /proc/sys/kernel/printk is a test file, and systemctl is
fake_systemctl (no systemd runs in the sandbox). Every connection gets a fresh login on the same
board state, as re-plugging a USB-serial adapter would."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from sandbox.prereqs import require
from sandbox.process import ManagedProcess, free_port, port_open, wait_until

HERE = Path(__file__).parent
BOARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP = """#!/bin/sh
set -e
S={state}
LOGIN_USER={user}
SUDOER={sudoer}
exec 2>>"$S/setup.log"  # mount problems go to a file; the console gets stderr back below
mount --bind "$S/opt" /opt
mount --bind "$S/etc" /etc
mount --bind "$S/usr-local-lib" /usr/local/lib
mount --bind "$S/printk" /proc/sys/kernel/printk
if [ "$LOGIN_USER" != root ]; then  # a Raspberry-Pi-OS-like sudoer (in the board's own /etc)
  # Every connection runs this script, and two can at once (start()'s port probe is one): without the
  # lock both see no user, one useradd fails with "already exists" and its console drops.
  exec 8>"$S/setup.lock"
  flock 8
  id "$LOGIN_USER" >/dev/null 2>&1 || useradd -M -d /tmp -s /bin/sh "$LOGIN_USER"
  printf '%s:%s\n' "$LOGIN_USER" "$(cat "$S/password")" | chpasswd
  [ "$SUDOER" = no ] || echo "$LOGIN_USER ALL=(ALL:ALL) ALL" > /etc/sudoers.d/tinyfleet-test
  exec 8>&-
fi
export PATH="$S/bin:{path}" TF_SYSTEMD_STATE="$S/systemd" {env}
exec 2>&1
exec /usr/bin/python3 {login} {args}
"""


@dataclass
class SerialBoard:
    state: Path
    port: int
    proc: ManagedProcess

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def etc(self, path: str) -> Path:
        """A file under the board's /etc."""
        return self.state / "etc" / path.removeprefix("/etc/")

    def console_level(self) -> str:
        return (self.state / "printk").read_text().split()[0]

    def unit_state(self, unit: str) -> str:
        path = self.state / "systemd" / f"{unit}.active"
        return path.read_text().strip() if path.exists() else "inactive"

    def stop(self) -> None:
        self.proc.stop()


def start(state: Path, password: str = "raspberry", echo: bool = True, shell: str = "bash", user: str = "root",
          sudoer: bool = True, drop_after_login: bool = False, garbage: bool = False, noise_seconds: float = 30.0,
          env: dict[str, str] | None = None) -> SerialBoard:
    require("socat", "unshare", "mount", root=True)
    for sub in ("opt", "usr-local-lib", "bin", "systemd"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    if not (state / "etc").exists():
        shutil.copytree("/etc", state / "etc", symlinks=True)
    (state / "printk").write_text("7\t4\t1\t7\n")
    (state / "password").write_text(password + "\n")
    systemctl = state / "bin" / "systemctl"
    if not systemctl.exists():
        systemctl.symlink_to(HERE / "fake_systemctl")
    if user != "root":
        require("sudo", "useradd", "chpasswd", "flock")
    args = ["--user", user, "--password-file", str(state / "password"), "--echo", "on" if echo else "off",
            "--shell", shell, "--noise-seconds", str(noise_seconds)]
    args += ["--drop-after-login"] if drop_after_login else []
    args += ["--garbage"] if garbage else []
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    script = state / "board.sh"
    script.write_text(SETUP.format(state=shlex.quote(str(state)), user=shlex.quote(user),
                                   sudoer="yes" if sudoer else "no", path=BOARD_PATH, env=exports,
                                   login=shlex.quote(str(HERE / "login_console.py")), args=shlex.join(args)))
    port = free_port()
    exec_cmd = f"unshare --mount --propagation private sh {script}".replace(":", "\\:").replace(",", "\\,")
    argv = ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            f"EXEC:{exec_cmd},pty,setsid,ctty,stderr,sane"]
    proc = ManagedProcess("serial board", argv, state / "socat.log")
    proc.start()
    wait_until(lambda: proc.check_alive() is None and port_open(port), 10, "serial board (socat)", proc.log)
    return SerialBoard(state, port, proc)


def env_for_offline_pip(wheelhouse: Path) -> dict[str, str]:
    """The test board has no network: pip installs the agent wheel alone, from local files only."""
    return {"PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1", "PIP_FIND_LINKS": str(wheelhouse)}

