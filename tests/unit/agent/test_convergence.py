"""The planner and executor together against the shipped FakeEngine: apply plans until nothing is
left to do, and check the board ends where it should - with the old version serving throughout."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tinyfleet.agent.errors import Transient
from tinyfleet.agent.reconciler import Outcome, Reconciler, Settings
from tinyfleet.agent.state import StateStore
from tinyfleet.agent.testing import FakeClock, FakeEngine, FakeImage, FakeRegistry
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, Phase, PortMapping

V7 = Platform.parse("linux/arm/v7")


def img(tag: str) -> str:
    return f"127.0.0.1:5000/acme/{tag[0]}@sha256:{tag[-1] * 64}"


class Board:
    def __init__(self, tmp_path: Path, platform: Platform = V7, budget: int | None = None) -> None:
        self.clock = FakeClock()
        self.registry = FakeRegistry()
        self.engine = FakeEngine(self.registry, self.clock)
        self.store = StateStore(tmp_path / "state")
        self.platform = platform
        self.budget = budget
        self.running_counts: list[int] = []
        self.reconciler = self.new_reconciler()

    def new_reconciler(self) -> Reconciler:
        return Reconciler(self.engine, self.registry, self.store, "pi-1", self.platform,
                          Settings(default_budget=self.budget), self.clock)

    def publish(self, tag: str, behaviour: str = "ok", platforms: tuple[str, ...] = ("linux/arm/v7", "linux/arm64"),
                size: int = 300_000) -> str:
        self.registry.publish(img(tag), {p: FakeImage(Platform.parse(p), size, behaviour) for p in platforms})
        return img(tag)

    def want(self, generation: int, *apps: AppSpec) -> None:
        from dataclasses import replace
        self.store.update(lambda st: replace(st, accepted_generation=generation,
                                             desired=DesiredState("pi-1", generation, apps)))

    def converge(self, max_rounds: int = 300) -> Outcome:
        for _ in range(max_rounds):
            outcome = self.reconciler.reconcile()
            self.running_counts.append(self.running("web"))
            assert outcome.transient is None, outcome.transient
            if outcome.wake_at is None:
                return outcome
            self.clock.now = max(self.clock.now + 0.5, outcome.wake_at)
        raise AssertionError("did not converge")

    def running(self, app: str) -> int:
        return sum(1 for c in self.engine.containers.values()
                   if c.labels["io.tinyfleet.app"] == app and c.state == "running")

    def status(self, app: str = "web"):  # type: ignore[no-untyped-def]
        return self.reconciler.report(self.store.current).app(app)


def app(tag: str, name: str = "web", **kw) -> AppSpec:  # type: ignore[no-untyped-def]
    return AppSpec(name=name, image=img(tag), health=HealthPolicy(settle_seconds=2, deadline_seconds=20), **kw)


def test_two_apps_converge_from_nothing(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1"), board.publish("d1")
    board.want(1, app("w1"), app("d1", name="db"))
    board.converge()
    assert {s.name: s.phase for s in board.reconciler.report(board.store.current).apps} == {
        "web": Phase.RUNNING, "db": Phase.RUNNING}
    assert len(board.engine.containers) == 2
    assert sorted(board.engine.pulls) == sorted(board.registry.images[img(t)][V7][0] for t in ("w1", "d1"))


def test_update_hands_over_without_a_gap(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1"), board.publish("w2")
    board.want(1, app("w1"))
    board.converge()
    board.running_counts.clear()
    board.want(2, app("w2"))
    board.converge()
    assert board.status().phase == Phase.RUNNING and board.status().current_image == img("w2")
    assert min(board.running_counts) >= 1, "some moment had no running container"
    assert len(board.engine.containers) == 1
    assert board.engine.images.keys() == {board.registry.images[img("w2")][V7][0]}, "the old image is pruned"


def test_the_engine_is_looked_at_again_only_after_steps_that_changed_it(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.registry.publish(img("w1"), {"linux/arm/v7": FakeImage(V7, healthcheck=False)})  # nothing to wait for
    looks = []
    observe = board.engine.observe

    def counted(device_id: str):  # type: ignore[no-untyped-def]
        looks.append(len(board.engine.pulls) + len(board.engine.containers))
        return observe(device_id)

    board.engine.observe = counted  # type: ignore[method-assign]
    board.want(1, AppSpec(name="web", image=img("w1"), health=HealthPolicy(settle_seconds=0, deadline_seconds=20)))
    board.converge()
    assert board.status().phase == Phase.RUNNING
    # verify (remembered, no look) -> pull -> create -> start -> promote (remembered, no look) -> idle
    assert len(looks) == 4, looks


@pytest.mark.parametrize("behaviour", ["crash", "unhealthy", "never_healthy"])
def test_a_bad_new_version_is_rolled_back_and_not_retried(tmp_path: Path, behaviour: str) -> None:
    board = Board(tmp_path)
    board.publish("w1"), board.publish("w2", behaviour=behaviour)
    board.want(1, app("w1"))
    board.converge()
    board.running_counts.clear()
    board.want(2, app("w2"))
    board.converge()
    status = board.status()
    assert status.phase == Phase.ROLLED_BACK and status.current_image == img("w1") and status.error
    assert min(board.running_counts) >= 1
    pulls = len(board.engine.pulls)
    board.clock.advance(3600)
    board.converge()
    assert len(board.engine.pulls) == pulls and board.status().phase == Phase.ROLLED_BACK


def test_host_ports_update_by_stop_then_start_and_roll_back(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1"), board.publish("w2", behaviour="unhealthy")
    ports = (PortMapping(80, 8080),)
    board.want(1, app("w1", ports=ports))
    board.converge()
    board.want(2, app("w2", ports=ports))
    board.converge()
    assert board.status().phase == Phase.ROLLED_BACK
    assert board.running("web") == 1 and board.status().current_image == img("w1")


@pytest.mark.parametrize(("setup", "fragment"), [
    (lambda b: b.registry.tampered.add(img("w2")), "hashing to something else"),
    (lambda b: b.publish("w2", size=10**9), "over the budget"),
    (lambda b: b.publish("w2", platforms=("linux/arm64",)), "no image for linux/arm/v7"),
])
def test_refusals_happen_before_any_layer_is_pulled(tmp_path: Path, setup, fragment: str) -> None:  # type: ignore[no-untyped-def]
    board = Board(tmp_path, budget=10**6)
    board.publish("w1"), board.publish("w2")
    board.want(1, app("w1"))
    board.converge()
    pulls = list(board.engine.pulls)
    setup(board)
    board.want(2, app("w2"))
    board.converge()
    assert board.engine.pulls == pulls
    status = board.status()
    assert status.phase == Phase.FAILED and fragment in status.error and status.current_image == img("w1")


def test_v6_board_refuses_a_v7_only_index(tmp_path: Path) -> None:
    board = Board(tmp_path, platform=Platform.parse("linux/arm/v6"))
    board.publish("w1", platforms=("linux/arm/v7",))
    board.want(1, app("w1"))
    board.converge()
    assert board.status().phase == Phase.FAILED and "no image for linux/arm/v6" in board.status().error
    assert board.engine.pulls == []


def test_transient_registry_outage_keeps_the_app_running_and_recovers(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1"), board.publish("w2")
    board.want(1, app("w1"))
    board.converge()
    board.registry.reachable = False
    board.want(2, app("w2"))
    outcome = board.reconciler.reconcile()
    assert outcome.transient and "unreachable" in outcome.transient
    status = board.status()
    assert status.phase == Phase.VERIFYING and "retrying" in status.error and board.running("web") == 1
    board.registry.reachable = True
    board.converge()
    assert board.status().phase == Phase.RUNNING and board.status().current_image == img("w2")


def test_engine_outage_is_transient_and_reported_as_pending(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1")
    board.want(1, app("w1"))
    board.engine.reachable = False
    outcome = board.reconciler.reconcile()
    assert outcome.plan is None and outcome.transient
    assert board.status().phase == Phase.PENDING and "retrying" in board.status().error


class Crash(BaseException):
    """Stands in for kill -9: escapes every handler, like the process vanishing."""


@pytest.mark.parametrize("crash_after", range(7))  # an update is 7 steps
def test_agent_killed_mid_update_converges_without_duplicates(tmp_path: Path, crash_after: int) -> None:
    board = Board(tmp_path)
    board.publish("w1"), board.publish("w2")
    board.want(1, app("w1"))
    board.converge()
    board.want(2, app("w2"))
    executed = 0
    real_run = board.reconciler.executor.run

    def dying_run(step):  # type: ignore[no-untyped-def]
        nonlocal executed
        executed += 1
        if executed > crash_after:
            raise Crash
        real_run(step)

    board.reconciler.executor.run = dying_run  # type: ignore[method-assign]
    with pytest.raises(Crash):
        for _ in range(50):
            out = board.reconciler.reconcile()
            board.clock.now = max(board.clock.now + 0.5, out.wake_at or 0)
    board.store = StateStore(tmp_path / "state")  # a new process reads the state file again
    board.reconciler = board.new_reconciler()
    board.converge()
    assert board.status().phase == Phase.RUNNING and board.status().current_image == img("w2")
    assert len(board.engine.containers) == 1


def test_random_desired_sequences_always_converge(tmp_path: Path) -> None:
    rng = random.Random(7)
    board = Board(tmp_path)
    tags = ["w1", "w2", "w3", "w4"]
    behaviours = {"w1": "ok", "w2": "crash", "w3": "ok", "w4": "unhealthy"}
    for t in tags:
        board.publish(t, behaviour=behaviours[t])
    for generation in range(1, 25):
        chosen = rng.sample(tags, k=rng.randint(0, 2))
        apps = [app(t, name=f"a{i}") for i, t in enumerate(chosen)]
        board.want(generation, *apps)
        board.converge()
        report = board.reconciler.report(board.store.current)
        assert {s.name for s in report.apps} == {a.name for a in apps}
        for s, t in zip(report.apps, chosen, strict=True):
            expected = Phase.RUNNING if behaviours[t] == "ok" else (Phase.FAILED, Phase.ROLLED_BACK)
            assert s.phase == expected or s.phase in expected  # type: ignore[operator]
        names = [c.name for c in board.engine.containers.values()]
        assert len(names) == len(set(names))
        assert {c.labels["io.tinyfleet.app"] for c in board.engine.containers.values()} <= {a.name for a in apps}


def test_transient_errors_are_typed_as_such() -> None:
    from tinyfleet.agent.errors import EngineUnavailable, RegistryUnavailable
    assert issubclass(EngineUnavailable, Transient) and issubclass(RegistryUnavailable, Transient)


def test_an_image_pruned_by_another_agent_before_create_is_pulled_again(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1")
    board.want(1, app("w1"))
    real_create = board.engine.create
    lost: list[str] = []

    def create_after_a_neighbour_pruned(name, spec, pull_ref, labels, binds=None):  # type: ignore[no-untyped-def]
        if not lost:
            lost.append(pull_ref)
            del board.engine.images[pull_ref]  # a neighbour on the shared engine pruned it just now
        return real_create(name, spec, pull_ref, labels, binds)

    board.engine.create = create_after_a_neighbour_pruned  # type: ignore[method-assign]
    outcome = board.reconciler.reconcile()
    assert outcome.transient and "vanished" in outcome.transient
    board.converge()
    assert board.status().phase == Phase.RUNNING and len(board.engine.pulls) == 2


def test_a_refused_restart_of_a_running_app_is_retried_not_failed(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("w1")
    board.want(1, app("w1"))
    board.converge()
    (container,) = board.engine.containers.values()
    container.state, container.exit_code = "exited", 0  # the engine is shutting down ...
    real_start = board.engine.start

    def refusing_start(container_id: str) -> None:  # ... and refuses to start anything for now
        from tinyfleet.agent.errors import ContainerRefused
        raise ContainerRefused("failed to update store for object type *libnetwork.endpoint")

    board.engine.start = refusing_start  # type: ignore[method-assign]
    outcome = board.reconciler.reconcile()
    assert outcome.transient and "libnetwork" in outcome.transient
    assert board.store.current.app("web").failure is None
    board.engine.start = real_start  # type: ignore[method-assign]
    board.converge()
    assert board.status().phase == Phase.RUNNING and board.running("web") == 1


def test_a_slow_registry_for_one_app_does_not_fail_another_apps_healthy_candidate(tmp_path: Path) -> None:
    board = Board(tmp_path)
    board.publish("a1"), board.publish("a2"), board.publish("b1")
    policy = HealthPolicy(settle_seconds=0, deadline_seconds=5)
    board.want(1, AppSpec(name="a", image=img("a1"), health=policy))
    board.converge()
    board.want(2, AppSpec(name="a", image=img("a2"), health=policy))
    board.reconciler.reconcile()  # a2's candidate started; its HEALTHCHECK still says starting
    select = board.registry.select

    def slow_for_b(image: str, platform: Platform, budget: int | None):  # type: ignore[no-untyped-def]
        if image == img("b1"):
            board.clock.advance(10)  # a's deadline passes while b is verified; a turns healthy meanwhile
        return select(image, platform, budget)

    board.registry.select = slow_for_b  # type: ignore[method-assign]
    board.want(3, AppSpec(name="a", image=img("a2"), health=policy), AppSpec(name="b", image=img("b1")))
    board.converge()
    assert board.status("a").phase == Phase.RUNNING and board.status("a").current_image == img("a2")
    assert board.store.current.memory["a"].failure is None
