"""The controller and a private, real Mosquitto that comes late and goes away: the controller serves its
API without the broker, connects when it appears, and puts every desired state back after a broker
that lost its retained messages returns."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sandbox.mosquitto import Mosquitto
from sandbox.process import free_port
from tests.support.fleet import client_of, controller_config
from tests.support.wait import eventually
from tests.unit.controller.records import release, status
from tinyfleet.controller.service import Controller
from tinyfleet.controller.store import Incoming
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import decode
from tinyfleet.protocol.messages import DesiredState


def retained_desired(port: int, device_id: str) -> DesiredState | None:
    """What a device connecting now would get."""
    got: list[DesiredState] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2)

    def on_message(c, u, msg) -> None:  # type: ignore[no-untyped-def]
        if msg.payload:
            got.append(decode(msg.payload, DesiredState))  # type: ignore[arg-type]
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe(topics.desired(device_id), qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(1.0)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


def test_the_controller_outlives_its_broker(tmp_path: Path, store_url: str) -> None:
    port = free_port()
    controller = Controller(controller_config(tmp_path / "ctl" / "controller.db", f"mqtt://127.0.0.1:{port}",
                                              database=store_url)).start()
    broker = Mosquitto(tmp_path / "mqtt", port=port)
    try:
        api = client_of(controller)
        assert api.devices() == [], "the API serves while the broker is away"
        assert not controller.link.connected.is_set()
        broker.start()
        assert controller.wait_connected(20), "connected once the broker appeared (reconnect with backoff)"

        store = controller.store  # a device known to the store, pinned to a release: it has a desired state
        store.record([Incoming(status("pi-late"), live=True)], now=controller.clock(), stale_after=3)
        r1 = store.add_release(release(1))
        api.pin("pi-late", "hello", r1.id)
        first = eventually(lambda: retained_desired(port, "pi-late"), what="the retained desired state")
        assert first.apps[0].image == r1.image

        broker.stop()
        shutil.rmtree(broker.data)  # it comes back with no retained messages at all
        broker.data.mkdir()
        eventually(lambda: not controller.link.connected.is_set(), timeout=10, what="the controller noticed")
        broker.start()
        assert controller.wait_connected(40)
        again = eventually(lambda: retained_desired(port, "pi-late"), timeout=10, what="desired state republished")
        assert again == first, "the same document, byte for byte (same generation)"
    finally:
        controller.stop()
        broker.stop()
