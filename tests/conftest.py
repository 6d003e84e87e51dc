"""Session-wide real services for the integration tests: Mosquitto, dockerd, the registry, qemu binfmt
and PostgreSQL, each private to this test run, on loopback, and stopped at the end. `store_url` runs a
test once against each store: SQLite (a file in tmp_path) and PostgreSQL (a database of its own).

A missing prerequisite fails the test with a message saying how to get it; nothing is skipped.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import binaries, binfmt
from sandbox.dockerd import Dockerd
from sandbox.mosquitto import Mosquitto
from sandbox.postgres import Postgres
from sandbox.prereqs import MissingPrerequisite
from sandbox.registry import Registry

GOLDEN = Path(__file__).parent / "golden"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _need(start):  # type: ignore[no-untyped-def]
    try:
        return start()
    except MissingPrerequisite as exc:
        pytest.fail(f"prerequisite missing: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def sandbox_root() -> Iterator[Path]:
    # Short, because unix socket paths (dockerd, containerd) must stay under ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="tft", dir="/tmp"))
    yield root
    if not os.environ.get("TINYFLEET_KEEP_SANDBOX"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mosquitto(sandbox_root: Path) -> Iterator[Mosquitto]:
    broker = _need(lambda: Mosquitto(sandbox_root / "mqtt").start())
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def registry(sandbox_root: Path) -> Iterator[Registry]:
    reg = _need(lambda: Registry(sandbox_root / "reg").start())
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def qemu() -> None:
    _need(binfmt.ensure)


@pytest.fixture(scope="session")
def dockerd(sandbox_root: Path, qemu: None) -> Iterator[Dockerd]:
    engine = _need(lambda: Dockerd(sandbox_root / "d").start())
    yield engine
    engine.stop()
    engine.remove()


@pytest.fixture(scope="session")
def demo_binaries(sandbox_root: Path) -> dict:
    return _need(lambda: binaries.build(sandbox_root / "bin"))


@pytest.fixture(scope="session")
def postgres(sandbox_root: Path) -> Iterator[Postgres]:
    cluster = _need(lambda: Postgres(sandbox_root).start())
    yield cluster
    cluster.stop()
    if not os.environ.get("TINYFLEET_KEEP_SANDBOX"):
        cluster.remove()


_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a test's controller database is: a SQLite file, or a fresh schema of the private PostgreSQL
    (left for the cluster's removal at the end; the test's connections are ended after it)."""
    if request.param == "sqlite":
        yield str(tmp_path / "f.db")
        return
    cluster: Postgres = request.getfixturevalue("postgres")
    name = f"t{next(_databases)}"
    yield cluster.create_schema(name)
    cluster.disconnect(name)
