"""`pip install tinyfleet` without the operator extra, as on a board: the agent works, the operator
command says in one line what to install instead of a traceback, and nothing compiled is needed."""

from __future__ import annotations

import subprocess
import sys

from bench.agentvenv import agent_executable


def test_an_agent_only_install_runs_the_agent_and_explains_the_operator_command() -> None:
    agent = agent_executable()  # a venv with `pip install .` and no extras
    operator = subprocess.run([str(agent.parent / "tinyfleet"), "--help"], capture_output=True, text=True, timeout=60)
    assert operator.returncode == 2 and "Traceback" not in operator.stderr, operator.stderr
    assert operator.stderr.count("\n") == 1 and "pip install 'tinyfleet[operator]'" in operator.stderr
    help_text = subprocess.run([str(agent), "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--controller-key" in help_text.stdout
    # where the operator side is installed too (the test venv), the agent still loads none of it
    probe = ("import sys, tinyfleet.agent.service, tinyfleet.agent.engine, tinyfleet.agent.verifier, "
             "tinyfleet.agent.cli\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography', 'fastapi', 'uvicorn', 'serial'}))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]", "the agent imports nothing of the operator side"
