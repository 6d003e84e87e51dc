"""An EMULATED device for controller tests: it speaks the real wire protocol over the real broker (will,
retained status, desired -> reported, heartbeats) but runs nothing - the outcome of each image is
scripted. It follows the agent's contract: accept a desired document only when its generation is newer
than the last accepted one, reject older ones with `rejected_generation`, report per app
desired_image/current_image/phase/health. The real agent replaces it in the post-merge tests.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import decode, encode
from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.messages import AppStatus, DesiredState, Health, Phase, ReportedState, Status


@dataclass
class Received:
    at: float
    desired: DesiredState


@dataclass
class EmulatedDevice:
    port: int
    device_id: str
    platform: str = "linux/arm64"
    heartbeat: float = 0.5
    fail_images: set[str] = field(default_factory=set)  # images whose health check "fails" here
    received: list[Received] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    handshake: bool = False  # announce the accepted generation on connect (protocol 1.3), as the agent does

    def __post_init__(self) -> None:
        self.accepted = 0
        self.current: dict[str, str] = {}  # app -> image it runs
        self.release = threading.Event()  # cleared: hold every new image at "pulling" until set
        self.release.set()
        self._work: queue.SimpleQueue[DesiredState | None] = queue.SimpleQueue()
        self._beating = threading.Event()
        self._stopped = threading.Event()
        self._disconnected = threading.Event()
        self._client = self._make_client()
        self._worker = threading.Thread(target=self._apply_loop, daemon=True)
        self._pulse = threading.Thread(target=self._heartbeat_loop, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"emulated-{self.device_id}",
                             protocol=paho.MQTTv5)
        client.will_set(topics.status(self.device_id), encode(Status(self.device_id, online=False)), qos=1,
                        retain=True)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = lambda *args: self._disconnected.set()
        return client

    def start(self) -> EmulatedDevice:
        self._connected = threading.Event()
        self._client.connect("127.0.0.1", self.port, keepalive=10)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise AssertionError(f"emulated device {self.device_id} could not connect to the broker")
        if not self._worker.is_alive():
            self._worker.start()
            self._pulse.start()
        self._beating.set()
        return self

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:  # type: ignore[no-untyped-def]
        if self._stopped.is_set():  # connected only to clean up
            self._connected.set()
            return
        client.publish(topics.status(self.device_id), encode(Status(
            self.device_id, online=True, ts=time.time(), agent_version="emulated", platform=self.platform,
            generation=self.accepted if self.handshake else None)), qos=1, retain=True)
        client.subscribe(topics.desired(self.device_id), qos=1)
        self._connected.set()

    def drop_connection(self) -> None:
        """Vanish the way a board that loses power does, as the broker sees it: the will fires."""
        self._beating.clear()
        self._disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))

    def _disconnect(self, reason: ReasonCode | None = None) -> None:
        # Wait until the DISCONNECT is on the wire: stopping the loop first can leave the socket
        # half-open, and the broker would fire the will much later, after the test cleaned up.
        self._disconnected.clear()
        self._client.disconnect(reasoncode=reason)
        self._disconnected.wait(5)
        self._client.loop_stop()

    def go_silent(self) -> None:
        """Stop heartbeats but stay connected (no will): only missed heartbeats tell."""
        self._beating.clear()

    def reconnect(self) -> None:
        self._client = self._make_client()
        self.start()

    def stop(self) -> None:
        """Leave nothing behind on the shared broker: offline, then the retained messages removed."""
        self._beating.clear()
        self._stopped.set()
        self.release.set()
        self._work.put(None)
        if self._worker.is_alive():  # no report may follow the clean-up below
            self._worker.join(5)
        if not self._client.is_connected():
            self._client = self._make_client()
            self._connected = threading.Event()
            self._client.connect("127.0.0.1", self.port)
            self._client.loop_start()
            self._connected.wait(5)
        for topic in (topics.status(self.device_id), topics.reported(self.device_id), topics.desired(self.device_id)):
            self._client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        self._disconnect()

    # -- behaviour ------------------------------------------------------------------------------

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        if not msg.payload or self._stopped.is_set():
            return
        try:
            desired = decode(msg.payload, DesiredState)
        except ProtocolError as exc:
            self._report(error=f"malformed desired state: {exc}")
            return
        self._work.put(desired)  # type: ignore[arg-type]

    def _apply_loop(self) -> None:
        while (desired := self._work.get()) is not None:
            self.received.append(Received(time.time(), desired))
            if desired.generation == self.accepted:
                continue
            if desired.generation < self.accepted:
                self.rejected.append(desired.generation)
                self._report(error=f"generation {desired.generation} is older than {self.accepted}",
                             rejected=desired.generation)
                continue
            self.accepted = desired.generation
            wanted = {a.name: a.image for a in desired.apps}
            statuses = []
            for name, image in sorted(wanted.items()):
                if self.current.get(name) != image and not self.release.is_set():
                    self._report([AppStatus(name, Phase.PULLING, image, self.current.get(name))])
                    self.release.wait()
                statuses.append(self._run(name, image))
            for name in set(self.current) - set(wanted):
                del self.current[name]
            self._report(statuses)

    def _run(self, name: str, image: str) -> AppStatus:
        if image in self.fail_images:
            previous = self.current.get(name)
            phase = Phase.ROLLED_BACK if previous else Phase.FAILED
            return AppStatus(name, phase, image, previous, error="health check failed (emulated)",
                             health="healthy" if previous else "none")
        self.current[name] = image
        return AppStatus(name, Phase.RUNNING, image, image, health="healthy")

    def _report(self, apps: list[AppStatus] | None = None, error: str | None = None,
                rejected: int | None = None) -> None:
        if apps is None:
            apps = [AppStatus(n, Phase.RUNNING, i, i, health="healthy") for n, i in sorted(self.current.items())]
        message = ReportedState(self.device_id, self.accepted, tuple(apps), error=error, rejected_generation=rejected,
                                platform=self.platform, agent_version="emulated", ts=time.time())
        self._client.publish(topics.reported(self.device_id), encode(message), qos=1, retain=True)

    def _heartbeat_loop(self) -> None:
        started = time.time()
        while not self._stopped.is_set():
            if self._beating.is_set():
                health = Health(self.device_id, ts=time.time(), uptime_seconds=time.time() - started,
                                engine_reachable=True, agent_version="emulated")
                self._client.publish(topics.health(self.device_id), encode(health), qos=0)
            self._stopped.wait(self.heartbeat)

    # -- what tests look at ---------------------------------------------------------------------

    def runs(self, app: str) -> str | None:
        return self.current.get(app)

    def generations(self) -> list[int]:
        return [r.desired.generation for r in self.received]
