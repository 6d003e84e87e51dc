"""Is it safe to write here? A flash target must be a whole disk (or an image file) that nothing uses:
not mounted, not swap, not claimed by device-mapper/RAID, not the disk the running system lives on,
and not the source image itself. The parsers are pure; `check()` reads /proc and /sys."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tinyfleet.provisioning.errors import TargetError

SYS_BLOCK = Path("/sys/class/block")


@dataclass(frozen=True)
class Target:
    path: Path
    is_block: bool
    size: int | None = None  # bytes, for block devices


def mounts_by_device(mountinfo: str) -> dict[str, list[str]]:
    """'major:minor' -> mount points, from /proc/self/mountinfo."""
    out: dict[str, list[str]] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            out.setdefault(fields[2], []).append(fields[4].replace("\\040", " "))
    return out


def swap_devices(swaps: str) -> set[str]:
    return {line.split()[0] for line in swaps.splitlines()[1:] if line.strip()}


def _read(path: Path | str, default: str = "") -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return default


def _dev_numbers(disk: str) -> dict[str, str]:
    """The disk and each of its partitions: kernel name -> 'major:minor'."""
    base = SYS_BLOCK / disk
    out = {disk: _read(base / "dev").strip()}
    for child in base.iterdir() if base.is_dir() else ():
        if (child / "partition").exists():
            out[child.name] = _read(child / "dev").strip()
    return out


def check_block(path: Path, mountinfo: str, swaps: str) -> Target:
    st = path.stat()
    name = Path(os.path.realpath(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")).name
    if (SYS_BLOCK / name / "partition").exists():
        raise TargetError(f"{path} is a partition ({name}); give the whole disk, e.g. /dev/sdX, not /dev/sdX1")
    devs = _dev_numbers(name)
    mounts = mounts_by_device(mountinfo)
    for part, number in devs.items():
        points = mounts.get(number, [])
        if "/" in points:
            raise TargetError(f"{path} holds the running system ({part} is mounted at /); refusing to overwrite it")
        if points:
            raise TargetError(f"{path} is in use: {part} is mounted at {', '.join(points)}; unmount it first")
        if os.listdir(SYS_BLOCK / part / "holders") if (SYS_BLOCK / part / "holders").is_dir() else []:
            raise TargetError(f"{path} is in use: {part} is held by device-mapper/RAID")
    swapping = {os.path.realpath(d) for d in swap_devices(swaps)}
    for part in devs:
        if f"/dev/{part}" in swapping:
            raise TargetError(f"{path} is in use: /dev/{part} is active swap")
    root_dev = os.stat("/").st_dev
    if f"{os.major(root_dev)}:{os.minor(root_dev)}" in devs.values():
        raise TargetError(f"{path} holds the running system; refusing to overwrite it")
    size = int(_read(SYS_BLOCK / name / "size", "0").strip() or 0) * 512
    return Target(path, True, size)


def check(target: Path, source: Path) -> Target:
    path = Path(os.path.realpath(target))
    if path.exists():
        mode = path.stat().st_mode
        if stat.S_ISBLK(mode):
            return check_block(path, _read("/proc/self/mountinfo"), _read("/proc/swaps"))
        if not stat.S_ISREG(mode):
            raise TargetError(f"{target} is neither a block device nor a regular file")
        if os.path.samefile(path, source):
            raise TargetError(f"{target} is the source image itself")
        for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
            if _read(backing).strip() == str(path):
                raise TargetError(f"{target} is attached to /dev/{backing.parent.parent.name}; detach it first")
    elif path.is_relative_to("/dev"):  # a card that is not there (yet): never create a plain file in /dev
        raise TargetError(f"{target} does not exist: is the card inserted? (`lsblk` lists disks)")
    elif not path.parent.is_dir():
        raise TargetError(f"cannot create {target}: {path.parent} is not a folder")
    return Target(path, False)
