"""An agent-only installation (`pip install .`, no operator extras), as a board would have it: the
footprint of the agent depends on what is importable (structlog pulls in rich when it is there)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "agent-venv"


def agent_executable() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        VENV.parent.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    else:  # refresh the agent's own code, keep the (pinned-by-pyproject) libraries
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)],
                       check=True)
    return VENV / "bin" / "tinyfleet-agent"
