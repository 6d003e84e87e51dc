"""A shell on the far side of a console: log in (a pure classifier of what the screen shows drives
the login), run commands with framed output and real exit codes, upload files in checked chunks.

Framing: each command is sent as
    printf '\\036TFB<nonce>\\036\\n'; ( CMD ) </dev/null 2>&1; printf '\\036TFE<nonce>:%d\\036\\n' $?
The markers hold the byte 0x1E, which only printf's output contains: the terminal's echo of the
line we typed shows the four characters `\\036` instead, so echo can never fake a marker, and the
per-command nonce keeps a late answer to an earlier command from being taken for this one's.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import shlex
from dataclasses import dataclass
from enum import Enum

import structlog

from tinyfleet.provisioning.console import Console
from tinyfleet.provisioning.errors import ConsoleClosed, LoginFailed, StepFailed

log = structlog.get_logger("tinyfleet.provisioning.shell")

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][AB012]|\x07")
KERNEL_LINE = re.compile(r"\[\s*\d+\.\d+\][^\r\n]*(\r*\n|$)")
LOGIN_PROMPT = re.compile(r"login:\s*$", re.IGNORECASE)
PASSWORD_PROMPT = re.compile(r"password[^:\n]*:\s*$", re.IGNORECASE)
LOGIN_INCORRECT = re.compile(r"login incorrect|authentication failure", re.IGNORECASE)
SHELL_PROMPT = re.compile(r"[#$%>]\s*$")
SUDO_PROMPT = "tinyfleet-sudo-password:"
SUDO_REFUSED = re.compile(r"sorry, try again|not in the sudoers|is not allowed to run|incorrect password", re.I)
UPLOAD_CHUNK = 2400  # raw bytes; 3200 base64 characters keeps each line far below the tty's 4095 limit


class Screen(Enum):
    LOGIN = "login prompt"
    PASSWORD = "password prompt"
    INCORRECT = "login incorrect"
    SHELL = "shell prompt"
    UNKNOWN = "nothing recognisable"


def clean(text: str) -> str:
    """What a person would read: no colour codes, no kernel messages, \\n line ends."""
    text = ANSI.sub("", text)
    text = KERNEL_LINE.sub("", text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def classify(text: str) -> Screen:
    """What the console is waiting for, from what it showed since our last input."""
    screen = clean(text)
    if LOGIN_INCORRECT.search(screen):
        return Screen.INCORRECT
    last = screen.rstrip("\n").rsplit("\n", 1)[-1] if screen.strip() else ""
    if PASSWORD_PROMPT.search(last):
        return Screen.PASSWORD
    if LOGIN_PROMPT.search(last):
        return Screen.LOGIN
    if SHELL_PROMPT.search(last):
        return Screen.SHELL
    return Screen.UNKNOWN


@dataclass(frozen=True)
class Result:
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Shell:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.depth = 0  # nested shells we opened (sudo), closed again by logout()

    # --- login ---------------------------------------------------------------------------------------
    def login(self, user: str, password: str | None, timeout: float = 60.0) -> None:
        """From whatever state the console is in (login prompt, password prompt, a shell already logged
        in, kernel messages on top) to a quiet root shell ready for framed commands."""
        if password:
            self.console.redact(password)
        sent_user = sent_password = False
        wakes = 0
        self.console.write("\r")
        text = ""
        for _ in range(max(1, int(timeout / 0.5))):
            fresh = self.console.read(0.5)
            text += fresh
            screen = classify(text)
            if screen is Screen.INCORRECT and sent_password:
                raise LoginFailed("login", f"the board refused the login for user {user!r} (Login incorrect)",
                                  self.seen())
            if screen is Screen.PASSWORD and sent_user and not sent_password:
                if password is None:
                    raise LoginFailed("login", f"the board asks for a password for {user!r}; give --password-file",
                                      self.seen())
                with self.console.unrecorded("password sent"):
                    self.console.write(password + "\r")
                sent_password, text = True, ""
            elif screen is Screen.LOGIN:
                self.console.write(user + "\r")
                sent_user, sent_password, text = True, False, ""
            elif screen is Screen.SHELL and self._probe():
                self._prepare(password, timeout)
                return
            elif screen is Screen.SHELL or screen is Screen.PASSWORD or (screen is Screen.INCORRECT) or not fresh:
                # Someone else's half-finished login, a failed probe, or silence: wake the console again.
                wakes += 1
                self.console.write("\x03\r" if wakes % 4 == 0 else "\r")
                text = ""
        raise LoginFailed("login", f"no login prompt or shell within {timeout:g}s", self.seen())

    def seen(self) -> str:
        """The console's recent output, readable: no colour codes, \\n line ends, secrets redacted."""
        return ANSI.sub("", self.console.transcript()).replace("\r\n", "\n").replace("\r", "\n")

    def _probe(self) -> bool:
        try:
            return self.run("echo ok", "probe shell", timeout=5, subshell=False).output.strip() == "ok"
        except StepFailed:
            return False

    def _prepare(self, password: str | None, timeout: float) -> None:
        """A quiet root shell: no echo (half the traffic, secrets not echoed back), no history file, C
        locale; through sudo when the login is not root (Raspberry Pi OS has no root login)."""
        self._quiet_shell()
        if self._uid() == "0":
            return
        self._become_root(password, timeout)
        self._quiet_shell()
        uid = self._uid()
        if uid != "0":
            raise LoginFailed("become root", f"still uid {uid} after sudo", self.seen())

    def _quiet_shell(self) -> None:
        self.run("stty -echo -onlcr 2>/dev/null; unset HISTFILE; [ -n \"${BASH_VERSION:-}\" ] && set +o history; "
                 "export LC_ALL=C PS2=",
                 "prepare shell", timeout=10, subshell=False, stdin_tty=True)

    def _uid(self) -> str:
        return self.run("id -u", "check user id", timeout=10, check=True).output.strip()

    def _become_root(self, password: str | None, timeout: float) -> None:
        self.console.write(f"sudo -p '{SUDO_PROMPT} ' -s\r")
        text, answered = "", False
        for _ in range(max(1, int(timeout / 0.5))):
            text += self.console.read(0.5)
            tail = clean(text)
            if SUDO_REFUSED.search(tail):
                self.console.write("\x03\r")
                raise LoginFailed("become root", "sudo refused (wrong password, or the user may not use sudo); "
                                                 "log in as root or as a sudoer", self.seen())
            if tail.rstrip().endswith(SUDO_PROMPT):
                if password is None or answered:
                    self.console.write("\x03\r")
                    raise LoginFailed("become root", "sudo asks for a password; give --password-file", self.seen())
                with self.console.unrecorded("sudo password sent"):
                    self.console.write(password + "\r")
                text, answered = "", True
            elif classify(text) is Screen.SHELL and self._probe():
                self.depth += 1
                return
        raise LoginFailed("become root", f"no root shell from sudo within {timeout:g}s", self.seen())

    def logout(self) -> None:
        """Leave the console as we found a serial console should be left: at a login prompt."""
        try:
            for _ in range(self.depth + 1):
                self.console.write("exit\r")
                self.console.read(0.3)
        except ConsoleClosed:
            pass  # a console server may hang up when the session ends: that is logged out too
        self.depth = 0

    def quiet_kernel(self) -> str:
        """Lower the console log level so kernel messages stop landing in our output; returns the old one."""
        old = self.run("cat /proc/sys/kernel/printk", "read console log level", timeout=10).output.split()
        self.run("echo 1 > /proc/sys/kernel/printk", "quiet the kernel console", timeout=10)
        return old[0] if old else "7"

    # --- commands ------------------------------------------------------------------------------------
    def run(self, command: str, step: str, timeout: float = 30.0, subshell: bool = True,
            stdin_tty: bool = False, check: bool = False) -> Result:
        nonce = secrets.token_hex(6)
        body = f"( {command} )" if subshell else f"{{ {command}; }}"
        redirect = "" if stdin_tty else " </dev/null"
        line = (f"printf '\\036TFB{nonce}\\036\\n'; {body}{redirect} 2>&1; "
                f"printf '\\036TFE{nonce}:%d\\036\\n' $?\r")
        frame = re.compile(f"\x1eTFB{nonce}\x1e\r?\n(.*?)\x1eTFE{nonce}:(\\d+)\x1e", re.DOTALL)
        log.debug("board command", step=step)
        try:
            self.console.write(line)
            match, _ = self.console.expect(frame, timeout)
        except ConsoleClosed as exc:
            raise StepFailed(step, f"the console dropped ({exc})", self.seen()) from exc
        if match is None:
            self.console.write("\x03")  # interrupt what hangs so the next step starts from a prompt
            raise StepFailed(step, f"no answer within {timeout:g}s", self.seen())
        # Kernel messages can land inside the output until the console is quieted; they are not the command's.
        result = Result(int(match.group(2)), KERNEL_LINE.sub("", match.group(1).replace("\r\n", "\n")))
        if check and not result.ok:
            raise StepFailed(step, f"exit code {result.exit_code}: {result.output.strip()[-400:]}",
                             self.seen())
        return result

    def upload(self, data: bytes, dest: str, step: str, mode: str = "0644", secret: bool = False,
               attempts: int = 3) -> None:
        """Write `data` to `dest` on the board: base64 chunks, each checked by sha256 on the board before
        it is appended, then the whole file checked and moved into place atomically."""
        q = shlex.quote
        part, chunk_file = q(dest + ".tf-part"), q(dest + ".tf-chunk")
        self.run(f"mkdir -p {q(dest.rsplit('/', 1)[0] or '/')} && : > {part} && chmod 0600 {part}",
                 f"{step}: start", check=True)
        chunks = [data[i:i + UPLOAD_CHUNK] for i in range(0, len(data), UPLOAD_CHUNK)] or [b""]
        for number, chunk in enumerate(chunks, start=1):
            encoded = base64.b64encode(chunk).decode()
            want = hashlib.sha256(chunk).hexdigest()
            command = (f"printf %s '{encoded}' | base64 -d > {chunk_file} && "
                       f"[ \"$(sha256sum < {chunk_file} | cut -c1-64)\" = {want} ] && cat {chunk_file} >> {part}")
            if secret:
                self.console.redact(encoded)
            for attempt in range(1, attempts + 1):
                label = f"{step}: chunk {number}/{len(chunks)}"
                if secret:
                    with self.console.unrecorded(f"{label} (secret, not shown)"):
                        result = self.run(command, label, timeout=30)
                else:
                    result = self.run(command, label, timeout=30)
                if result.ok:
                    break
                log.warning("chunk check failed, resending", step=step, chunk=number, attempt=attempt)
            else:
                raise StepFailed(step, f"chunk {number} failed its sha256 check {attempts} times",
                                 self.seen())
        total = hashlib.sha256(data).hexdigest()
        self.run(f"[ \"$(sha256sum < {part} | cut -c1-64)\" = {total} ] && chmod {q(mode)} {part} && "
                 f"mv -f {part} {q(dest)} && rm -f {chunk_file}", f"{step}: verify and move into place", check=True)
