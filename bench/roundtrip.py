"""The raw MQTT round trip the fleet simulator compares convergence with: the controller's own broker
adapter (controller.mqtt.MqttLink: same paho settings, in-flight window and subscriptions) publishes
one retained QoS 1 message on each device's desired topic, back to back, and times each device's echo
on its reported topic. The devices' side is a trivial echo (bench.simhost.SimHost.echo_start).

Per round, for each device:
    from_start   echo received - the first publish of the round (what "the whole fleet answered" is made of)
    per_message  echo received - that device's own publish
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tinyfleet.controller.mqtt import MqttLink
from tinyfleet.protocol import topics
from tinyfleet.protocol.broker import BrokerAddress
from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.topics import Channel

CLIENT_ID = "tinyfleet-bench-roundtrip"


@dataclass(frozen=True)
class RoundTrip:
    from_start: list[float]  # seconds, one per device that answered
    per_message: list[float]
    missing: int  # devices that did not answer within the timeout


class EchoBaseline:
    def __init__(self, broker_url: str) -> None:
        self.address = BrokerAddress.parse(broker_url)
        self.link = MqttLink(self.address, CLIENT_ID, on_message=self._received)
        self._lock = threading.Lock()
        self._expected: dict[str, bytes] = {}
        self._answered: dict[str, float] = {}
        self._all = threading.Event()

    def __enter__(self) -> EchoBaseline:
        self.link.start()
        if not self.link.connected.wait(15):
            self.link.stop()
            raise RuntimeError(f"the round-trip client could not connect to {self.address}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()
        discard_session(self.address, CLIENT_ID)

    def _received(self, topic: str, payload: bytes, retained: bool, ack: Callable[[], None]) -> None:
        ack()  # nothing to write first
        try:
            device_id, channel = topics.parse(topic)
        except ProtocolError:
            return
        if channel != Channel.REPORTED:
            return
        now = time.perf_counter()
        with self._lock:
            if self._expected.get(device_id) == payload and device_id not in self._answered:
                self._answered[device_id] = now
                if len(self._answered) == len(self._expected):
                    self._all.set()

    def round(self, payloads: dict[str, bytes], timeout: float) -> RoundTrip:
        """Publish payloads[device] to every device at once; wait for all echoes (or the timeout)."""
        with self._lock:
            self._expected = dict(payloads)
            self._answered = {}
            self._all.clear()
        sent = {}
        began = time.perf_counter()
        for device_id, payload in payloads.items():
            sent[device_id] = time.perf_counter()
            self.link.publish(topics.desired(device_id), payload)
        self._all.wait(timeout)
        with self._lock:
            answered = dict(self._answered)
            self._expected = {}
        return RoundTrip(from_start=[t - began for t in answered.values()],
                         per_message=[t - sent[d] for d, t in answered.items()],
                         missing=len(payloads) - len(answered))

    def clear(self, device_ids: list[str], timeout: float = 30) -> None:
        """Delete the retained desired and reported messages the rounds left on the broker, so the
        simulated agents that take these topics over start from nothing."""
        infos = [self.link.client.publish(topics.topic(d, channel), b"", qos=1, retain=True)
                 for d in device_ids for channel in (Channel.DESIRED, Channel.REPORTED)]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))


def discard_session(address: BrokerAddress, client_id: str) -> None:
    """Connect once with a clean session, so the broker stops queueing messages for a persistent one."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                         protocol=paho.MQTTv311)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()
