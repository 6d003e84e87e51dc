"""Static builds of the demo workload (demoapp.c) for every platform the demo and tests use.

arm/v6 is built with Debian's armel toolchain (ARMv5TE code, which a v6 board runs) because the armhf
toolchain's libc is ARMv7 code even with -march=armv6.
"""

from __future__ import annotations

import hashlib
import subprocess
from importlib import resources
from pathlib import Path

from sandbox.prereqs import require
from tinyfleet.oci.platform import Platform

COMPILERS = {
    "linux/amd64": "gcc",
    "linux/arm64": "aarch64-linux-gnu-gcc",
    "linux/arm/v7": "arm-linux-gnueabihf-gcc",
    "linux/arm/v6": "arm-linux-gnueabi-gcc",
}


def demo_source() -> bytes:
    return resources.files("sandbox").joinpath("demoapp.c").read_bytes()


def build(out_dir: Path, platforms: tuple[str, ...] = tuple(COMPILERS)) -> dict[Platform, Path]:
    """Compile (or reuse a cached build of) the demo binary for each platform."""
    source = demo_source()
    tag = hashlib.sha256(source).hexdigest()[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / f"demoapp-{tag}.c"
    src.write_bytes(source)
    result = {}
    for name in platforms:
        compiler = COMPILERS[name]
        require(compiler)
        target = out_dir / f"tinyhello-{tag}-{name.replace('/', '-')}"
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            proc = subprocess.run([compiler, "-static", "-Os", "-s", "-o", str(tmp), str(src)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{compiler} failed to build the demo binary:\n{proc.stderr}")
            tmp.rename(target)
        result[Platform.parse(name)] = target
    return result
