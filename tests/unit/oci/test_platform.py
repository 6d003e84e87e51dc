"""Which index entry a board gets. The one that matters most: arm/v6 never gets v7 code."""

from __future__ import annotations

import pytest

from tinyfleet.oci.errors import PlatformMissing
from tinyfleet.oci.platform import Platform, choose

P = Platform.parse

CHOICES = [
    # board, offered entries (in index order), expected choice
    ("linux/amd64", ["linux/arm64", "linux/amd64"], "linux/amd64"),
    ("linux/arm64", ["linux/arm/v7", "linux/arm64"], "linux/arm64"),
    ("linux/arm64", ["linux/arm64/v8"], "linux/arm64/v8"),
    ("linux/arm/v7", ["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7"),
    ("linux/arm/v7", ["linux/arm/v6"], "linux/arm/v6"),
    ("linux/arm/v6", ["linux/arm/v7", "linux/arm/v6"], "linux/arm/v6"),
    ("linux/arm/v6", ["linux/arm/v5"], "linux/arm/v5"),
]


@pytest.mark.parametrize(("board", "offered", "expected"), CHOICES)
def test_board_gets_the_best_entry_it_can_run(board: str, offered: list[str], expected: str) -> None:
    assert choose(P(board), [(P(o), o) for o in offered]) == expected


def test_arm64_accepts_an_entry_without_variant() -> None:
    bare = Platform.from_oci({"os": "linux", "architecture": "arm64"})
    assert choose(P("linux/arm64"), [(bare, "bare")]) == "bare"


REFUSALS = [
    ("linux/arm/v6", ["linux/arm/v7"]),  # moby#37647: a Pi Zero crashes on v7 code
    ("linux/arm/v6", ["linux/arm"]),  # a variant-less arm entry means v7 to Docker
    ("linux/arm/v6", ["linux/arm64", "linux/amd64"]),
    ("linux/arm/v7", ["linux/arm64"]),
    ("linux/arm64", ["linux/arm/v7"]),
    ("linux/amd64", ["linux/arm64"]),
    ("linux/arm64", ["windows/arm64"]),
    ("linux/amd64", []),
]


@pytest.mark.parametrize(("board", "offered"), REFUSALS)
def test_board_refuses_what_it_cannot_run(board: str, offered: list[str]) -> None:
    entries = [(Platform.from_oci(dict(zip(("os", "architecture", "variant"), o.split("/"), strict=False))), o)
               for o in offered]
    with pytest.raises(PlatformMissing, match=f"no image for {board}"):
        choose(P(board), entries)


@pytest.mark.parametrize(("text", "expected"), [
    ("aarch64", "linux/arm64"), ("armhf", "linux/arm/v7"), ("armel", "linux/arm/v6"), ("x86_64", "linux/amd64"),
    ("linux/arm/7", "linux/arm/v7"), ("arm/v6", "linux/arm/v6"), ("LINUX/ARM64/V8", "linux/arm64"),
])
def test_aliases_normalise(text: str, expected: str) -> None:
    assert str(P(text)) == expected


@pytest.mark.parametrize("text", ["", "linux/", "a/b/c/d"])
def test_bad_platform_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="OS/ARCH"):
        P(text)
