"""The agent and every wheel it needs, for one board's Python and architecture: what a card or a serial
console carries so the board installs with `pip install --no-index --find-links` and no network.

The agent's dependencies (paho-mqtt, docker with requests, urllib3, certifi, idna, charset-normalizer,
structlog, tenacity) are pure py3-none-any wheels or, where pip finds a compiled one first, wheels built
for the board's own architecture (`pip download --only-binary=:all: --platform ...`). Downloaded
dependency wheels are kept under ~/.cache/tinyfleet/wheels/<python>-<arch>/ (TINYFLEET_WHEEL_CACHE):
once that holds them, building a wheelhouse needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from tinyfleet.provisioning.errors import CredentialError

log = structlog.get_logger("tinyfleet.provisioning.wheelhouse")

# the glibc a board's pip accepts: Raspberry Pi OS bookworm has 2.36, trixie 2.41
GLIBC_MINORS = range(17, 42)
ARCHES = {"linux/arm64": "aarch64", "linux/arm/v7": "armv7l", "linux/arm/v6": "armv6l", "linux/amd64": "x86_64"}
DEFAULT_PLATFORM = "linux/arm64"
DEFAULT_PYTHON = "3.11"  # Debian bookworm's (Raspberry Pi OS bookworm)
SOURCE_TREE = Path(__file__).resolve().parents[2]
TIMEOUT = 600


@dataclass(frozen=True)
class Wheelhouse:
    folder: Path
    agent: Path  # the tinyfleet wheel inside folder
    wheels: tuple[Path, ...]  # every wheel, the agent's included

    @property
    def requirement(self) -> str:
        """What pip installs from the folder: the agent at exactly the bundled version."""
        name, version = self.agent.name.split("-")[:2]
        return f"{name}=={version}"


def platform_tags(platform: str) -> list[str]:
    arch = ARCHES.get(platform)
    if arch is None:
        raise CredentialError(f"no wheels for platform {platform!r}; one of {', '.join(ARCHES)}")
    tags = [f"manylinux_2_{minor}_{arch}" for minor in GLIBC_MINORS]
    if arch in ("aarch64", "x86_64", "armv7l"):
        tags.append(f"manylinux2014_{arch}")
    return [*tags, f"linux_{arch}"]


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialError(f"pip could not run: {exc}") from exc


def build_agent_wheel(out: Path) -> Path:
    """The agent wheel from this source tree (pip wheel); an installed copy has no tree to build from."""
    if not (SOURCE_TREE / "pyproject.toml").is_file():
        raise CredentialError("this tinyfleet is not a source checkout: give the agent wheel with --wheel FILE "
                              "(or a wheelhouse with --wheelhouse DIR)")
    done = _pip("wheel", "-q", "--no-deps", "-w", str(out), str(SOURCE_TREE))
    if done.returncode != 0:
        raise CredentialError(f"building the agent wheel failed: {done.stderr.strip()[-800:]}")
    built = sorted(out.glob("tinyfleet-*.whl"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise CredentialError(f"pip wheel made no tinyfleet wheel in {out}")
    return built[-1]


def cache_dir(platform: str, python: str) -> Path:
    root = os.environ.get("TINYFLEET_WHEEL_CACHE") or Path.home() / ".cache" / "tinyfleet" / "wheels"
    return Path(root) / f"cp{python.replace('.', '')}-{ARCHES.get(platform, 'unknown')}"


def _download(agent: Path, dest: Path, platform: str, python: str, index_url: str | None,
              offline_from: Path | None) -> subprocess.CompletedProcess[str]:
    args = ["download", "-q", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            "--abi", f"cp{python.replace('.', '')}", "--abi", "abi3", "--abi", "none", "--dest", str(dest)]
    for tag in platform_tags(platform):
        args += ["--platform", tag]
    if offline_from is not None:
        args += ["--no-index", "--find-links", str(offline_from)]
    elif index_url:
        args += ["--index-url", index_url]
    return _pip(*args, str(agent))


def build(out: Path, platform: str = DEFAULT_PLATFORM, python: str = DEFAULT_PYTHON, agent: Path | None = None,
          index_url: str | None = None) -> Wheelhouse:
    """`out` filled with the agent wheel and its dependencies for the board; from the cache when it has
    them all, else downloaded (and the cache filled)."""
    out.mkdir(parents=True, exist_ok=True)
    if agent is None:
        agent = build_agent_wheel(out)
    elif not agent.name.endswith(".whl") or not agent.is_file():
        raise CredentialError(f"{agent} is not a wheel file (.whl)")
    elif agent.parent.resolve() != out.resolve():
        agent = Path(shutil.copy2(agent, out / agent.name))
    cache = cache_dir(platform, python)
    cache.mkdir(parents=True, exist_ok=True)
    done = _download(agent, out, platform, python, index_url, offline_from=cache)
    if done.returncode != 0:
        log.info("dependency wheels not all cached; downloading", cache=str(cache))
        with tempfile.TemporaryDirectory(prefix="tinyfleet-wheels-") as tmp:
            fetched = _download(agent, Path(tmp), platform, python, index_url, offline_from=None)
            if fetched.returncode != 0:
                raise CredentialError(
                    f"could not get the agent's dependency wheels for {platform}, Python {python} "
                    f"(the cache {cache} lacks some and the package index failed; with no network, give "
                    f"--wheelhouse DIR made by `tinyfleet provision wheelhouse` elsewhere): "
                    f"{fetched.stderr.strip()[-600:]}")
            for wheel in Path(tmp).glob("*.whl"):
                if wheel.name != agent.name:
                    shutil.copy2(wheel, cache / wheel.name)
        done = _download(agent, out, platform, python, index_url, offline_from=cache)
        if done.returncode != 0:
            raise CredentialError(f"dependency wheels for {platform}: {done.stderr.strip()[-600:]}")
    return load(out)


def load(folder: Path) -> Wheelhouse:
    """A wheelhouse folder made earlier (`tinyfleet provision wheelhouse`): exactly one agent wheel."""
    if not folder.is_dir():
        raise CredentialError(f"--wheelhouse {folder} is not a folder")
    wheels = tuple(sorted(folder.glob("*.whl")))
    agents = [w for w in wheels if w.name.startswith("tinyfleet-")]
    if len(agents) != 1:
        raise CredentialError(f"the wheelhouse {folder} must hold one tinyfleet-*.whl, it holds {len(agents)}")
    return Wheelhouse(folder, agents[0], wheels)
