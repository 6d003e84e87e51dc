"""Platforms and the rules for choosing an index entry for a board.

A board runs exactly what its CPU can execute. The rules, in order of preference:

    board           accepts (best first)
    linux/amd64     amd64
    linux/arm64     arm64 (variant absent or v8)
    linux/arm/v7    arm/v7, arm (no variant; Docker treats it as v7), arm/v6, arm/v5
    linux/arm/v6    arm/v6, arm/v5            -- never v7 or a variant-less arm entry:
                                                 a Pi Zero crashes on v7 code (moby#37647)
    linux/arm/v5    arm/v5

Entries for another OS, and attestation manifests (platform unknown/unknown), never match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from tinyfleet.oci.errors import PlatformMissing

T = TypeVar("T")

_OSES = ("linux", "windows", "darwin", "freebsd", "unknown")
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "armv7l": "arm", "armv6l": "arm", "armv7": "arm", "armv6": "arm"}
_IMPLIED_VARIANT = {"armhf": "v7", "armel": "v6", "armv7l": "v7", "armv6l": "v6", "armv7": "v7", "armv6": "v6"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm/v7``, ``linux/arm64``, ``arm64`` (linux implied), ``linux/aarch64`` ..."""
        parts = [p for p in str(text).strip().lower().split("/")]
        if len(parts) == 1 or (len(parts) == 2 and parts[0] not in _OSES):
            parts = ["linux", *parts]  # "arm64", "arm/v7": linux is implied
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not OS/ARCH[/VARIANT], e.g. linux/arm/v7")
        return cls.normalize(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def normalize(cls, os: str, architecture: str, variant: str | None = None) -> Platform:
        arch = architecture.lower()
        variant = (variant or "").lower() or _IMPLIED_VARIANT.get(arch)
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "arm64" and variant in (None, "v8", "8"):
            variant = "v8"
        if arch == "arm" and variant and not variant.startswith("v"):
            variant = f"v{variant}"
        if arch not in ("arm", "arm64"):
            variant = variant or None
        return cls(os.lower(), arch, variant)

    @classmethod
    def from_oci(cls, platform: dict[str, object]) -> Platform:
        return cls.normalize(str(platform.get("os", "")), str(platform.get("architecture", "")),
                             str(platform["variant"]) if platform.get("variant") else None)

    def __str__(self) -> str:
        if self.architecture == "arm64":  # v8 is the only arm64 variant; print the common short form
            return f"{self.os}/arm64"
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def oci(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant and self.architecture == "arm":
            out["variant"] = self.variant
        elif self.architecture == "arm64":
            out["variant"] = "v8"
        return out

    def accepts(self) -> tuple[Platform, ...]:
        """Platforms this board can run, best first (see the table in the module docstring)."""
        if self.architecture == "arm":
            level = int(self.variant[1:]) if self.variant and self.variant[1:].isdigit() else 7
            order = [Platform(self.os, "arm", f"v{v}") for v in range(level, 4, -1)]
            if level >= 7:
                order.insert(1, Platform(self.os, "arm", None))
            return tuple(order)
        return (self,)

    def rank(self, candidate: Platform) -> int | None:
        """0 for the best match, larger for worse, None when the board cannot run it."""
        try:
            return self.accepts().index(candidate)
        except ValueError:
            return None


def choose(board: Platform, entries: Iterable[tuple[Platform, T]]) -> T:
    """Pick the best entry a board can run, or raise PlatformMissing listing what was offered."""
    ranked = []
    offered = []
    for i, (platform, item) in enumerate(entries):
        offered.append(str(platform))
        rank = board.rank(platform)
        if rank is not None:
            ranked.append((rank, i, item))
    if not ranked:
        raise PlatformMissing(f"no image for {board} (offered: {', '.join(offered) or 'nothing'}); "
                              "publish one for this platform or exclude the device")
    return min(ranked, key=lambda r: (r[0], r[1]))[2]
