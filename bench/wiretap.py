"""A plain subscriber on the broker that notes, per device, when its desired state went by and when its
first report of the app running at a given image went by: with the controller's own timestamps, this
splits a convergence into controller publish -> agent -> controller. It adds one subscriber (two
messages per device), so the simulator uses it only when asked (`--breakdown`), and in a process of its
own: in the benchmark's process its work would slow the controller it measures."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from protocol import ProtocolError, ReportedState, decode, topics
from protocol.broker import BrokerAddress
from protocol.messages import Phase
from protocol.topics import Channel


class Wiretap:
    """The tap, in a child process: watch(image) before a rollout, seen() after it."""

    def __init__(self, broker_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, broker_url), name="wiretap", daemon=True)
        self._process.start()
        self._call("ready")

    def watch(self, image: str) -> None:
        self._call("watch", image)

    def seen(self) -> tuple[dict[str, float], dict[str, float]]:
        """(device -> when its desired state went by, device -> when its running report went by)."""
        return self._call("seen")  # type: ignore[no-any-return]

    def close(self) -> None:
        try:
            self._call("close")
        finally:
            self._process.join(10)

    def _call(self, *message: Any, timeout: float = 60.0) -> Any:
        self._conn.send(message)
        if not self._conn.poll(timeout):
            raise RuntimeError(f"the wiretap did not answer {message[0]!r} within {timeout:g} s")
        return self._conn.recv()


def _serve(conn: Connection, broker_url: str) -> None:
    tap = _Tap(broker_url)
    while True:
        command, *args = conn.recv()
        if command == "watch":
            tap.watch(*args)
        reply: Any = tap.seen() if command == "seen" else True
        if command == "close":
            tap.close()
        conn.send(reply)
        if command == "close":
            return


class _Tap:
    def __init__(self, broker_url: str) -> None:
        address = BrokerAddress.parse(broker_url)
        self.desired: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.image: str | None = None
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tinyfleet-bench-tap-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._message
        self._client.connect(address.host, address.port)
        self._client.subscribe([(topics.subscription(Channel.DESIRED), 0), (topics.subscription(Channel.REPORTED), 0)])
        self._client.loop_start()

    def watch(self, image: str) -> None:
        """Forget what was seen; from now on note reports of the app running `image`."""
        with self._lock:
            self.desired, self.running, self.image = {}, {}, image

    def seen(self) -> tuple[dict[str, float], dict[str, float]]:
        with self._lock:
            return dict(self.desired), dict(self.running)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        if msg.retain or not msg.payload:
            return  # history from before the watch
        try:
            device_id, channel = topics.parse(msg.topic)
            if channel == Channel.DESIRED:
                with self._lock:
                    self.desired.setdefault(device_id, now)
                return
            report = decode(msg.payload, ReportedState)
        except ProtocolError:
            return
        assert isinstance(report, ReportedState)
        if any(a.phase == Phase.RUNNING and a.current_image == self.image for a in report.apps):
            with self._lock:
                self.running.setdefault(device_id, now)
