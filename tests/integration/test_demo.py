"""The README's first command: the demo (`python -m sandbox.demo`) tells the whole story and says it came out right -
here on the session's broker, registry and engine, as the demo allows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sandbox.peer import FleetPeer

REPO = Path(__file__).resolve().parents[2]


def test_demo_rolls_out_v1_v2_and_rolls_back_a_broken_v3(mosquitto, registry, dockerd) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([sys.executable, "-m", "sandbox.demo", "--broker", mosquitto.url, "--registry",
                             registry.host, "--docker-host", dockerd.url], capture_output=True, text=True, timeout=900,
                            cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-5000:]
    out = result.stdout
    assert "the story came out right" in out
    assert len(out.splitlines()) < 80, f"without a terminal, one line per change: {len(out.splitlines())} lines"
    for needle in ("hello:1.0 │ completed", "hello:2.0 │ completed", "hello:3.0 │ aborted", "linux/arm/v6",
                   "previous version restored", "a forged update was refused: demo-pi4-arm64 kept running hello:2.0",
                   "signature refused", "while 1.0 held its update lock"):
        assert needle in out, needle
    leftovers = dockerd.client().containers.list(all=True, filters={"label": "io.tinyfleet.device=demo-pi4-arm64"})
    assert leftovers == [], "the demo cleans up its containers"
    peer = FleetPeer(mosquitto.url)
    try:
        time.sleep(1)  # retained messages arrive right after subscribing
        assert not [d for d in peer.status if d.startswith("demo-")], "no retained status left on the broker"
    finally:
        peer.close()
