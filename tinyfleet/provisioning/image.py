"""Disk images as a forward-only stream (.img, .img.xz, .img.gz, .zip, told apart by their magic
bytes, never unpacked to disk first), and their partition tables (MBR, GPT)."""

from __future__ import annotations

import gzip
import lzma
import struct
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tinyfleet.provisioning.errors import ImageError, TruncatedImage

SECTOR = 512
HEAD_BYTES = 1024 * 1024  # MBR, GPT header and entries all live in the first MiB of any sane image
# MBR types a FAT file system sits behind; GPT: "Microsoft basic data" and the EFI system partition.
FAT_MBR_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
FAT_GPT_TYPES = {uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"), uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")}
GPT_PROTECTIVE = 0xEE


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, as the kernel names them (sdX1)
    start: int  # bytes
    size: int  # bytes
    kind: str  # "0x0c" for MBR, the type GUID for GPT
    fat: bool
    name: str = ""

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class PartitionTable:
    scheme: str  # "mbr" | "gpt"
    partitions: tuple[Partition, ...]
    required_size: int  # an image shorter than this is truncated

    def boot_partition(self) -> Partition:
        """The first FAT partition: where Raspberry Pi firmware looks for config.txt and cmdline.txt."""
        for part in self.partitions:
            if part.fat:
                return part
        kinds = ", ".join(f"{p.number}:{p.kind}" for p in self.partitions) or "none"
        raise ImageError(f"no FAT boot partition in the {self.scheme.upper()} partition table (partitions: {kinds})")


def parse_table(head: bytes) -> PartitionTable:
    """Read the partition table from the first bytes of an image (HEAD_BYTES is always enough)."""
    if len(head) < 2 * SECTOR:
        raise TruncatedImage(f"image is {len(head)} bytes: too short to hold a partition table")
    if head[510:512] != b"\x55\xaa":
        raise ImageError("no partition table: the first sector lacks the 0x55AA boot signature "
                         "(is this a disk image, and not a single file system?)")
    entries = [struct.unpack_from("<B3sB3sII", head, 446 + 16 * i) for i in range(4)]
    if any(e[2] == GPT_PROTECTIVE for e in entries):
        return _parse_gpt(head)
    parts = []
    for i, (_status, _chs, ptype, _chs2, lba, sectors) in enumerate(entries, start=1):
        if ptype == 0 or sectors == 0:
            continue
        parts.append(Partition(i, lba * SECTOR, sectors * SECTOR, f"0x{ptype:02x}", ptype in FAT_MBR_TYPES))
    if not parts:
        raise ImageError("the MBR partition table is empty")
    return PartitionTable("mbr", tuple(parts), max(p.end for p in parts))


def _parse_gpt(head: bytes) -> PartitionTable:
    hdr = head[SECTOR:2 * SECTOR]
    if hdr[:8] != b"EFI PART":
        raise ImageError("protective MBR found but no GPT header at LBA 1")
    hsize = struct.unpack_from("<I", hdr, 12)[0]
    if not 92 <= hsize <= SECTOR:
        raise ImageError(f"GPT header size {hsize} is out of range")
    crc = struct.unpack_from("<I", hdr, 16)[0]
    if zlib.crc32(hdr[:16] + b"\0\0\0\0" + hdr[20:hsize]) != crc:
        raise ImageError("GPT header checksum mismatch: the partition table is damaged")
    backup_lba, = struct.unpack_from("<Q", hdr, 32)
    entries_lba, count, esize, ecrc = struct.unpack_from("<QIII", hdr, 72)
    table_start, table_len = entries_lba * SECTOR, count * esize
    if esize < 128 or table_start + table_len > len(head):
        raise ImageError(f"GPT entry array ({count} x {esize} bytes at LBA {entries_lba}) is not where we can read it")
    table = head[table_start:table_start + table_len]
    if zlib.crc32(table) != ecrc:
        raise ImageError("GPT partition entries checksum mismatch: the partition table is damaged")
    parts = []
    for i in range(count):
        raw = table[i * esize:(i + 1) * esize]
        kind = uuid.UUID(bytes_le=raw[:16])
        if kind.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", raw, 32)
        name = raw[56:128].decode("utf-16-le", errors="replace").rstrip("\0")
        parts.append(Partition(i + 1, first * SECTOR, (last - first + 1) * SECTOR, str(kind), kind in FAT_GPT_TYPES,
                               name))
    if not parts:
        raise ImageError("the GPT partition table is empty")
    return PartitionTable("gpt", tuple(parts), max(max(p.end for p in parts), (backup_lba + 1) * SECTOR))


@dataclass
class ImageStream:
    """Decompressed image bytes, read forward once. `progress()` is the fraction of the *input file*
    consumed, which is what a progress bar can know without decompressing twice."""

    path: Path
    format: str  # raw | xz | gz | zip
    stream: BinaryIO
    _raw: BinaryIO
    _raw_size: int

    def read(self, n: int) -> bytes:
        try:
            return self.stream.read(n)
        except EOFError as exc:
            raise TruncatedImage(f"{self.path}: the {self.format} data ends early ({exc}); "
                                 "the download or copy is incomplete") from exc
        except (lzma.LZMAError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile, OSError) as exc:
            raise ImageError(f"{self.path}: cannot decompress the {self.format} data: {exc}") from exc

    def read_exact(self, n: int) -> bytes:
        """Read n bytes, or fewer only at the end of the image."""
        chunks, left = [], n
        while left:
            chunk = self.read(min(left, 4 * 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def progress(self) -> float:
        try:
            return min(1.0, self._raw.tell() / self._raw_size) if self._raw_size else 1.0
        except (OSError, ValueError):
            return 0.0


def sniff(head: bytes) -> str:
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return "raw"


def _zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    files = [m for m in archive.infolist() if not m.is_dir()]
    images = [m for m in files if m.filename.lower().endswith(".img")] or files
    if len(images) != 1:
        names = ", ".join(m.filename for m in files) or "nothing"
        raise ImageError(f"{path}: the zip archive must hold exactly one .img file; it holds {names}")
    return images[0]


@contextmanager
def open_image(path: Path) -> Iterator[ImageStream]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after the decompressor
    except OSError as exc:
        raise ImageError(f"cannot open image {path}: {exc.strerror or exc}") from exc
    try:
        size = Path(path).stat().st_size
        fmt = sniff(raw.read(8))
        raw.seek(0)
        archive: zipfile.ZipFile | None = None
        if fmt == "xz":
            stream: BinaryIO = lzma.open(raw)  # type: ignore[assignment]
        elif fmt == "gz":
            stream = gzip.open(raw)  # type: ignore[assignment]
        elif fmt == "zip":
            try:
                archive = zipfile.ZipFile(raw)
                stream = archive.open(_zip_member(archive, path))  # type: ignore[assignment]
            except zipfile.BadZipFile as exc:
                raise TruncatedImage(f"{path}: not a readable zip archive ({exc}); a zip whose end is missing "
                                     "(an interrupted download) looks like this") from exc
        else:
            stream = raw
        try:
            yield ImageStream(Path(path), fmt, stream, raw, size)
        finally:
            if stream is not raw:
                stream.close()
            if archive is not None:
                archive.close()
    finally:
        raw.close()
