"""Issue 4 with REAL agents: the controller drives `tinyfleet-agent` processes over the real broker; the
agents pull from the real registry and run their containers on the session dockerd (boards emulated by
--platform linux/arm64, linux/arm/v7, linux/arm/v6; the ARM containers run under qemu). The same
scenarios with emulated devices: test_controller_rollouts.py and test_controller_restart.py."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sandbox.agents import AgentProcess
from sandbox.peer import FleetPeer
from tests.support.cli import tinyfleet
from tests.support.engine import labelled_containers
from tests.support.fleet import ControllerProcess, client_of, push_demo_image, running_controller
from tests.support.wait import eventually
from tinyfleet.controller.client import ApiClient
from tinyfleet.controller.service import Controller
from tinyfleet.controller.signing import Signer
from tinyfleet.protocol import DesiredState, Phase, ReportedState
from tinyfleet.protocol.signing import PublicKey

REPO = "it/fleet-hello"
APP = "hello"
MIXED = ["linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/arm64"]
# A short settle; a deadline generous enough for qemu on a busy shared 2-core machine (it never slows a
# passing test: healthy or unhealthy ends the wait).
HEALTH = {"settle_seconds": 2, "deadline_seconds": 60}
HEALTH_TIMEOUT = 120  # the controller's: an online device that has not converged by then failed
SETTLE_TIMEOUT = 240  # how long a test waits for a rollout to settle
ENGINE_ARCH = {"linux/arm64": ("arm64", None), "linux/arm/v7": ("arm", "v7"), "linux/arm/v6": ("arm", "v6")}

Release = dict[str, Any]


@pytest.fixture(scope="module")
def images(registry, demo_binaries) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"v1": push_demo_image(registry.host, REPO, "1.0", demo_binaries, version="1"),
            "v2": push_demo_image(registry.host, REPO, "2.0", demo_binaries, version="2"),
            # a release that is good on 64-bit boards and fails its health check on 32-bit ones
            "v3": push_demo_image(registry.host, REPO, "3.0", demo_binaries, version="3",
                                  broken_on=("linux/arm/v7", "linux/arm/v6"))}


@pytest.fixture(scope="module")
def peer(mosquitto) -> Iterator[FleetPeer]:  # type: ignore[no-untyped-def]
    """Watches what the agents report, as the agents sent it (the controller's view comes from its API)."""
    p = FleetPeer(mosquitto.url)
    yield p
    p.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return "a" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


class Boards:
    """Real agents named PREFIX-0, PREFIX-1, ... and what their containers look like on the engine."""

    def __init__(self, prefix: str, mosquitto, dockerd, peer: FleetPeer, root: Path) -> None:  # type: ignore[no-untyped-def]
        self.prefix = prefix
        self.mosquitto = mosquitto
        self.dockerd = dockerd
        self.docker = dockerd.client()
        self.peer = peer
        self.root = root
        self.agents: list[AgentProcess] = []

    def start(self, *platforms: str, trusting: str) -> list[AgentProcess]:
        """Agents that run what the controller with public key `trusting` signs."""
        started = []
        for platform in platforms:
            agent = AgentProcess(f"{self.prefix}-{len(self.agents)}", platform, self.mosquitto.url, self.dockerd.url,
                                 self.root, heartbeat_seconds=1.0, settle_seconds=2.0, deadline_seconds=60.0,
                                 controller_key=trusting)
            self.agents.append(agent)
            started.append(agent.start())
        return started

    def containers(self, agent: AgentProcess, *, running_only: bool = False) -> list:  # type: ignore[type-arg]
        labels = [f"io.tinyfleet.device={agent.device_id}", f"io.tinyfleet.app={APP}"]
        return labelled_containers(self.docker, labels, all=not running_only)

    def running_per_device(self) -> Counter[str]:
        """Running containers of the app per device of this test, in one call to the engine."""
        ids = {a.device_id for a in self.agents}
        # The low-level listing: the high-level one inspects each container after listing and fails on
        # one removed in between, which is exactly what a rollout does.
        found = self.docker.api.containers(filters={"label": [f"io.tinyfleet.app={APP}"], "status": "running"})
        return Counter(d for c in found if (d := (c.get("Labels") or {}).get("io.tinyfleet.device")) in ids)

    def assert_runs(self, agent: AgentProcess, release: Release, version: str) -> None:
        """Exactly one container of the app, running the release's image for the board's own platform."""
        containers = self.containers(agent)
        assert len(containers) == 1, f"{agent.device_id}: {[c.name for c in containers]}"
        (c,) = containers
        assert c.status == "running" and c.labels["io.tinyfleet.image"] == release["image"], (agent.device_id, c.labels)
        arch, variant = ENGINE_ARCH[agent.platform]
        assert c.image.attrs["Architecture"] == arch, (agent.device_id, c.image.attrs["Architecture"])
        if variant:
            assert c.image.attrs["Variant"] == variant, (agent.device_id, c.image.attrs.get("Variant"))
        assert f"tinyhello up, version {version}".encode() in c.logs(), f"{agent.device_id} runs version {version}"

    def reports(self, agent: AgentProcess) -> list[ReportedState]:
        with self.peer._cond:
            return list(self.peer.history.get(agent.device_id, ()))

    def first_report(self, agent: AgentProcess, check: Callable[[ReportedState], bool], what: str) -> ReportedState:
        found = next((r for r in self.reports(agent) if check(r)), None)
        assert found is not None and found.ts is not None, f"{agent.device_id}: no report with {what}"
        return found

    def log(self, agent: AgentProcess) -> str:
        return agent.log.read_text(errors="replace") if agent.log.exists() else ""

    def clean(self) -> None:
        for agent in self.agents:
            agent.stop()
        for agent in self.agents:
            for c in self.containers(agent):
                c.remove(force=True)
            self.peer.clear(agent.device_id)


@pytest.fixture
def ctl(tmp_path: Path, mosquitto, store_url: str) -> Iterator[Controller]:  # type: ignore[no-untyped-def]
    """The controller in this process, on each store in turn ([sqlite], [postgresql])."""
    with running_controller(tmp_path / "ctl" / "controller.db", mosquitto.url, database=store_url) as controller:
        yield controller


@pytest.fixture
def boards(prefix, mosquitto, dockerd, peer, sandbox_root, qemu) -> Iterator[Boards]:  # type: ignore[no-untyped-def]
    made = Boards(prefix, mosquitto, dockerd, peer, sandbox_root / "fleet-agents")
    try:
        yield made
    finally:
        made.clean()


# -- helpers -------------------------------------------------------------------------------------------


def online(api: ApiClient, agents: list[AgentProcess], timeout: float = 60) -> None:
    ids = ",".join(a.device_id for a in agents)
    eventually(lambda: [d["online"] for d in api.devices(f"device:{ids}")] == [True] * len(agents),
               timeout=timeout, what="agents online at the controller")


def in_group(api: ApiClient, agents: list[AgentProcess], group: str) -> None:
    online(api, agents)
    for a in agents:
        api.join(a.device_id, group)


def release(api: ApiClient, image: str) -> Release:
    return api.create_release(APP, image, health=HEALTH)


def settled(api: ApiClient, rollout_id: int, timeout: float = SETTLE_TIMEOUT) -> dict[str, Any]:
    return api.wait_rollout(rollout_id, timeout=timeout, interval=0.2)


def by_device(r: dict[str, Any]) -> dict[str, str]:
    return {t["device"]: t["state"] for t in r["targets"]}


def running(image: str) -> Callable[[ReportedState], bool]:
    def check(r: ReportedState) -> bool:
        s = r.app(APP)
        return s is not None and s.phase == Phase.RUNNING and s.current_image == image
    return check


def wants(image: str) -> Callable[[ReportedState], bool]:
    def check(r: ReportedState) -> bool:
        s = r.app(APP)
        return s is not None and s.desired_image == image
    return check


def documents(reports: list[ReportedState]) -> list[tuple[int, str | None]]:
    """(generation, desired image) of each document the agent accepted, in the order it reported them."""
    out: list[tuple[int, str | None]] = []
    for r in reports:
        s = r.app(APP)
        doc = (r.generation, s.desired_image if s else None)
        if r.generation > 0 and (not out or out[-1] != doc):
            out.append(doc)
    return out


def install(api: ApiClient, boards: Boards, agents: list[AgentProcess], group: str, rel: Release,
            version: str) -> None:
    """Every agent of the group on `rel`, all at once."""
    r = api.start_rollout(APP, rel["id"], f"group:{group}", canary=0, batch="100%", health_timeout=HEALTH_TIMEOUT)
    done = settled(api, r["id"])
    assert done["state"] == "completed" and done["counts"]["converged"] == len(agents), done
    for a in agents:
        boards.assert_runs(a, rel, version)


class RunningWatch:
    """Samples the engine until stopped: every device of the test must always have a running container."""

    def __init__(self, boards: Boards) -> None:
        self.boards = boards
        self.gaps: list[dict[str, int]] = []
        self.samples = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="running-watch", daemon=True)

    def __enter__(self) -> RunningWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.error is None, f"the watch stopped sampling: {self.error!r}"

    def _run(self) -> None:
        ids = [a.device_id for a in self.boards.agents]
        while not self._stop.is_set():
            try:
                counts = self.boards.running_per_device()
            except Exception as exc:  # noqa: BLE001 - reported by __exit__: a silent watch would prove nothing
                self.error = exc
                return
            self.samples += 1
            if any(counts[d] == 0 for d in ids):
                self.gaps.append({d: counts[d] for d in ids})
            self._stop.wait(0.2)


# -- scenarios -----------------------------------------------------------------------------------------


def test_a_staged_rollout_moves_real_agents_canary_first_then_batch_by_batch(ctl, boards, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    agents = boards.start(*MIXED, trusting=ctl.public_key)
    in_group(api, agents, prefix)
    v1, v2 = release(api, images["v1"]), release(api, images["v2"])
    install(api, boards, agents, prefix, v1, "1")

    r = api.start_rollout(APP, v2["id"], f"group:{prefix}", canary=1, batch="50%", health_timeout=HEALTH_TIMEOUT)
    done = settled(api, r["id"])
    assert done["state"] == "completed" and done["reason"] == "4 converged, 0 failed", done
    assert done["counts"] == {"pending": 0, "updating": 0, "converged": 4, "failed": 0, "reverting": 0,
                              "reverted": 0, "skipped": 0}
    assert (done["total"], done["failures"], done["batches_started"]) == (4, 0, 3)
    ids = [a.device_id for a in agents]
    batch = {t["device"]: t["batch"] for t in done["targets"]}
    assert batch == {ids[0]: 0, ids[1]: 1, ids[2]: 1, ids[3]: 2}, "canary, then two batches of 50% (2 devices)"
    for t in done["targets"]:
        earlier = [u for u in done["targets"] if u["batch"] == t["batch"] - 1]
        assert all(u["settled_at"] <= t["started_at"] for u in earlier), "a batch started before the last settled"

    # The agents' own reports say the same: nobody else was offered v2 before the canary ran it.
    canary, first_batch, last_batch = agents[0], agents[1:3], agents[3]
    canary_ran = boards.first_report(canary, running(v2["image"]), "v2 running").ts
    for a in agents[1:]:
        offered = boards.first_report(a, wants(v2["image"]), "v2 desired").ts
        assert offered >= canary_ran, f"{a.device_id} was offered v2 before the canary converged"  # type: ignore[operator]
        still_v1 = [x for x in boards.reports(a) if x.ts is not None and x.ts <= canary_ran]  # type: ignore[operator]
        assert still_v1 and running(v1["image"])(still_v1[-1]), f"{a.device_id} ran v1 while the canary converged"
    first_batch_ran = max(boards.first_report(a, running(v2["image"]), "v2 running").ts for a in first_batch)  # type: ignore[type-var]
    assert boards.first_report(last_batch, wants(v2["image"]), "v2 desired").ts >= first_batch_ran  # type: ignore[operator]

    for a in agents:
        boards.assert_runs(a, v2, "2")
    shown = {d["id"]: d["apps"] for d in api.devices(f"group:{prefix}")}
    assert all(apps == [{"name": APP, "release": v2["id"], "phase": "running", "health": "healthy",
                         "current_image": v2["image"], "error": None, "locked": None}]
               for apps in shown.values()), shown

    # A board that joins the group afterwards gets the group's current release.
    (late,) = boards.start("linux/arm/v6", trusting=ctl.public_key)
    online(api, [late])
    assert boards.containers(late) == [] and api.device(late.device_id)["apps"] == [], "not in the group yet"
    api.join(late.device_id, prefix)
    eventually(lambda: any(running(v2["image"])(x) for x in boards.reports(late)), timeout=SETTLE_TIMEOUT,
               what="the late joiner running the group's release")
    boards.assert_runs(late, v2, "2")
    assert api.device(late.device_id)["apps"][0]["release"] == v2["id"]


def test_a_release_failing_on_some_boards_aborts_by_itself_and_every_board_ends_on_the_last_good_one(
        ctl, boards, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    agents = boards.start(*MIXED, trusting=ctl.public_key)
    in_group(api, agents, prefix)
    v2, v3 = release(api, images["v2"]), release(api, images["v3"])
    install(api, boards, agents, prefix, v2, "2")
    ids = [a.device_id for a in agents]

    with RunningWatch(boards) as watch:
        r = api.start_rollout(APP, v3["id"], f"group:{prefix}", canary=1, batch=2, max_failures=1,
                              health_timeout=HEALTH_TIMEOUT)
        done = settled(api, r["id"])
    assert done["state"] == "aborted" and done["reason"] == "2 failed, over the limit of 1", done
    assert by_device(done) == {ids[0]: "reverted", ids[1]: "reverted", ids[2]: "reverted", ids[3]: "skipped"}
    failed = {t["device"]: t["reason"] for t in done["targets"] if t["device"] in ids[1:3]}
    assert all(reason.startswith("failed: rolled_back: new container reported unhealthy")
               for reason in failed.values()), failed
    assert not watch.gaps and watch.samples > 10, f"a board had no running container: {watch.gaps[:3]}"

    canary, broken, untouched = agents[0], agents[1:3], agents[3]
    assert boards.first_report(canary, running(v3["image"]), "v3 running"), "v3 is good on the arm64 canary"
    for a in broken:  # the agent judged v3 itself and kept v2
        rolled = boards.first_report(a, lambda x: (s := x.app(APP)) is not None and s.phase == Phase.ROLLED_BACK,
                                     "rolled_back")
        assert rolled.app(APP).desired_image == v3["image"] and rolled.app(APP).current_image == v2["image"]  # type: ignore[union-attr]
    assert not any(wants(v3["image"])(x) for x in boards.reports(untouched)), "its batch never started"
    for a in agents:  # the controller put every moved board back on v2; the canary re-installed it
        boards.assert_runs(a, v2, "2")
        assert documents(boards.reports(a))[-1][1] == v2["image"]
    assert [d["apps"][0]["release"] for d in api.devices(f"group:{prefix}")] == [v2["id"]] * 4


def test_a_controller_killed_mid_rollout_resumes_and_real_agents_never_see_an_older_generation(
        tmp_path: Path, mosquitto, boards, images, prefix, store_url) -> None:  # type: ignore[no-untyped-def]
    ctl = ControllerProcess(tmp_path / "ctl", mosquitto.url, database=store_url).start()
    try:
        api = ctl.client()
        agents = boards.start("linux/arm64", "linux/arm/v7", "linux/arm/v6", trusting=ctl.public_key)
        in_group(api, agents, prefix)
        v1, v2 = release(api, images["v1"]), release(api, images["v2"])
        install(api, boards, agents, prefix, v1, "1")

        r = api.start_rollout(APP, v2["id"], f"group:{prefix}", canary=1, batch=1, health_timeout=HEALTH_TIMEOUT)
        canary, middle, last = agents
        # Batch 1 is offered v2 only once the canary converged; it takes seconds (health settle) to converge.
        boards.peer.wait(middle.device_id, wants(v2["image"]), timeout=SETTLE_TIMEOUT, what="batch 1 under way")
        ctl.kill()  # SIGKILL: no shutdown path runs
        assert boards.first_report(canary, running(v2["image"]), "v2 running"), "the canary converged before"
        boards.peer.wait(middle.device_id, running(v2["image"]), timeout=SETTLE_TIMEOUT,
                         what="batch 1 converging meanwhile")
        assert not any(wants(v2["image"])(x) for x in boards.reports(last)), "batch 2 waits for a controller"

        ctl.start()
        api = ctl.client()
        done = settled(api, r["id"])
        assert done["state"] == "completed", done
        assert sorted((t["batch"], t["device"], t["state"]) for t in done["targets"]) == [
            (i, a.device_id, "converged") for i, a in enumerate(agents)]
        for a in agents:
            boards.assert_runs(a, v2, "2")
            reports = boards.reports(a)
            assert [x for x in reports if x.error or x.rejected_generation is not None] == [], \
                f"{a.device_id} rejected a desired state"
            assert documents(reports) == [(1, v1["image"]), (2, v2["image"])], "one document per release, in order"
    finally:
        log = ctl.log()
        ctl.stop()
    assert '"level": "error"' not in log, log[-2000:]


# On SQLite only: it waits out a 30-second offline deadline, which is the rollout machine's timer, not the
# store's (the deadline's bookkeeping in the store is covered on both by test_controller_rollouts)
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_an_offline_board_is_pending_until_the_deadline_and_one_back_in_time_converges(
        ctl, boards, images, prefix) -> None:  # type: ignore[no-untyped-def]
    api = client_of(ctl)
    agents = boards.start("linux/arm64", "linux/arm/v7", "linux/arm64", trusting=ctl.public_key)
    in_group(api, agents, prefix)
    v1 = release(api, images["v1"])
    canary, back_soon, gone = agents
    back_soon.stop()  # a clean shutdown: its goodbye marks it offline
    eventually(lambda: not api.device(back_soon.device_id)["online"], timeout=30, what="back_soon offline")
    assert '"level": "warning"' not in boards.log(back_soon), "a clean shutdown is nothing to warn about"

    deadline = 30  # time enough for a restarted agent to come back, even on a busy machine
    r = api.start_rollout(APP, v1["id"], f"group:{prefix}", canary=1, batch=2, max_failures=1,
                          health_timeout=HEALTH_TIMEOUT, offline_deadline=deadline)
    eventually(lambda: any(wants(v1["image"])(x) for x in boards.reports(canary)), timeout=SETTLE_TIMEOUT,
               what="canary under way")
    gone.kill()  # a power cut while the canary updates: its will marks it offline
    eventually(lambda: not api.device(gone.device_id)["online"], timeout=30, what="gone offline")

    mid = eventually(lambda: (x := api.rollout(r["id"]))["counts"]["converged"] == 1 and x, timeout=SETTLE_TIMEOUT,
                     what="the canary converged")
    assert by_device(mid)[back_soon.device_id] == "updating" and by_device(mid)[gone.device_id] == "updating", mid
    assert mid["counts"]["failed"] == 0 and mid["state"] == "running"
    back_soon.start()  # the retained desired state is waiting for it
    later = eventually(lambda: (x := api.rollout(r["id"]))["counts"]["converged"] == 2 and x, timeout=SETTLE_TIMEOUT,
                       what="back_soon converged")
    waiting = next(t for t in later["targets"] if t["device"] == gone.device_id)
    assert waiting["state"] == "updating" or (waiting["state"] == "failed"
                                              and waiting["settled_at"] - waiting["started_at"] >= deadline), waiting
    done = settled(api, r["id"])
    assert done["state"] == "completed", done
    assert by_device(done) == {canary.device_id: "converged", back_soon.device_id: "converged",
                               gone.device_id: "failed"}
    lost = next(t for t in done["targets"] if t["device"] == gone.device_id)
    assert lost["reason"] == f"failed: offline for more than the offline deadline of {deadline}s"
    assert lost["settled_at"] - lost["started_at"] >= deadline, "failed only after the deadline"
    for a in (canary, back_soon):
        boards.assert_runs(a, v1, "1")
    assert boards.containers(gone) == []


def test_boards_follow_a_rotated_signing_key_and_refuse_the_retired_one_which_the_operator_sees(
        tmp_path: Path, mosquitto, boards, images, prefix) -> None:  # type: ignore[no-untyped-def]
    ctl = ControllerProcess(tmp_path / "ctl", mosquitto.url).start()
    try:
        api = ctl.client()
        first_key = ctl.public_key
        agents = boards.start("linux/arm64", "linux/arm/v7", trusting=first_key)  # flashed with the first key
        in_group(api, agents, prefix)
        v1, v2 = release(api, images["v1"]), release(api, images["v2"])
        install(api, boards, agents, prefix, v1, "1")

        stolen = serialization.load_pem_private_key((ctl.root / "signing-key").read_bytes(), password=None)
        ctl.stop()
        rotated = tinyfleet("signing-key", "rotate", "--db", str(ctl.db), "--json")
        assert rotated.returncode == 0, rotated.stderr
        new_key = json.loads(rotated.stdout)["public_key"]
        assert new_key != first_key and ctl.public_key == new_key
        ctl.start()
        api = ctl.client()
        install(api, boards, agents, prefix, v2, "2")  # boards still configured with the first key follow
        for a in agents:
            assert json.loads((a.state_dir / "state.json").read_text())["trusted_key"] == new_key

        retired = Signer(stolen, PublicKey(stolen.public_key().public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)))
        assert str(retired.public) == first_key
        attacker = FleetPeer(mosquitto.url, signer=retired)
        try:
            target = agents[0].device_id
            attacker.publish(DesiredState(target, api.device(target)["reported_generation"] + 10, ()))
            shown = eventually(lambda: "signature refused" in ((d := api.device(target)).get("error") or "") and d,
                               timeout=60, what="the refusal shown on the device")
        finally:
            attacker.close()
        assert f"signed by key {retired.public.key_id}" in shown["error"]
        boards.assert_runs(agents[0], v2, "2")
        show = tinyfleet("device", "show", target, env={"TINYFLEET_URL": ctl.url,
                                                        "TINYFLEET_TOKEN_FILE": str(ctl.token_file)})
        assert "signature refused" in show.stdout, show.stdout + show.stderr
    finally:
        ctl.stop()
