"""A private Docker Engine: own data root, exec root, socket and bridge, so several can run side by
side (and beside a system one) without sharing images, containers or iptables rules."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import docker
import docker.errors

from sandbox.prereqs import require
from sandbox.process import ManagedProcess, wait_until

_ENGINE_PROCESSES = ("containerd", "dockerd", "docker-proxy", "runc")


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return sorted((p for p in points if p.startswith(str(root) + "/")), key=len, reverse=True)


class Dockerd:
    def __init__(self, root: Path) -> None:
        require("dockerd", root=True)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.socket = root / "docker.sock"
        if len(str(self.socket)) > 100:
            raise ValueError(f"{root} is too long for a unix socket path; use a shorter directory")
        self.bridge = f"tf{random.randrange(16**8):08x}"
        self.subnet_octets = (random.randrange(200, 250), random.randrange(0, 255))
        (root / "daemon.json").write_text(json.dumps({}))
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def _make_bridge(self) -> list[str]:
        """A bridge of our own; without `ip` (or rights) fall back to no default network."""
        if shutil.which("ip") is None:
            return ["--bridge", "none"]
        a, b = self.subnet_octets
        steps = [["ip", "link", "add", self.bridge, "type", "bridge"],
                 ["ip", "addr", "add", f"10.{a}.{b}.1/24", "dev", self.bridge],
                 ["ip", "link", "set", self.bridge, "up"]]
        for step in steps:
            if subprocess.run(step, capture_output=True).returncode != 0:
                self._drop_bridge()
                return ["--bridge", "none"]
        return ["--bridge", self.bridge]

    def _drop_bridge(self) -> None:
        if shutil.which("ip"):
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def start(self) -> Dockerd:
        argv = ["dockerd", "--config-file", str(self.root / "daemon.json"),
                "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "x"),
                "-H", self.url, "--pidfile", str(self.root / "docker.pid"),
                "--iptables=false", "--ip-masq=false", "--ip-forward=false",
                "--shutdown-timeout", "5", "--log-level", "warn", *self._make_bridge()]
        self.proc = ManagedProcess("dockerd", argv, self.root / "dockerd.log")
        self.proc.start()

        def ready() -> bool:
            assert self.proc is not None
            self.proc.check_alive()
            if not self.socket.exists():
                return False
            try:
                return bool(self.client(timeout=2).ping())
            except (docker.errors.DockerException, OSError):
                return False

        wait_until(ready, 60, "dockerd", self.proc.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)
        # containerd shims outlive dockerd in their own sessions: end the engine's processes rooted here
        # (only those: a client such as an agent also names this directory in its command line).
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                comm = (pid_dir / "comm").read_text().strip()
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ")
                if comm.startswith(_ENGINE_PROCESSES) and str(self.root).encode() in cmdline:
                    os.kill(int(pid_dir.name), 9)
        for mount in _mounts_under(self.root):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        self._drop_bridge()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
