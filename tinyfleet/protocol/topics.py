"""MQTT topic names. Every topic lives under a versioned prefix so a v2 contract can run beside v1.

    tinyfleet/v1/devices/{device_id}/desired    controller -> agent, retained, QoS 1
    tinyfleet/v1/devices/{device_id}/reported   agent -> controller, retained, QoS 1
    tinyfleet/v1/devices/{device_id}/health     agent -> controller, periodic, QoS 0
    tinyfleet/v1/devices/{device_id}/status     agent -> controller, retained; also the last will
"""

from __future__ import annotations

import re
from enum import StrEnum

from tinyfleet.protocol.errors import ProtocolError

PREFIX = "tinyfleet/v1/devices"
DEVICE_ID_MAX = 64
# Letters, digits, dot, dash and underscore; must start with a letter or digit. This excludes MQTT
# wildcards (+ #), the level separator (/), and anything a shell or a file name would trip over.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Channel(StrEnum):
    DESIRED = "desired"
    REPORTED = "reported"
    HEALTH = "health"
    STATUS = "status"


def validate_device_id(device_id: object, field: str = "device_id") -> str:
    if not isinstance(device_id, str):
        raise ProtocolError(field, f"must be a string, got {type(device_id).__name__}")
    if not device_id:
        raise ProtocolError(field, "must not be empty")
    if len(device_id) > DEVICE_ID_MAX:
        raise ProtocolError(field, f"is {len(device_id)} characters, over the limit of {DEVICE_ID_MAX}")
    if not _DEVICE_ID.fullmatch(device_id):
        raise ProtocolError(field, f"{device_id!r} may hold only letters, digits, '.', '_' and '-', "
                                   "starting with a letter or digit")
    return device_id


def topic(device_id: str, channel: Channel) -> str:
    return f"{PREFIX}/{validate_device_id(device_id)}/{Channel(channel).value}"


def desired(device_id: str) -> str:
    return topic(device_id, Channel.DESIRED)


def reported(device_id: str) -> str:
    return topic(device_id, Channel.REPORTED)


def health(device_id: str) -> str:
    return topic(device_id, Channel.HEALTH)


def status(device_id: str) -> str:
    return topic(device_id, Channel.STATUS)


def subscription(channel: Channel) -> str:
    """The wildcard filter a controller subscribes to for one channel of every device."""
    return f"{PREFIX}/+/{Channel(channel).value}"


def parse(topic_name: str) -> tuple[str, Channel]:
    """Split a concrete topic into (device_id, channel); raises ProtocolError for anything else."""
    head = PREFIX + "/"
    if not topic_name.startswith(head):
        raise ProtocolError("topic", f"{topic_name!r} is not under {PREFIX}/")
    parts = topic_name[len(head):].split("/")
    if len(parts) != 2:
        raise ProtocolError("topic", f"{topic_name!r} is not {PREFIX}/<device_id>/<channel>")
    device_id, channel = parts
    validate_device_id(device_id, "topic.device_id")
    try:
        return device_id, Channel(channel)
    except ValueError:
        raise ProtocolError("topic", f"unknown channel {channel!r}") from None
