"""Where a process's memory is, from /proc/PID/smaps_rollup and /proc/PID/smaps: resident (RSS) and
proportional (PSS: shared pages divided among the processes sharing them) sizes, anonymous against
file-backed, and the resident memory of each kind of mapping (the glibc heap, per-thread malloc
arenas, thread stacks, Python's own object arenas, the interpreter and the libraries it loaded)."""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass

KIB = 1024
_ARENA_KIB = 64 * 1024  # glibc reserves a thread's malloc arena as one 64 MiB region (rw part + ---p rest)


@dataclass(frozen=True)
class Memory:
    rss: int
    pss: int
    anonymous: int
    file_backed: int
    threads: int

    @classmethod
    def of(cls, pid: int) -> Memory:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * KIB for line in f if line.rstrip().endswith("kB")}
        with open(f"/proc/{pid}/status") as f:
            threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
        return cls(fields["Rss"], fields["Pss"], fields["Anonymous"], fields["Rss"] - fields["Anonymous"], threads)


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    perms: str
    path: str
    rss: int


def _mappings(pid: int) -> list[_Mapping]:
    out: list[_Mapping] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                out.append(_Mapping(start, end, head[1], head[5] if len(head) > 5 else "", 0))
            elif head[0] == "Rss:":
                last = out[-1]
                out[-1] = _Mapping(last.start, last.end, last.perms, last.path, int(head[1]) * KIB)
    return out


def _kind(path: str) -> str:
    name = os.path.basename(path)
    if name.startswith("libpython"):
        return "interpreter (libpython)"
    if name.startswith(("libcrypto", "libssl", "_ssl.", "_hashlib.")):
        return "OpenSSL (libcrypto, libssl, _ssl, _hashlib)"
    if path.startswith("["):
        return f"{path}"
    return "other shared libraries and files"


def breakdown(pid: int) -> dict[str, int]:
    """Resident bytes by kind of mapping, largest first."""
    maps = _mappings(pid)
    kinds: collections.Counter[str] = collections.Counter()
    for i, m in enumerate(maps):
        if m.path and not m.path.startswith("["):
            kinds[_kind(m.path)] += m.rss
            continue
        if m.path == "[heap]":
            kinds["glibc main heap ([heap])"] += m.rss
            continue
        if m.path:
            kinds[m.path] += m.rss
            continue
        after = maps[i + 1] if i + 1 < len(maps) else None
        before = maps[i - 1] if i else None
        size_kib = (m.end - m.start) // KIB
        if (after and not after.path and after.perms.startswith("---") and after.start == m.end
                and size_kib + (after.end - after.start) // KIB == _ARENA_KIB) or size_kib == _ARENA_KIB:
            kinds["glibc per-thread arenas"] += m.rss
        elif before and not before.path and before.perms.startswith("---") and before.end == m.start \
                and (before.end - before.start) // KIB == 4 and size_kib >= 1024:
            kinds["thread stacks"] += m.rss
        else:
            kinds["other anonymous (Python object arenas, large blocks)"] += m.rss
    return dict(kinds.most_common())
