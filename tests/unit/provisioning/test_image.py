"""Partition tables read from the first bytes of an image; formats told apart by magic bytes."""

from __future__ import annotations

import struct

import pytest

from tinyfleet.provisioning.errors import ImageError, TruncatedImage
from tinyfleet.provisioning.image import parse_table, sniff
from tinyfleet.provisioning.target import mounts_by_device, swap_devices


def mbr(*entries: tuple[int, int, int]) -> bytes:
    sector = bytearray(1024)
    for i, (ptype, lba, sectors) in enumerate(entries):
        struct.pack_into("<B3sB3sII", sector, 446 + 16 * i, 0, b"", ptype, b"", lba, sectors)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def test_mbr_boot_partition_is_the_first_fat_one() -> None:
    table = parse_table(mbr((0x83, 2048, 100), (0x0C, 16384, 81920), (0x83, 98304, 8192)))
    boot = table.boot_partition()
    assert (table.scheme, boot.number, boot.start, boot.size) == ("mbr", 2, 16384 * 512, 81920 * 512)
    assert table.required_size == (98304 + 8192) * 512


@pytest.mark.parametrize("head, error, message", [
    (b"\0" * 100, TruncatedImage, "too short"),
    (b"\0" * 1024, ImageError, "0x55AA"),
    (mbr(), ImageError, "empty"),
    (mbr((0xEE, 1, 1000)), ImageError, "no GPT header"),
])
def test_unreadable_tables_say_why(head: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_table(head)


def test_no_fat_partition_is_a_clear_error() -> None:
    with pytest.raises(ImageError, match="no FAT boot partition"):
        parse_table(mbr((0x83, 2048, 100))).boot_partition()


@pytest.mark.parametrize("head, fmt", [
    (b"\xfd7zXZ\x00\x00", "xz"), (b"\x1f\x8b\x08", "gz"), (b"PK\x03\x04", "zip"), (b"\xfa\xb8\x00", "raw"),
])
def test_formats_by_magic(head: bytes, fmt: str) -> None:
    assert sniff(head) == fmt


def test_mountinfo_and_swaps_parsers() -> None:
    info = ("22 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw\n"
            "30 22 8:17 / /media/my\\040card rw - vfat /dev/sdb1 rw\n")
    assert mounts_by_device(info) == {"8:2": ["/"], "8:17": ["/media/my card"]}
    swaps = "Filename Type Size Used Priority\n/dev/sdc2 partition 1 0 -2\n"
    assert swap_devices(swaps) == {"/dev/sdc2"}
