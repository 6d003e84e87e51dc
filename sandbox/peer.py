"""The controller's side of the wire, reduced to what agent tests and benchmarks need: publish desired
states and watch what devices report - with the real protocol over the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tinyfleet import protocol
from tinyfleet.controller.signing import Signer
from tinyfleet.protocol import DesiredState, Health, ReportedState, Status, topics


class FleetPeer:
    """Signs what it publishes with its own key (`signer.public` is what its agents must trust)."""

    def __init__(self, broker_url: str, signer: Signer | None = None) -> None:
        parts = urlsplit(broker_url)
        self.signer = signer or Signer.generate()
        self.reported: dict[str, ReportedState] = {}
        self.status: dict[str, Status] = {}
        self.health: dict[str, Health] = {}
        self.history: dict[str, list[ReportedState]] = {}
        self.raw_reported: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex[:8]}")
        self.connected = threading.Event()
        self.client.on_message = self._message
        self.client.on_connect = self._connected
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def _connected(self, client: paho.Client, *_: object) -> None:
        client.subscribe("tinyfleet/v1/devices/+/+", qos=1)
        self.connected.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            device, channel = topics.parse(msg.topic)
        except protocol.ProtocolError:
            return
        if channel == topics.Channel.DESIRED or not msg.payload:
            return
        message = protocol.decode(msg.payload)
        with self._cond:
            if isinstance(message, ReportedState):
                self.reported[device] = message
                self.raw_reported[device] = bytes(msg.payload)
                self.history.setdefault(device, []).append(message)
            elif isinstance(message, Status):
                self.status[device] = message
            elif isinstance(message, Health):
                self.health[device] = message
            self._cond.notify_all()

    def publish(self, desired: DesiredState) -> None:
        self.publish_raw(desired.device_id, protocol.encode(desired, self.signer.sign(desired)))

    def publish_raw(self, device_id: str, payload: bytes) -> None:
        self.connected.wait(30)  # after a broker restart, until paho has reconnected
        self.client.publish(topics.desired(device_id), payload, qos=1, retain=True).wait_for_publish(10)

    def clear(self, device_id: str) -> None:
        self.connected.wait(30)
        for channel in topics.Channel:
            self.client.publish(topics.topic(device_id, channel), b"", qos=1, retain=True).wait_for_publish(10)

    def wait(self, device_id: str, check: Callable[[ReportedState], bool], timeout: float = 120,
             what: str = "report") -> ReportedState:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                current = self.reported.get(device_id)
                if current is not None and check(current):
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{device_id}: {what} not reached in {timeout}s; last report: {current}")
                self._cond.wait(min(left, 1))

    def wait_status(self, device_id: str, online: bool, timeout: float = 60) -> Status:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                current = self.status.get(device_id)
                if current is not None and current.online == online:
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{device_id}: status online={online} not seen; last: {current}")
                self._cond.wait(min(left, 1))
