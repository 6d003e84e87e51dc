"""Builders for planner scenarios: short names for specs, containers and memory."""

from __future__ import annotations

from tinyfleet.agent.model import AppMemory, ContainerView, Facts, Failure, Observed, Resolved, UpdateLock
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, Phase, PortMapping

NOW = 1_800_000_000.0
BOARD = Platform.parse("linux/arm/v7")


def image(tag: str, repo: str = "127.0.0.1:5000/acme/web") -> str:
    return f"{repo}@sha256:{tag * (64 // len(tag))}"


def pull_ref(tag: str) -> str:
    return f"127.0.0.1:5000/acme/web@sha256:{('p' + tag) * (64 // (len(tag) + 1))}".replace("p", "f")


def spec(name: str = "web", tag: str = "a", *, ports: bool = False, settle: float = 5, deadline: float = 60,
         max_bytes: int | None = None) -> AppSpec:
    return AppSpec(name=name, image=image(tag), max_bytes=max_bytes,
                   ports=(PortMapping(80, 8080),) if ports else (),
                   health=HealthPolicy(settle_seconds=settle, deadline_seconds=deadline))


def desired(*apps: AppSpec, generation: int = 2, force: tuple[str, ...] = ()) -> DesiredState:
    return DesiredState("pi-1", generation, tuple(apps), force=force)


def container(app: AppSpec, *, state: str = "running", health: str = "healthy", age: float = 600,
              up: float | None = None, restarts: int = 0, exit_code: int | None = None, cid: str | None = None,
              tag: str | None = None) -> ContainerView:
    tag = tag or app.image[-1]
    return ContainerView(id=cid or f"{app.name}-{app.spec_hash()[:6]}", name=f"tf-pi-1-{app.name}",
                         app=app.name, spec_hash=app.spec_hash(), image=app.image, pull_ref=pull_ref(tag),
                         generation=1, created_at=NOW - age,
                         state=state, health=health, restart_count=restarts,
                         started_at=None if state == "created" else NOW - (age if up is None else up),
                         exit_code=exit_code)


def resolved(app: AppSpec, size: int = 300_000) -> Resolved:
    return Resolved(app.image, pull_ref(app.image[-1]), size, str(BOARD))


def failure(app: AppSpec, phase: Phase = Phase.ROLLED_BACK) -> Failure:
    return Failure(app.spec_hash(), app.image, phase, "it broke", NOW - 10)


def facts(memory: dict[str, AppMemory] | None = None, *, pulled: frozenset[str] = frozenset(),
          disk_free: int | None = 10**10, budget: int | None = None,
          locks: dict[str, UpdateLock] | None = None) -> Facts:
    return Facts(device_id="pi-1", platform=BOARD, now=NOW, default_budget=budget, disk_free=disk_free,
                 min_free_bytes=64 * 2**20, memory=memory or {}, pulled=pulled, locks=locks or {})


def lock(holder: str = "print-job-42", *, age: float = 60, expires_in: float = 3600) -> UpdateLock:
    return UpdateLock(holder, NOW - age, NOW + expires_in)


def observed(*containers: ContainerView, images: tuple[str, ...] = ()) -> Observed:
    return Observed(tuple(containers), frozenset(images))
