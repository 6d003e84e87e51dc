"""Strict readers for decoded JSON: each returns a checked value or raises ProtocolError naming the
field path and the problem. Booleans are not integers here (JSON `true` is never a count)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tinyfleet.protocol.errors import ProtocolError

T = TypeVar("T")
_MISSING = object()
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class Reader:
    """Reads fields out of one JSON object, remembering which keys were consumed so that unknown
    keys can be reported (or ignored, under the compatibility rule in protocol.codec)."""

    def __init__(self, obj: object, path: str, *, strict: bool = True,
                 ignored: list[str] | None = None) -> None:
        if not isinstance(obj, Mapping):
            raise ProtocolError(path or "body", f"must be an object, got {_kind(obj)}")
        self.obj = obj
        self.path = path
        self.strict = strict
        self.ignored = ignored if ignored is not None else []  # shared with nested readers
        self._seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, default: object = _MISSING) -> Any:
        self._seen.add(key)
        if key in self.obj and self.obj[key] is not None:
            return self.obj[key]
        if default is _MISSING:
            raise ProtocolError(self.at(key), "is required")
        return default

    def str(self, key: str, default: object = _MISSING, *, max_len: int = 256,
            pattern: re.Pattern[str] | None = None, allow_empty: bool = False) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        return check_str(value, self.at(key), max_len=max_len, pattern=pattern, allow_empty=allow_empty)

    def int(self, key: str, default: object = _MISSING, *, lo: int = 0, hi: int = 2**63 - 1) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        return check_int(value, self.at(key), lo=lo, hi=hi)

    def num(self, key: str, default: object = _MISSING, *, lo: float = 0.0, hi: float = 1e12) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        return check_num(value, self.at(key), lo=lo, hi=hi)

    def bool(self, key: str, default: object = _MISSING) -> Any:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ProtocolError(self.at(key), f"must be true or false, got {_kind(value)}")
        return value

    def obj_list(self, key: str, item: Callable[[Reader], T], *, max_items: int,
                 default: object = ()) -> tuple[T, ...]:
        value = self.raw(key, default)
        if value is default:
            return tuple(value)  # type: ignore[arg-type]
        if not isinstance(value, list):
            raise ProtocolError(self.at(key), f"must be a list, got {_kind(value)}")
        if len(value) > max_items:
            raise ProtocolError(self.at(key), f"has {len(value)} entries, over the limit of {max_items}")
        out = []
        for i, entry in enumerate(value):
            sub = Reader(entry, f"{self.at(key)}[{i}]", strict=self.strict, ignored=self.ignored)
            out.append(item(sub))
            sub.done()
        return tuple(out)

    def sub(self, key: str, item: Callable[[Reader], T], default: object = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        sub = Reader(value, self.at(key), strict=self.strict, ignored=self.ignored)
        result = item(sub)
        sub.done()
        return result

    def str_map(self, key: str, *, max_items: int, key_pattern: re.Pattern[str],
                max_value: int = 4096) -> tuple[tuple[str, str], ...]:
        value = self.raw(key, {})
        if not isinstance(value, Mapping):
            raise ProtocolError(self.at(key), f"must be an object, got {_kind(value)}")
        if len(value) > max_items:
            raise ProtocolError(self.at(key), f"has {len(value)} entries, over the limit of {max_items}")
        out = []
        for k, v in value.items():
            check_str(k, f"{self.at(key)} key", max_len=256, pattern=key_pattern)
            check_str(v, f"{self.at(key)}.{k}", max_len=max_value, allow_empty=True)
            out.append((k, v))
        return tuple(sorted(out))

    def done(self) -> None:
        """Under the strict rule an unknown key is an error: it is most likely a typo or a field from
        a newer contract that this side would silently drop."""
        unknown = sorted(set(self.obj) - self._seen)
        if not self.strict:
            self.ignored.extend(self.at(k) for k in unknown)
        elif unknown:
            raise ProtocolError(self.at(unknown[0]), "is not a known field")


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def check_str(value: object, field: str, *, max_len: int = 256,
              pattern: re.Pattern[str] | None = None, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ProtocolError(field, f"must be a string, got {_kind(value)}")
    if not value and not allow_empty:
        raise ProtocolError(field, "must not be empty")
    if len(value) > max_len:
        raise ProtocolError(field, f"is {len(value)} characters, over the limit of {max_len}")
    if "\x00" in value:
        raise ProtocolError(field, "must not contain NUL characters")
    if pattern is not None and value and not pattern.fullmatch(value):
        raise ProtocolError(field, f"{value!r} does not match {pattern.pattern}")
    return value


def check_int(value: object, field: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(field, f"must be an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        raise ProtocolError(field, f"{value} is outside {lo}..{hi}")
    return value


def check_num(value: object, field: str, *, lo: float = 0.0, hi: float = 1e12) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(field, f"must be a number, got {_kind(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ProtocolError(field, f"{value} is outside {lo:g}..{hi:g}")
    return float(value)
