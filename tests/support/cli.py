from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tinyfleet(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
              input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `tinyfleet` console script, as an operator would."""
    exe = Path(sys.executable).parent / "tinyfleet"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, input=input,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
