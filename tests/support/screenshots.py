"""Screenshots of the dashboard for the README: `.venv/bin/python -m tests.support.screenshots [DIR]`.

Runs the dashboard's browser test (tests/integration/test_dashboard.py: a real controller, the private
broker and registry, emulated devices, headless Chromium) with TINYFLEET_SCREENSHOTS set, so that it
saves each page it visits as DIR/NAME.png (default docs/screenshots: login, overview, device, releases,
rollouts)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    target = Path(argv[0]).resolve() if argv else ROOT / "docs" / "screenshots"
    os.environ["TINYFLEET_SCREENSHOTS"] = str(target)
    code = pytest.main([str(ROOT / "tests" / "integration" / "test_dashboard.py"), "-q", "-p", "no:cacheprovider"])
    if code == 0:
        print(f"screenshots in {target}: {', '.join(sorted(p.name for p in target.glob('*.png')))}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
