"""What the planner sees: observed containers and images, and the facts and memory of this board.

All frozen; built by the engine adapter and the state store, read by the pure planner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, HealthPolicy, Phase

# Labels on every container the agent manages. Containers without OWNER=tinyfleet and this device's
# DEVICE label are never touched (several agents may share one engine).
LABEL_OWNER = "io.tinyfleet.owner"
LABEL_DEVICE = "io.tinyfleet.device"
LABEL_APP = "io.tinyfleet.app"
LABEL_GENERATION = "io.tinyfleet.generation"
LABEL_SPEC_HASH = "io.tinyfleet.spec-hash"
LABEL_IMAGE = "io.tinyfleet.image"  # the desired-state image string (repo@index digest)
LABEL_PULL_REF = "io.tinyfleet.pull-ref"  # repo@platform manifest digest actually run
LABEL_CREATED = "io.tinyfleet.created"  # epoch seconds, for the health deadline
OWNER = "tinyfleet"


@dataclass(frozen=True)
class ContainerView:
    id: str
    name: str
    app: str
    spec_hash: str
    image: str
    pull_ref: str
    generation: int
    created_at: float
    state: str  # created | running | restarting | exited | paused | dead | removing
    health: str = "none"  # healthy | unhealthy | starting | none (no HEALTHCHECK)
    restart_count: int = 0
    started_at: float | None = None
    exit_code: int | None = None
    address: str | None = None  # where the agent reaches the container (bridge IP); None: no network

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class Observed:
    containers: tuple[ContainerView, ...] = ()
    images: frozenset[str] = frozenset()  # pull refs (repo@platform digest) present in the engine

    def for_app(self, app: str) -> tuple[ContainerView, ...]:
        return tuple(c for c in self.containers if c.app == app)


@dataclass(frozen=True)
class Resolved:
    """The outcome of verifying one desired image for this board, remembered across passes."""

    image: str  # desired image string
    pull_ref: str  # repo@platform manifest digest
    compressed_size: int
    platform: str


@dataclass(frozen=True)
class Failure:
    """A spec that failed on this board. Not retried until the app's spec changes."""

    spec_hash: str
    image: str
    phase: Phase  # failed | rolled_back
    reason: str
    at: float


@dataclass(frozen=True)
class UpdateLock:
    """An app's update lock as found on the host (agent.locks): who holds it, since and until when."""

    holder: str
    since: float
    expires: float


@dataclass(frozen=True)
class Held:
    """An update of `spec_hash` held back by the app's lock since `since` (the release's max wait counts
    from here, not from when the app took the lock)."""

    spec_hash: str
    since: float


@dataclass(frozen=True)
class AppMemory:
    resolved: Resolved | None = None
    failure: Failure | None = None
    promoted: str | None = None  # spec hash of the container judged good (monitored, not judged again)
    last_restart_at: float | None = None  # when the agent last restarted an unhealthy container
    agent_restarts: int = 0
    held: Held | None = None


@dataclass(frozen=True)
class Facts:
    device_id: str
    platform: Platform
    now: float
    default_budget: int | None = None
    disk_free: int | None = None
    min_free_bytes: int = 64 * 1024 * 1024
    unhealthy_grace_s: float = 30.0
    default_health: HealthPolicy = field(default_factory=HealthPolicy)
    memory: Mapping[str, AppMemory] = field(default_factory=dict)
    pulled: frozenset[str] = frozenset()  # images this agent pulled (only these are ever pruned)
    locks: Mapping[str, UpdateLock] = field(default_factory=dict)  # update locks held now, by app

    def remembered(self, app: str) -> AppMemory:
        return self.memory.get(app) or AppMemory()

    def health(self, spec: AppSpec) -> HealthPolicy:
        return spec.health or self.default_health
