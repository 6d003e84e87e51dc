"""Fakes shipped with the agent for fast tests of pure logic and for the fleet simulator: an engine
and a registry that behave like the real ones in the ways the planner depends on, in memory and on a
clock the caller moves. Integration tests use the real Docker Engine and registry instead."""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field

from tinyfleet.agent import model
from tinyfleet.agent.errors import ContainerRefused, EngineUnavailable, ImageRefused, ImageVanished, RegistryUnavailable
from tinyfleet.agent.model import ContainerView, Observed, Resolved
from tinyfleet.oci.platform import Platform, choose
from tinyfleet.protocol import AppSpec


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WallClock(FakeClock):
    """A clock that follows time.time(): for the fleet simulator, whose fake containers age in real time."""

    def __init__(self) -> None:
        pass  # no stored time to start from

    @property
    def now(self) -> float:  # type: ignore[override]
        return time.time()

    def advance(self, seconds: float) -> None:
        raise TypeError("a wall clock cannot be moved; use FakeClock in tests that step time")


@dataclass
class FakeImage:
    """How containers of this image behave: 'ok', 'crash' (exits 1 s after start, then restarts),
    'unhealthy' (HEALTHCHECK fails) or 'never_healthy' (HEALTHCHECK stays starting)."""

    platform: Platform
    size: int = 300_000
    behaviour: str = "ok"
    healthcheck: bool = True


@dataclass
class FakeContainer:
    id: str
    name: str
    labels: dict[str, str]
    image: FakeImage
    ports: tuple[int, ...]
    created_at: float
    state: str = "created"
    started_at: float | None = None
    restart_count: int = 0
    exit_code: int | None = None


@dataclass
class FakeRegistry:
    """image string (repo@index digest) -> {platform: (pull_ref, FakeImage)}."""

    images: dict[str, dict[Platform, tuple[str, FakeImage]]] = field(default_factory=dict)
    tampered: set[str] = field(default_factory=set)  # images whose bytes no longer match their digest
    reachable: bool = True

    def publish(self, image: str, entries: dict[str, FakeImage]) -> None:
        repo = image.rsplit("@", 1)[0]
        self.images[image] = {}
        for p, fake in entries.items():
            digest = hashlib.sha256(f"{image} {p}".encode()).hexdigest()
            self.images[image][Platform.parse(p)] = (f"{repo}@sha256:{digest}", fake)

    def select(self, image: str, platform: Platform, budget: int | None) -> Resolved:
        if not self.reachable:
            raise RegistryUnavailable("registry unreachable (fake)")
        if image in self.tampered:
            raise ImageRefused(f"{image}: registry sent content hashing to something else; refusing it")
        if image not in self.images:
            raise ImageRefused(f"{image}: not found in the registry")
        try:
            entry_platform = choose(platform, ((p, p) for p in self.images[image]))
        except Exception as exc:  # PlatformMissing
            raise ImageRefused(str(exc)) from exc
        pull_ref, fake = self.images[image][entry_platform]
        if budget is not None and fake.size > budget:
            raise ImageRefused(f"{image} for {platform} is {fake.size} bytes compressed, over the budget of {budget}")
        return Resolved(image, pull_ref, fake.size, str(entry_platform))

    def image_for(self, pull_ref: str) -> FakeImage:
        for entries in self.images.values():
            for ref, fake in entries.values():
                if ref == pull_ref:
                    return fake
        raise ImageRefused(f"{pull_ref}: manifest unknown")


class FakeEngine:
    def __init__(self, registry: FakeRegistry, clock: FakeClock, disk_free: int | None = 10**10) -> None:
        self.registry = registry
        self.clock = clock
        self.free = disk_free
        self.reachable = True
        self.images: dict[str, FakeImage] = {}
        self.containers: dict[str, FakeContainer] = {}
        self.pulls: list[str] = []
        self._ids = itertools.count(1)

    def _check(self) -> None:
        if not self.reachable:
            raise EngineUnavailable("engine unreachable (fake)")

    # -- the behaviour of time ------------------------------------------------------------------

    def _evolve(self, c: FakeContainer) -> None:
        if c.state == "running" and c.image.behaviour == "crash" and c.started_at is not None:
            elapsed = self.clock.now - c.started_at
            if elapsed >= 1:  # crashes every second; the restart policy brings it back
                c.restart_count += int(elapsed)
                c.exit_code = 1
                c.started_at = self.clock.now

    def _health(self, c: FakeContainer) -> str:
        if not c.image.healthcheck or c.state != "running" or c.started_at is None:
            return "none"
        if self.clock.now - c.started_at < 1:
            return "starting"
        return {"ok": "healthy", "unhealthy": "unhealthy", "never_healthy": "starting",
                "crash": "starting"}[c.image.behaviour]

    # -- Engine ---------------------------------------------------------------------------------

    def observe(self, device_id: str) -> Observed:
        self._check()
        views = []
        for c in self.containers.values():
            if c.labels.get(model.LABEL_OWNER) != model.OWNER or c.labels.get(model.LABEL_DEVICE) != device_id:
                continue
            self._evolve(c)
            views.append(ContainerView(
                id=c.id, name=c.name, app=c.labels[model.LABEL_APP], spec_hash=c.labels[model.LABEL_SPEC_HASH],
                image=c.labels[model.LABEL_IMAGE], pull_ref=c.labels[model.LABEL_PULL_REF],
                generation=int(c.labels[model.LABEL_GENERATION]), created_at=float(c.labels[model.LABEL_CREATED]),
                state=c.state, health=self._health(c), restart_count=c.restart_count, started_at=c.started_at,
                exit_code=c.exit_code, address="127.0.0.1"))  # on loopback: a test serves an app's lock endpoint
        return Observed(tuple(sorted(views, key=lambda v: v.name)), frozenset(self.images))

    def pull(self, pull_ref: str, platform: Platform) -> None:
        self._check()
        fake = self.registry.image_for(pull_ref)
        if fake.platform != platform:
            raise ImageRefused(f"{pull_ref} is {fake.platform}, expected {platform}")
        self.pulls.append(pull_ref)
        self.images[pull_ref] = fake

    def create(self, name: str, spec: AppSpec, pull_ref: str, labels: dict[str, str],
               binds: dict[str, str] | None = None) -> str:
        self._check()
        for c in self.containers.values():
            if c.name == name:
                if c.labels.get(model.LABEL_SPEC_HASH) == labels[model.LABEL_SPEC_HASH]:
                    return c.id  # an earlier create that the caller did not see finish
                raise ContainerRefused(f"container name {name} is taken by another spec")
        if pull_ref not in self.images:
            raise ImageVanished(f"image {pull_ref} vanished before {name} was created; pulling again")
        cid = f"c{next(self._ids):04d}"
        self.containers[cid] = FakeContainer(cid, name, dict(labels), self.images[pull_ref],
                                             tuple(p.host_port for p in spec.ports), self.clock.now)
        return cid

    def start(self, container_id: str) -> None:
        self._check()
        c = self.containers[container_id]
        for other in self.containers.values():
            if other is not c and other.state == "running" and set(other.ports) & set(c.ports):
                raise ContainerRefused(f"port {sorted(set(other.ports) & set(c.ports))[0]} is already allocated")
        c.state, c.started_at, c.exit_code = "running", self.clock.now, None

    def stop(self, container_id: str) -> None:
        self._check()
        c = self.containers[container_id]
        c.state, c.exit_code = "exited", 0

    def restart(self, container_id: str) -> None:
        self._check()
        c = self.containers[container_id]
        c.state, c.started_at = "running", self.clock.now

    def remove(self, container_id: str) -> None:
        self._check()
        self.containers.pop(container_id, None)

    def remove_image(self, pull_ref: str) -> None:
        self._check()
        if any(c.labels.get(model.LABEL_PULL_REF) == pull_ref for c in self.containers.values()):
            return  # in use (perhaps by another agent sharing the engine): keep it
        self.images.pop(pull_ref, None)

    def disk_free(self) -> int | None:
        return self.free

    def ping(self) -> bool:
        return self.reachable
