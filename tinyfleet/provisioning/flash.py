"""Write an image stream to a card (or an image file) in one pass: the boot partition is spooled to a
temporary file on the way and customised there, so the card receives final bytes only. The first
sector is zeroed at the start and written last (an interrupted write leaves no half-valid partition
table), everything is fsynced, then read back and checked against the sha256 of what was written."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyfleet.provisioning.errors import ImageError, TargetError, TruncatedImage, VerifyFailed
from tinyfleet.provisioning.fat import FatVolume
from tinyfleet.provisioning.image import (
    HEAD_BYTES,
    SECTOR,
    ImageStream,
    Partition,
    PartitionTable,
    open_image,
    parse_table,
)

CHUNK = 4 * 1024 * 1024
Customize = Callable[[FatVolume], Any]
Progress = Callable[[float, int], None]


@dataclass(frozen=True)
class Written:
    target: Path
    size: int
    sha256: str
    table: PartitionTable
    boot: Partition
    customized: Any = None  # what the customise callback returned


class _Sink:
    """Where bytes go, in image order: hashed, and written except the held-back first sector."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = 0
        self.hash = hashlib.sha256()
        self.first_sector = b""

    def put(self, data: bytes) -> None:
        self.hash.update(data)
        if self.pos < SECTOR:
            keep = SECTOR - self.pos
            self.first_sector += data[:keep]
            self.pos += min(keep, len(data))
            data = data[keep:]
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, self.pos)
            self.pos += done
            view = view[done:]


def _open_target(target: Path) -> tuple[int, bool]:
    is_block = target.exists() and stat.S_ISBLK(target.stat().st_mode)
    try:
        if is_block:  # O_EXCL on a block device: the kernel refuses it while mounted or otherwise claimed
            return os.open(target, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC), True
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644), False
    except OSError as exc:
        raise TargetError(f"cannot open {target} for writing: {exc.strerror}") from exc


def write(image: ImageStream, target: Path, customize: Customize | None = None,
          progress: Progress | None = None, spool_dir: Path | None = None) -> Written:
    head = image.read_exact(HEAD_BYTES)
    table = parse_table(head)
    boot = table.boot_partition()
    free_space_for_spool(boot, spool_dir)
    fd, is_block = _open_target(target)
    result = None
    try:
        os.pwrite(fd, bytes(SECTOR), 0)  # no valid partition table on the card until we are done
        sink = _Sink(fd)
        pending = head
        while True:
            if sink.pos < boot.start:
                take = pending[:boot.start - sink.pos]
                sink.put(take)
                pending = pending[len(take):]
                if sink.pos == boot.start:
                    result = _spool_boot(image, pending, boot, sink, customize, spool_dir)
                    pending = b""
            else:
                sink.put(pending)
                pending = b""
            if progress:
                progress(image.progress(), sink.pos)
            if not pending:
                pending = image.read(CHUNK)
                if not pending:
                    break
        if sink.pos < table.required_size:
            raise TruncatedImage(f"{image.path}: the image ends at {sink.pos} bytes but its partition table needs "
                                 f"{table.required_size}: the image is truncated")
        os.pwrite(fd, sink.first_sector, 0)
        if not is_block:
            os.ftruncate(fd, sink.pos)
        os.fsync(fd)
    except OSError as exc:
        raise TargetError(f"writing {target} failed: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return Written(Path(target), sink.pos, sink.hash.hexdigest(), table, boot, result)


def _spool_boot(image: ImageStream, pending: bytes, boot: Partition, sink: _Sink, customize: Customize | None,
                spool_dir: Path | None) -> Any:
    """Collect the boot partition in a temporary file, customise it there, then pass it on."""
    with tempfile.NamedTemporaryFile(prefix="tinyfleet-bootfs-", dir=spool_dir) as spool:
        left = boot.size
        while left:
            if not pending:
                pending = image.read(min(CHUNK, left))
                if not pending:
                    raise TruncatedImage(f"{image.path}: the image ends inside the boot partition "
                                         f"({boot.size - left} of {boot.size} bytes): the image is truncated")
            take, pending = pending[:left], pending[left:]
            spool.write(take)
            left -= len(take)
        spool.flush()
        result = customize(FatVolume(Path(spool.name))) if customize else None
        spool.seek(0)
        while chunk := spool.read(CHUNK):
            sink.put(chunk)
    if pending:
        sink.put(pending)
    return result


def verify(written: Written) -> None:
    """Read the target back (past the page cache) and compare with the hash of what was written."""
    digest = hashlib.sha256()
    try:
        fd = os.open(written.target, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise VerifyFailed(f"cannot read {written.target} back: {exc.strerror}") from exc
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        left = written.size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise VerifyFailed(f"{written.target} is shorter than the {written.size} bytes written")
            digest.update(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if digest.hexdigest() != written.sha256:
        raise VerifyFailed(f"{written.target} reads back as sha256 {digest.hexdigest()}, but "
                           f"{written.sha256} was written: the card (or reader) is faulty; do not use it")


def customize_in_place(path: Path, customize: Customize) -> tuple[PartitionTable, Partition, Any]:
    """Edit the boot partition of a raw image file where it lies (no flashing)."""
    table, boot = check_customizable(path)
    return table, boot, customize(FatVolume(Path(path), boot.start))


def check_customizable(path: Path) -> tuple[PartitionTable, Partition]:
    with open_image(path) as image:
        if image.format != "raw":
            raise ImageError(f"{path} is {image.format}-compressed; `customize` edits a raw .img in place "
                             "(decompress it first, or use `provision flash IMAGE --target FILE.img`)")
        head = image.read_exact(HEAD_BYTES)
    table = parse_table(head)
    boot = table.boot_partition()
    size = Path(path).stat().st_size
    if size < table.required_size:
        raise TruncatedImage(f"{path} is {size} bytes but its partition table needs {table.required_size}: "
                             "the image is truncated")
    return table, boot


def free_space_for_spool(boot: Partition, spool_dir: Path | None = None) -> None:
    where = spool_dir or Path(tempfile.gettempdir())
    if shutil.disk_usage(where).free < boot.size + CHUNK:
        raise TargetError(f"{where} has less free space than the {boot.size} byte boot partition to spool")
