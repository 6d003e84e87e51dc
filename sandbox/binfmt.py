"""Register qemu-user-static with the kernel so linux/arm64 and linux/arm containers run on x86.

The registrations use qemu's F (fix-binary) flag, so the interpreter is opened now and works inside
containers whose filesystem lacks it. Registration is machine-wide and idempotent; it is left in place.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from sandbox.prereqs import MissingPrerequisite, require

BINFMT = Path("/proc/sys/fs/binfmt_misc")
CONFS = Path("/usr/lib/binfmt.d")
NEEDED = {"aarch64": "qemu-aarch64", "arm": "qemu-arm"}


def ensure() -> None:
    if platform.machine() in ("aarch64", "arm64"):
        needed = {"arm": "qemu-arm"}  # an arm64 host runs arm64 natively; 32-bit arm may still need qemu
    else:
        needed = NEEDED
    if all((BINFMT / name).exists() for name in needed.values()):
        return
    require("qemu-aarch64-static", "qemu-arm-static", root=True)
    if not (BINFMT / "register").exists():
        result = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise MissingPrerequisite(f"cannot mount binfmt_misc: {result.stderr.strip()}")
    for name in needed.values():
        if (BINFMT / name).exists():
            continue
        conf = CONFS / f"{name}.conf"
        if not conf.exists():
            raise MissingPrerequisite(f"{conf} is missing (Debian: apt-get install qemu-user-static)")
        line = conf.read_text().strip()
        try:
            (BINFMT / "register").write_text(line)
        except OSError as exc:
            if not (BINFMT / name).exists():  # a concurrent registration is fine
                raise MissingPrerequisite(f"cannot register {name} with binfmt_misc: {exc}") from exc
