"""The agent's entry point leaves unimported what it never uses (agent/lean.py) without breaking
anything that does use it: asyncio loads on first use, requests works without charset_normalizer."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys, warnings
warnings.simplefilter("error")
from tinyfleet.agent import lean
lean.trim_imports()
import structlog, tenacity
assert "asyncio.base_events" not in sys.modules, "structlog's asyncio is not loaded until used"
with lean.quiet_requests():
    import requests
assert "charset_normalizer.api" not in sys.modules
response = requests.models.Response()
response._content = b'{"ok": true}'
assert response.json() == {"ok": True} and response.apparent_encoding == "utf-8"
import asyncio
async def answer():
    await asyncio.sleep(0)
    return 42
assert asyncio.run(answer()) == 42 and "asyncio.base_events" in sys.modules
from asyncio import events
assert sys.modules["asyncio"].get_event_loop_policy is events.get_event_loop_policy
print("ok")
"""


def test_the_agent_process_defers_asyncio_and_does_without_charset_detection() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
