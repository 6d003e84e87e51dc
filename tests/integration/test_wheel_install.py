"""The released artefact, not the checkout: a wheel built by `python -m build` installs in a fresh venv
and runs. Agent-only (`pip install tinyfleet-*.whl`, as on a board): `tinyfleet-agent` works and
`tinyfleet` says in one line how to get the operator side. With the operator extra: the operator CLI
runs and the dashboard's pages are in the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)


def test_a_built_wheel_installs_in_a_fresh_venv_and_runs_agent_only_then_with_the_operator_extra(
        tmp_path: Path) -> None:
    built = run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", ROOT)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("tinyfleet-*-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("tinyfleet/", "tinyfleet-"))]
    assert outside == [], "one import namespace, and no test, bench or sandbox code shipped"
    assert not [n for n in names if n.startswith("tinyfleet/sandbox")], "the dev sandbox is not in the package"
    assert "tinyfleet/controller/web/page.html" in names and "tinyfleet/agent/units/tinyfleet-agent.service" in names

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    pip = venv / "bin" / "pip"
    installed = run(pip, "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr[-3000:]
    agent = run(venv / "bin" / "tinyfleet-agent", "--help", timeout=60)
    assert agent.returncode == 0 and "--controller-key" in agent.stdout, agent.stderr
    operator = run(venv / "bin" / "tinyfleet", "--help", timeout=60)
    assert operator.returncode == 2 and "Traceback" not in operator.stderr, operator.stderr
    assert operator.stderr.count("\n") == 1 and "tinyfleet[operator]" in operator.stderr

    with_extra = run(pip, "install", "-q", f"tinyfleet[operator] @ {wheel.as_uri()}")
    assert with_extra.returncode == 0, with_extra.stderr[-3000:]
    operator = run(venv / "bin" / "tinyfleet", "--help", timeout=60)
    assert operator.returncode == 0 and "provision" in operator.stdout, operator.stderr
    pages = run(venv / "bin" / "python", "-c", "import importlib.resources as r; "
                "print(r.files('tinyfleet.controller').joinpath('web', 'page.html').is_file())", timeout=60)
    assert pages.stdout.strip() == "True", pages.stderr
