"""Which devices a rollout (or a listing) is about:

    all                      every device the controller knows
    device:ID[,ID...]        these devices (ids follow protocol.topics rules)
    group:NAME               members of a group
    tag:KEY=VALUE            devices whose tag KEY has exactly VALUE

Parsed once at the edge into a frozen Selector; `str()` gives back the canonical text, which is what
the store keeps (bindings of a selector to a release are keyed by it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from tinyfleet.controller.errors import InvalidRequest
from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.topics import validate_device_id

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # group names and tag keys
TAG_VALUE_RE = re.compile(r"[A-Za-z0-9._:/@+-]{0,128}")
MAX_DEVICES_IN_SELECTOR = 1000


class Kind(StrEnum):
    ALL = "all"
    DEVICE = "device"
    GROUP = "group"
    TAG = "tag"


@dataclass(frozen=True)
class Selector:
    kind: Kind
    values: tuple[str, ...] = ()  # device ids | (group,) | (key, value)

    @classmethod
    def parse(cls, text: object) -> Selector:
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("selector is empty; use all, device:ID[,ID...], group:NAME or tag:KEY=VALUE")
        text = text.strip()
        if text == "all":
            return cls(Kind.ALL)
        kind, sep, rest = text.partition(":")
        if not sep or kind not in (Kind.DEVICE, Kind.GROUP, Kind.TAG):
            raise InvalidRequest(f"selector {text!r} is not all, device:ID[,ID...], group:NAME or tag:KEY=VALUE")
        if kind == Kind.DEVICE:
            ids = [i.strip() for i in rest.split(",") if i.strip()]
            if not ids or len(ids) > MAX_DEVICES_IN_SELECTOR:
                raise InvalidRequest(f"selector {text!r} must name 1..{MAX_DEVICES_IN_SELECTOR} device ids")
            try:
                return cls(Kind.DEVICE, tuple(sorted({validate_device_id(i, "device id") for i in ids})))
            except ProtocolError as exc:
                raise InvalidRequest(f"selector {text!r}: {exc}") from exc
        if kind == Kind.GROUP:
            return cls(Kind.GROUP, (check_name(rest, "group name"),))
        key, eq, value = rest.partition("=")
        if not eq:
            raise InvalidRequest(f"selector {text!r} must be tag:KEY=VALUE")
        return cls(Kind.TAG, (check_name(key, "tag key"), check_tag_value(value)))

    def matches(self, device_id: str, groups: Iterable[str], tags: Mapping[str, str]) -> bool:
        if self.kind == Kind.ALL:
            return True
        if self.kind == Kind.DEVICE:
            return device_id in self.values
        if self.kind == Kind.GROUP:
            return self.values[0] in set(groups)
        return tags.get(self.values[0]) == self.values[1]

    def __str__(self) -> str:
        if self.kind == Kind.ALL:
            return "all"
        if self.kind == Kind.TAG:
            return f"tag:{self.values[0]}={self.values[1]}"
        return f"{self.kind.value}:{','.join(self.values)}"


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidRequest(f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
    return value


def check_tag_value(value: object) -> str:
    if not isinstance(value, str) or not TAG_VALUE_RE.fullmatch(value):
        raise InvalidRequest(f"tag value {value!r} must be at most 128 letters, digits or . _ : / @ + -")
    return value
