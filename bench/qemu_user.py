"""The agent on arm64 Python under qemu-user, for the footprint benchmark: an arm64 root file system's
python3 (e.g. the cached Debian bookworm arm64 one, extracted) runs the agent installed from its arm64
wheels into a directory of its own, with the root file system's dist-packages left off the path (a
venv on a board sees none of them).

Memory: the qemu process also holds the emulator (its code, its translation buffer, its heap), so the
guest's figures are the host's resident pages of the guest's own mappings only. qemu-user maps the
guest at the same addresses (guest_base 0) and answers the guest's /proc/self/maps with the guest's
mappings; the launcher writes that list to a file on SIGUSR1, and the host sums its /proc/PID/smaps
entries over those ranges."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.smaps import KIB, Memory

ROOT = Path(__file__).resolve().parent.parent
WHEELS = Path.home() / ".cache" / "tinyfleet" / "wheels" / "cp311-aarch64"
QEMU = "qemu-aarch64-static"

_LAUNCHER = """
import os, signal, sys
sys.path[:] = [p for p in sys.path if not p.endswith("dist-packages")]
def _maps(*_):
    with open("/proc/self/maps") as f:
        text = f.read()
    with open(os.environ["TF_MAPS"] + ".tmp", "w") as f:
        f.write(text)
    os.replace(os.environ["TF_MAPS"] + ".tmp", os.environ["TF_MAPS"])
signal.signal(signal.SIGUSR1, _maps)
"""
AGENT = _LAUNCHER + "from tinyfleet.agent.cli import main\nsys.exit(main())\n"


class Arm64:
    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.work = work
        self.site = work / "site"
        self.python = root / "usr" / "bin" / "python3.11"
        if not self.python.exists():
            raise SystemExit(f"no {self.python}: extract an arm64 root file system (with python3) to {root}")

    def install(self) -> None:
        """The agent and its dependencies from arm64 wheels (the provisioning wheelhouse's cache)."""
        wheels = self.work / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                       check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--upgrade",
                        "--target", str(self.site), "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
                        "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:",
                        *map(str, wheels.glob("tinyfleet-*.whl")), *map(str, WHEELS.glob("*.whl"))], check=True)

    def script(self, name: str, code: str) -> Path:
        """An executable that runs `code` (then its arguments) in the arm64 Python; its pid is qemu's."""
        path = self.work / name
        maps = self.work / f"{name}.maps"
        q = shlex.quote
        path.write_text("#!/bin/sh\n"
                        f"TF_MAPS={q(str(maps))} PYTHONPATH={q(str(self.site))} exec {QEMU} -L "
                        f"{q(str(self.root))} {q(str(self.python))} -c {q(code)} \"$@\"\n")
        path.chmod(0o755)
        return path

    def idle(self, name: str, code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(self.script(name, _LAUNCHER + code + "\nimport time\ntime.sleep(86400)"))],
                                cwd="/", env=env)

    def memory(self, name: str, pid: int) -> Memory:
        return guest_memory(pid, self.work / f"{name}.maps")


def guest_memory(pid: int, maps_file: Path) -> Memory:
    maps_file.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while not maps_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the guest {pid} did not write its mappings to {maps_file}")
        time.sleep(0.05)
    ranges = []
    for line in maps_file.read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        ranges.append((start, end))
    ranges.sort()
    totals = {"Rss": 0.0, "Pss": 0.0, "Anonymous": 0.0}
    span = (0, 0)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                covered = sum(max(0, min(end, e) - max(start, s)) for s, e in ranges if s < end and e > start)
                span = (end - start, covered)
            elif head[0].rstrip(":") in totals and span[0]:
                totals[head[0].rstrip(":")] += int(head[1]) * KIB * span[1] / span[0]
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    rss, pss, anon = (int(totals[k]) for k in ("Rss", "Pss", "Anonymous"))
    return Memory(rss, pss, anon, rss - anon, threads)
