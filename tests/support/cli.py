from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A controller's public key, for boards provisioned in tests whose desired states nobody sends.
CONTROLLER_KEY = "ed25519:qpsk8IhAHVvFIs8HplBSUuShcgajynHtCgbqRvI0pF4="


def tinyfleet(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
              input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `tinyfleet` console script, as an operator would."""
    exe = Path(sys.executable).parent / "tinyfleet"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, input=input,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
