"""Errors of the wire contract.

    ProtocolError            a message is malformed; names the field and the problem (terminal:
     |                       the sender must send a corrected message, retrying the same bytes fails)
     +-- PayloadTooLarge     the payload exceeds the size cap before any parsing happened
     +-- UnsupportedVersion  the schema's major version is unknown to this side
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message does not follow the contract. `field` is a path such as ``apps[1].image``."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class PayloadTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__("", f"payload is {size} bytes, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class UnsupportedVersion(ProtocolError):
    def __init__(self, version: str, supported: str) -> None:
        super().__init__("v", f"schema version {version!r} has a major version this side does not "
                              f"understand (supported: {supported}); upgrade tinyfleet")
        self.version = version
