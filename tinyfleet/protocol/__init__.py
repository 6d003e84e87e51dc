"""tinyfleet's wire contract: topics, messages, codec. Standard library only.

Both the controller and the agent import this package; it is the single place where the shape of a
message is defined, so version skew shows up as a decode error here rather than as a surprise there.
"""

from tinyfleet.protocol.codec import MAX_PAYLOAD_BYTES, SCHEMA_VERSION, decode, encode
from tinyfleet.protocol.errors import PayloadTooLarge, ProtocolError, UnsupportedVersion
from tinyfleet.protocol.messages import (
    AppSpec,
    AppStatus,
    DesiredState,
    Health,
    HealthPolicy,
    Limits,
    LockEndpoint,
    LockHeld,
    Phase,
    PortMapping,
    ReportedState,
    RestartPolicy,
    Signature,
    Status,
    UpdateLockPolicy,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "AppSpec",
    "AppStatus",
    "DesiredState",
    "Health",
    "HealthPolicy",
    "Limits",
    "LockEndpoint",
    "LockHeld",
    "PayloadTooLarge",
    "Phase",
    "PortMapping",
    "ProtocolError",
    "ReportedState",
    "RestartPolicy",
    "Signature",
    "Status",
    "UnsupportedVersion",
    "UpdateLockPolicy",
    "decode",
    "encode",
]
