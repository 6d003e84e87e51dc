"""A flashed card booted under qemu-system-aarch64 as a Pi would boot it: the kernel, initramfs and
command line come from the card's own boot partition (kernel8.img, initramfs8, cmdline.txt), the card
is the VM's disk, the serial console goes to a log.

The VM's network is qemu user-mode with `restrict=on`: it reaches nothing but the `guestfwd` rules,
each leading one address:port of the VM's network (10.0.2.100) to one port on this machine's loopback
(the broker, the registry). The lab image (scripts/build-pi-image.sh) forwards its own 127.0.0.1 ports
named in the fw_cfg entry opt/tinyfleet/loopback-ports to 10.0.2.100, so `127.0.0.1:PORT/app@digest`
is the same registry on both sides. SSH reaches the VM through one hostfwd port.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.process import ManagedProcess, free_port
from tinyfleet.provisioning.fat import FatVolume
from tinyfleet.provisioning.image import HEAD_BYTES, parse_table

LAB_HOST = "10.0.2.100"  # where the VM reaches this machine's loopback services


@dataclass
class BootVM:
    card: Path
    root: Path
    forwards: dict[int, int]  # port at LAB_HOST in the VM -> port on this machine's 127.0.0.1
    loopback_ports: tuple[int, ...] = ()  # the VM's own 127.0.0.1 ports that lead to the same port here
    ssh_key: Path | None = None  # private key for ssh_user
    ssh_user: str = "pi"
    memory_mib: int = 2048
    cpus: int = 2
    ssh_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.serial_log = self.root / "serial.log"
        self.proc: ManagedProcess | None = None
        self.started_at = 0.0

    def boot_files(self) -> tuple[Path, Path, str]:
        """kernel8.img, initramfs8 and cmdline.txt, read from the card's boot partition."""
        with open(self.card, "rb") as f:
            boot = parse_table(f.read(HEAD_BYTES)).boot_partition()
        fat = FatVolume(self.card, boot.start)
        kernel, initrd = self.root / "kernel8.img", self.root / "initramfs8"
        kernel.write_bytes(fat.read("kernel8.img"))
        initrd.write_bytes(fat.read("initramfs8"))
        return kernel, initrd, (fat.read_text("cmdline.txt") or "").strip()

    def argv(self) -> list[str]:
        kernel, initrd, cmdline = self.boot_files()
        rules = [f"guestfwd=tcp:{LAB_HOST}:{inside}-cmd:socat - TCP:127.0.0.1:{outside}"
                 for inside, outside in self.forwards.items()]
        netdev = ",".join(["user", "id=net0", "restrict=on", f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22", *rules])
        argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53", "-smp", str(self.cpus),
                "-m", str(self.memory_mib), "-display", "none", "-monitor", "none",
                "-serial", f"file:{self.serial_log}",
                "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
                "-drive", f"if=none,file={self.card},format=raw,id=card", "-device", "virtio-blk-pci,drive=card",
                "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=",
                "-device", "virtio-rng-pci"]
        if self.loopback_ports:
            ports = " ".join(str(p) for p in self.loopback_ports)
            argv += ["-fw_cfg", f"name=opt/tinyfleet/loopback-ports,string={ports}"]
        return argv

    def start(self) -> BootVM:
        needed = (("qemu-system-aarch64", "qemu-system-arm"), ("socat", "socat"), ("ssh", "openssh-client"))
        for tool, package in needed:
            assert shutil.which(tool), f"{tool} is missing (Debian: apt-get install {package})"
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess("qemu", self.argv(), self.root / "qemu.log")
        self.started_at = time.monotonic()
        self.proc.start()
        return self

    def console(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.ssh_key is not None
        argv = ["ssh", "-q", "-i", str(self.ssh_key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                f"{self.ssh_user}@127.0.0.1", command]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(argv, 255, "", f"ssh timed out: {exc}")

    def root_shell(self, command: str, timeout: float = 120) -> str:
        """`command` as root on the VM (sudo, as the provisioned user may); fails the test on error."""
        done = self.ssh(f"sudo sh -c {_quote(command)}", timeout)
        assert done.returncode == 0, f"on the VM: {command!r} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def wait_ssh(self, timeout: float) -> float:
        """Seconds until the provisioned user can log in over SSH."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            self.proc.check_alive()
            if self.ssh("true", timeout=30).returncode == 0:
                return time.monotonic() - self.started_at
            time.sleep(5)
        raise AssertionError(f"no SSH login within {timeout:.0f}s; console tail:\n{self.console()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=5)
            self.proc = None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
