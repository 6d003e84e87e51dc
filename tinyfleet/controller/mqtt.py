"""The controller's broker adapter (paho-mqtt 2.x, callback API version 2).

A persistent session (clean_session=False, a client id kept in the store): while the controller is
down the broker queues the QoS 1 reports for it, so a restart loses none. Subscribes to every
device's reported and status (QoS 1) and health (QoS 0). Publishes desired states retained at QoS 1
without waiting for each acknowledgement: paho keeps them in flight (up to `max_inflight`) and resends
after a reconnect, so fanning out to thousands of devices is not one round trip per device.
Reconnects by itself with exponential backoff.
"""

from __future__ import annotations

import functools
import ssl
import sys
import threading
from collections.abc import Callable

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from tinyfleet.agent.mqtt import connect_error
from tinyfleet.protocol import topics
from tinyfleet.protocol.broker import BrokerAddress
from tinyfleet.protocol.topics import Channel

log = structlog.get_logger("controller.mqtt")
SUBSCRIPTIONS = [(topics.subscription(Channel.REPORTED), 1), (topics.subscription(Channel.STATUS), 1),
                 (topics.subscription(Channel.HEALTH), 0)]


def subscriptions(share_group: str | None) -> list[tuple[str, int]]:
    """The device channels; with a share group, as MQTT shared subscriptions ($share/GROUP/...), so that
    several controllers on one database split the reports instead of each writing every one."""
    if share_group is None:
        return list(SUBSCRIPTIONS)
    return [(f"$share/{share_group}/{topic}", qos) for topic, qos in SUBSCRIPTIONS]


Ack = Callable[[], None]


class MqttLink:
    """on_message(topic, payload, retained, ack). In a share group a QoS 1 delivery is acknowledged to the
    broker only when `ack` is called - once it is written -, so what a killed member still held in memory
    is delivered again instead of lost: a $share subscription gets no retained copies to catch up from.
    Alone, paho acknowledges on receipt (cheaper: each ack is a packet of its own, and the broker's
    in-flight window then limits how many reports wait for one write): every (re)subscription brings
    each device's retained reported and status again, and the engine acts on the latest."""

    def __init__(self, broker: BrokerAddress, client_id: str, *, on_message: Callable[[str, bytes, bool, Ack], None],
                 on_connected: Callable[[], None] = lambda: None,
                 on_state: Callable[[bool], None] = lambda connected: None,
                 keepalive: int = 30, max_inflight: int = 1000, ca_file: str | None = None,
                 share_group: str | None = None) -> None:
        self.broker = broker
        self.subscriptions = subscriptions(share_group)
        self._manual_ack = share_group is not None
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_state = on_state
        self.keepalive = keepalive
        self.connected = threading.Event()
        self._stopping = False
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                             protocol=paho.MQTTv311, manual_ack=self._manual_ack)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)  # unlimited: desired states are never dropped on our side
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:  # the system's CAs, or only the one in `ca_file` (a private CA, pinned)
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_connect_fail = lambda c, u: log.warning(
            "cannot reach the broker; retrying with backoff", broker=str(self.broker),
            error=connect_error(sys.exc_info()[1]))
        client.on_message = self._message
        self.client = client

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting until stop()."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def publish(self, topic: str, payload: bytes) -> None:
        """Retained, QoS 1, non-blocking. Queued by paho if the broker is away, sent on reconnect."""
        self.client.publish(topic, payload, qos=1, retain=True)

    def _connected(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                   reason: paho.ReasonCode, properties: object) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection", broker=str(self.broker), reason=str(reason))
            return
        client.subscribe(self.subscriptions)
        self.connected.set()
        self._on_state(True)
        log.info("connected to the broker", broker=str(self.broker), session_present=flags.session_present)
        self._on_connected()

    def _disconnected(self, client: paho.Client, userdata: object, flags: paho.DisconnectFlags,
                      reason: paho.ReasonCode, properties: object) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self._on_state(False)
        if was and not self._stopping:
            log.warning("lost the broker; reconnecting with backoff", broker=str(self.broker), reason=str(reason))

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "<not UTF-8>"
        ack = functools.partial(client.ack, msg.mid, msg.qos) if self._manual_ack and msg.qos else _nothing
        self._on_message(topic, msg.payload, bool(msg.retain), ack)


def _nothing() -> None:
    """The ack of a QoS 0 delivery, or of one paho acknowledged itself."""
