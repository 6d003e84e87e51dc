"""Tiny synthetic ELF files for unit tests of oci.elf and the packer (no toolchain needed)."""

from __future__ import annotations

import struct

MACHINE = {"amd64": 62, "arm64": 183, "arm": 40}


def _attributes(cpu_arch: int) -> bytes:
    attrs = bytes([5]) + b"7-A\x00" + bytes([6, cpu_arch]) + bytes([8, 1])  # Tag_CPU_name, Tag_CPU_arch, ARM ISA
    file_sub = bytes([1]) + struct.pack("<I", 5 + len(attrs)) + attrs
    vendor = b"aeabi\x00"
    sub = struct.pack("<I", 4 + len(vendor) + len(file_sub)) + vendor + file_sub
    return b"A" + sub


def make(arch: str, *, dynamic: bool = False, arm_cpu_arch: int | None = None) -> bytes:
    is64 = arch in ("amd64", "arm64")
    if is64:
        ehsize, phentsize, shentsize = 64, 56, 64
    else:
        ehsize, phentsize, shentsize = 52, 32, 40
    phnum = 1 if dynamic else 0
    phoff = ehsize
    body = bytearray()
    if dynamic:
        # one PT_INTERP program header
        if is64:
            body += struct.pack("<IIQQQQQQ", 3, 4, 0, 0, 0, 0, 0, 1)
        else:
            body += struct.pack("<IIIIIIII", 3, 0, 0, 0, 0, 0, 4, 1)
    sections = b""
    shnum = 0
    shoff = 0
    if arm_cpu_arch is not None and not is64:
        attr = _attributes(arm_cpu_arch)
        attr_off = ehsize + len(body)
        body += attr
        shoff = ehsize + len(body)
        null = b"\x00" * shentsize
        sect = struct.pack("<IIIIIIIIII", 0, 0x70000003, 0, 0, attr_off, len(attr), 0, 0, 1, 0)
        sections = null + sect
        shnum = 2
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1, 0]) + b"\x00" * 8
    if is64:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 2, MACHINE[arch], 1, 0, phoff if phnum else 0, shoff, 0,
                                     ehsize, phentsize, phnum, shentsize, shnum, 0)
    else:
        header = ident + struct.pack("<HHIIIIIHHHHHH", 2, MACHINE[arch], 1, 0, phoff if phnum else 0, shoff,
                                     0x5000400, ehsize, phentsize, phnum, shentsize, shnum, 0)
    return header + bytes(body) + sections + b"\x00" * 64
