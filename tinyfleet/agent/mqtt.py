"""The MQTT adapter (paho-mqtt 2.x): one persistent session per device, QoS 1 for desired and
reported, a retained last will that marks the device offline, a retained online status on every
connect, and reconnects with exponential backoff whose delays are randomised per client so a fleet
does not stampede a restarted broker. paho's network thread calls back into the agent only through
`on_desired` (the raw payload) and `on_connected`."""

from __future__ import annotations

import contextlib
import random
import ssl
import sys
import threading
from collections.abc import Callable

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from tinyfleet.protocol import topics
from tinyfleet.protocol.broker import BrokerAddress

log = structlog.get_logger("agent.mqtt")


class MqttLink:
    def __init__(self, device_id: str, broker: BrokerAddress, *, online_payload: Callable[[], bytes],
                 offline_payload: bytes, on_desired: Callable[[bytes], None], on_connected: Callable[[], None],
                 ca_file: str | None = None, keepalive: int = 60, client_id: str | None = None) -> None:
        self.device_id = device_id
        self.broker = broker
        self._online_payload = online_payload
        self._offline_payload = offline_payload
        self._on_desired = on_desired
        self._on_connected = on_connected
        self._keepalive = keepalive
        self._connected = threading.Event()
        self._stopping = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"tinyfleet-{device_id}",
                                  clean_session=False, protocol=paho.MQTTv311)
        self.client.enable_logger(None)
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.will_set(topics.status(device_id), offline_payload, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=random.uniform(1, 3), max_delay=60 + random.uniform(0, 30))
        self.client.max_inflight_messages_set(20)
        self.client.on_connect = self._connected_cb
        self.client.on_disconnect = self._disconnected_cb
        self.client.on_connect_fail = self._connect_failed_cb
        self.client.on_message = self._message_cb

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self, own_thread: bool = True) -> None:
        """Connect in the background. Without `own_thread` the caller drives the socket (paho's external
        loop: loop_read / loop_write / loop_misc), as the fleet simulator does for hundreds of links."""
        self._own_thread = own_thread
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self._keepalive)
        if own_thread:
            self.client.loop_start()
        else:
            self.client.reconnect()

    def stop(self) -> None:
        """A clean goodbye: retained offline status, then disconnect (the will is not sent on a clean one)."""
        self._stopping = True
        own_thread = getattr(self, "_own_thread", True)
        if self.connected:
            info = self.client.publish(topics.status(self.device_id), self._offline_payload, qos=1, retain=True)
            if own_thread:
                info.wait_for_publish(timeout=5)
        self.client.disconnect()
        if own_thread:
            # paho 2.2's network thread clears its own handle as it ends, which can race loop_stop()'s join
            with contextlib.suppress(AttributeError):
                self.client.loop_stop()

    def publish_reported(self, payload: bytes) -> bool:
        """Hand a report to paho only once the broker has accepted the connection; False when not sent.
        (Published from another thread while paho is still connecting, it can go out ahead of CONNECT:
        a protocol error the broker drops us for. The caller sends its then-current report on connect.)"""
        if not self.connected:
            return False
        self.client.publish(topics.reported(self.device_id), payload, qos=1, retain=True)
        return True

    def publish_health(self, payload: bytes) -> None:
        if self.connected:  # health is a snapshot: a stale one queued for later is worthless
            self.client.publish(topics.health(self.device_id), payload, qos=0)

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _connected_cb(self, client: paho.Client, userdata: object, flags: object, reason: object,
                      properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused the connection", reason=str(reason))
            return
        client.publish(topics.status(self.device_id), self._online_payload(), qos=1, retain=True)
        client.subscribe(topics.desired(self.device_id), qos=1)
        self._connected.set()
        log.info("connected to broker", broker=str(self.broker),
                 session_present=getattr(flags, "session_present", None))
        self._on_connected()

    def _connect_failed_cb(self, client: paho.Client, userdata: object) -> None:
        log.warning("cannot reach the broker; retrying with backoff", broker=str(self.broker),
                    error=connect_error(sys.exc_info()[1]))

    def _disconnected_cb(self, client: paho.Client, userdata: object, flags: object, reason: object,
                         properties: object) -> None:
        self._connected.clear()
        if self._stopping:
            log.info("disconnected from broker", reason=str(reason))
        else:
            log.warning("disconnected from broker; reconnecting with backoff", reason=str(reason))

    def _message_cb(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == topics.desired(self.device_id):
            self._on_desired(bytes(message.payload))


def connect_error(exc: BaseException | None) -> str:
    """Why a connect failed, for the log (paho's loop retries and keeps this to itself): a refused TLS
    certificate says so (wrong `ca_file`, wrong host name), the rest as the OS puts it."""
    # Only a loaded ssl raises certificate errors; reading ssl's attribute before would load OpenSSL in an
    # agent on mqtt:// (agent/lean.py defers it).
    if "_ssl" in sys.modules and isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's TLS certificate was refused: {exc.verify_message} (check ca_file and the host name)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return "unknown"
