"""The agent's broker adapter, without a broker: what it does before a connection is accepted."""

from __future__ import annotations

from tinyfleet.agent.mqtt import MqttLink
from tinyfleet.protocol.broker import BrokerAddress


def test_a_report_waits_for_the_broker_to_accept_the_connection() -> None:
    # Handed to paho while it is still connecting, a report can go out ahead of CONNECT - a protocol error
    # the broker drops the agent for. The agent sends its then-current report from the connect callback.
    link = MqttLink("pi-1", BrokerAddress.parse("mqtt://127.0.0.1:9"), online_payload=lambda: b"on",
                    offline_payload=b"off", on_desired=lambda payload: None, on_connected=lambda: None)
    assert not link.connected
    assert link.publish_reported(b"{}") is False
