"""Just enough ELF reading to refuse a wrong binary at pack time: the machine, whether a dynamic
loader is needed (scratch images have none), and for 32-bit ARM the CPU architecture the code was
built for (the `.ARM.attributes` Tag_CPU_arch), so arm/v7 code never ships as arm/v6."""

from __future__ import annotations

from dataclasses import dataclass

MACHINES = {3: "386", 40: "arm", 62: "amd64", 183: "arm64", 243: "riscv64"}
# Tag_CPU_arch values (ARM IHI 0045) -> the Docker variant that can run them.
ARM_ARCH_VARIANT = {1: 4, 2: 4, 3: 5, 4: 5, 5: 5, 6: 6, 7: 6, 8: 6, 9: 6, 10: 7, 11: 6, 12: 6, 13: 7, 14: 8}
_PT_INTERP = 3
_SHT_ARM_ATTRIBUTES = 0x70000003
_TAG_CPU_ARCH = 6


class ElfError(ValueError):
    pass


@dataclass(frozen=True)
class ElfFacts:
    machine: str
    dynamic: bool
    arm_variant: int | None  # 5, 6, 7, 8 for 32-bit ARM when the attributes say so


def read(data: bytes) -> ElfFacts:
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise ElfError("not an ELF executable")
    is64, order = data[4] == 2, "little" if data[5] == 1 else "big"

    def u(off: int, size: int) -> int:
        if off + size > len(data):
            raise ElfError("truncated ELF header")
        return int.from_bytes(data[off:off + size], order)

    machine = u(18, 2)
    if is64:
        phoff, shoff, phentsize, phnum, shentsize, shnum = u(32, 8), u(40, 8), u(54, 2), u(56, 2), u(58, 2), u(60, 2)
    else:
        phoff, shoff, phentsize, phnum, shentsize, shnum = u(28, 4), u(32, 4), u(42, 2), u(44, 2), u(46, 2), u(48, 2)
    dynamic = any(u(phoff + i * phentsize, 4) == _PT_INTERP for i in range(phnum))
    arm_variant = None
    if machine == 40 and not is64:
        for i in range(shnum):
            base = shoff + i * shentsize
            if u(base + 4, 4) == _SHT_ARM_ATTRIBUTES:
                arch = _cpu_arch(data[u(base + 16, 4):u(base + 16, 4) + u(base + 20, 4)], order)
                arm_variant = ARM_ARCH_VARIANT.get(arch) if arch is not None else None
                break
    return ElfFacts(MACHINES.get(machine, str(machine)), dynamic, arm_variant)


def _uleb(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf):
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    raise ElfError("truncated attribute")


def _cpu_arch(section: bytes, order: str) -> int | None:
    """Walk 'A' <len vendor\\0 <tag len attrs...>...>... to find Tag_CPU_arch in the aeabi file scope."""
    if not section or section[0:1] != b"A":
        return None
    pos = 1
    while pos + 4 <= len(section):
        length = int.from_bytes(section[pos:pos + 4], order)
        end = pos + length
        vendor_end = section.index(b"\x00", pos + 4)
        if section[pos + 4:vendor_end] == b"aeabi":
            sub = vendor_end + 1
            while sub + 5 <= end:
                tag, after = _uleb(section, sub)
                sub_len = int.from_bytes(section[after:after + 4], order)
                if tag == 1:  # Tag_File: attributes for the whole file
                    p, stop = after + 4, sub + sub_len
                    while p < stop:
                        attr, p = _uleb(section, p)
                        if attr in (4, 5, 65, 67) or (attr > 32 and attr % 2 == 1):
                            p = section.index(b"\x00", p) + 1  # NUL-terminated string value
                            continue
                        value, p = _uleb(section, p)
                        if attr == _TAG_CPU_ARCH:
                            return value
                sub += max(sub_len, 1)
        pos = end if length else len(section)
    return None
