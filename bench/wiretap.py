"""What went by on the broker: per device, when its desired state went by and when its first report of
the app running at a given image went by. With the controller's own timestamps, this splits a
convergence into controller publish -> agent -> controller, and it gives the issue's own measure
(desired published -> reported running).

The listening is done by `mosquitto_sub` (C), which writes every message with its arrival time to a
file; the file is read after each rollout. A Python subscriber cost about a quarter of a CPU-second per
1,000-device rollout - on the same two cores as the agents and the controller it measures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from sandbox.prereqs import require
from tinyfleet.protocol import topics
from tinyfleet.protocol.broker import BrokerAddress
from tinyfleet.protocol.topics import Channel

READY_S = 10.0


class Wiretap:
    """watch(image) before a rollout, seen() after it, close() at the end."""

    def __init__(self, broker_url: str) -> None:
        address = BrokerAddress.parse(broker_url)
        if address.tls or address.username:
            raise ValueError("the wiretap listens on a plain, anonymous broker (the benchmarks' own)")
        require("mosquitto_sub", "mosquitto_pub")
        self._address = address
        fd, name = tempfile.mkstemp(prefix="tfwiretap-", suffix=".log")
        self._path = Path(name)
        self._log = os.fdopen(fd, "wb")
        self._errors = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [shutil.which("mosquitto_sub") or "mosquitto_sub", *self._at(), "-q", "0",
             "-i", f"tinyfleet-bench-tap-{uuid.uuid4().hex[:8]}",
             "-t", topics.subscription(Channel.DESIRED), "-t", topics.subscription(Channel.REPORTED),
             "-F", "%U %r %t %p"], stdout=self._log, stderr=self._errors)
        self._offset = 0
        self._image: str | None = None
        self._wait_subscribed()

    def _at(self) -> list[str]:
        return ["-h", self._address.host, "-p", str(self._address.port)]

    def _wait_subscribed(self) -> None:
        """Until a probe comes through: a desired state for a device that does not exist, not retained
        (no agent listens there, and the controller does not read desired topics)."""
        probe = topics.desired(f"tap-probe-{uuid.uuid4().hex[:8]}")
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._errors.seek(0)
                raise RuntimeError(f"mosquitto_sub exited with {self._proc.returncode}: "
                                   f"{self._errors.read().decode(errors='replace').strip()}")
            subprocess.run([shutil.which("mosquitto_pub") or "mosquitto_pub", *self._at(), "-t", probe, "-m", "probe"],
                           check=False, capture_output=True, timeout=READY_S)
            time.sleep(0.1)
            if probe.encode() in self._path.read_bytes():
                return
        self.close()
        raise RuntimeError(f"mosquitto_sub did not subscribe within {READY_S:g} s")

    def watch(self, image: str) -> None:
        """From now on: note desired states, and reports of the app running `image`."""
        self._log.flush()
        self._offset = self._path.stat().st_size
        self._image = image

    def seen(self, settle: float = 0.3) -> tuple[dict[str, float], dict[str, float]]:
        """(device -> when its desired state went by, device -> when its running report went by), since
        watch(). Waits `settle` seconds first: the last messages reach the controller and this tap at
        about the same time."""
        time.sleep(settle)
        desired: dict[str, float] = {}
        running: dict[str, float] = {}
        with self._path.open("rb") as f:
            f.seek(self._offset)
            for line in f:
                parts = line.rstrip(b"\n").split(b" ", 3)
                if len(parts) < 4 or parts[1] != b"0" or not parts[3]:
                    continue  # retained history, or a cleared topic
                try:
                    device_id, channel = topics.parse(parts[2].decode())
                    at = float(parts[0])
                except (ValueError, UnicodeDecodeError):
                    continue
                if channel == Channel.DESIRED:
                    desired.setdefault(device_id, at)
                elif device_id not in running and self._runs(parts[3]):
                    running[device_id] = at
        return desired, running

    def _runs(self, payload: bytes) -> bool:
        try:
            apps = json.loads(payload)["body"]["apps"]
            return any(a.get("phase") == "running" and a.get("current_image") == self._image for a in apps)
        except (ValueError, KeyError, TypeError):
            return False

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        self._errors.close()
        self._path.unlink(missing_ok=True)
