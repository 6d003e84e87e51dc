"""Fixtures for the provisioning integration tests: Raspberry-Pi-OS-like images (built once per
session with sfdisk/mkfs.vfat/mcopy), the agent wheel built from this checkout, and serial boards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import _need
from tests.support import piimage, serialboard

REPO = Path(__file__).resolve().parents[3]
VARIANTS = {
    "cloud-init": piimage.Variant("mbr", cloud_init=True, names="long"),
    "firstrun-short-names": piimage.Variant("mbr", cloud_init=False, names="upper"),
    "gpt": piimage.Variant("gpt", cloud_init=False, names="long"),
    "mixed-case": piimage.Variant("mbr", cloud_init=True, names="mixed"),
}


@pytest.fixture(scope="session")
def pi_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pi-images")
    return {name: _need(lambda n=name, v=variant: piimage.build(root / f"{n}.img", v))
            for name, variant in VARIANTS.items()}


@pytest.fixture
def pi_image(pi_images: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of one image variant."""
    def copy(variant: str) -> Path:
        dest = tmp_path / f"{variant}.img"
        shutil.copyfile(pi_images[variant], dest)
        return dest
    return copy


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"building the agent wheel failed:\n{done.stderr}"
    return next(out.glob("tinyfleet-*.whl"))


@pytest.fixture
def start_board(tmp_path: Path) -> Iterator[Callable[..., serialboard.SerialBoard]]:
    boards: list[serialboard.SerialBoard] = []

    def start(name: str = "board", **kwargs) -> serialboard.SerialBoard:  # type: ignore[no-untyped-def]
        board = _need(lambda: serialboard.start(tmp_path / name, **kwargs))
        boards.append(board)
        return board
    yield start
    for board in boards:
        board.stop()
