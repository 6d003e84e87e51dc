"""`bench faults`: the fault suite against the real services. Each case breaks one thing on purpose and
prints what was expected and what was seen, with its figures; tests/integration/test_faults.py runs the
same cases and asserts them.

  state-write-kill   kill -9 of the agent's state store in the middle of its writes, N cycles: the state
                     file is always the old document or the new one, never a mix, never unreadable.
  dockerd-restart    the Docker Engine restarted under a running agent: the app comes back, the agent
                     re-adopts it (same container), no duplicate container.
  mosquitto-restart  the broker restarted (persistence on) while boards update: every report an agent
                     handed to its MQTT client is stored by the real controller process (its persistent
                     QoS 1 session; counted by a trigger in its database), none lost.
  controller-kill    the controller killed (-9) in the middle of a batch and started again: the rollout
                     resumes and completes, every board takes one desired document and makes one v2
                     container for the release - none updated twice.
  disk-full          the engine's disk (a small tmpfs) filled up before an update: a clear refusal before
                     any layer is pulled, the old version keeps running, nothing left behind; the space
                     of an image replaced earlier was reclaimed by the agent's pruning.
  disk-full-mid-pull the disk fills up while an update is pulled (it fitted when the pull began): a
                     terminal "no space left on device", the old version keeps running, the partial
                     download's space is given back.
  registry-outage    the registry down and then stalled (a proxy that accepts and never answers) while an
                     update is due: the agent backs off with jitter, the update waits (reported, not
                     failed), nothing half-applied (the old version alone keeps running); then it lands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from bench.faultproxy import FaultProxy
from bench.images import publish
from sandbox.agents import AgentProcess
from sandbox.controller import ControllerProcess  # the controller as an operator runs it, to kill -9
from sandbox.dockerd import Dockerd
from sandbox.mosquitto import Mosquitto
from sandbox.peer import FleetPeer
from tinyfleet.agent.state import StateStore
from tinyfleet.protocol import AppSpec, DesiredState, HealthPolicy, Phase, ReportedState

HEALTH = HealthPolicy(settle_seconds=1, deadline_seconds=60)


@dataclass
class Case:
    name: str
    expected: str
    seen: str = ""
    ok: bool = False
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        figures = ", ".join(f"{k} {v}" for k, v in self.figures.items())
        return (f"{self.name}: {'PASS' if self.ok else 'FAIL'} in {self.seconds:.1f} s\n"
                f"  expected: {self.expected}\n  seen:     {self.seen}\n  figures:  {figures}")


def timed(run: Callable[..., Case]) -> Callable[..., Case]:
    def wrapper(*args: Any, **kwargs: Any) -> Case:
        started = time.monotonic()
        case = run(*args, **kwargs)
        case.seconds = time.monotonic() - started
        return case
    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper


# -- kill -9 during the state write -------------------------------------------------------------------

# The agent's own StateStore, writing one large state after another (a board with many pulled images),
# saying before and after each write which generation it writes.
_WRITER = """
import sys
from dataclasses import replace
from pathlib import Path
from tinyfleet.agent.state import StateStore
store = StateStore(Path(sys.argv[1]))
pad = frozenset(f"127.0.0.1:5000/pad/{i:06d}@sha256:" + "0" * 64 for i in range(int(sys.argv[2])))
g = store.current.accepted_generation
while True:
    g += 1
    print("w", g, flush=True)
    store.update(lambda st: replace(st, accepted_generation=g, pulled=pad))
    print("d", g, flush=True)
"""


@timed
def state_write_kill(root: Path, cycles: int = 50, pad: int = 4000, seed: int = 15) -> Case:
    case = Case("state-write-kill", f"after each of {cycles} kill -9 cycles the state file holds the last "
                                    "generation written whole or the one being written, and loads")
    rng = random.Random(seed)
    state_dir = root / "state"
    outcomes = {"old": 0, "new": 0, "no write in flight": 0}
    bad: list[str] = []
    temp_left = 0
    for cycle in range(cycles):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(state_dir), str(pad)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        first = "d -1"
        for first in child.stdout:  # until its first write is whole: the kill lands among the next ones
            if first.startswith("d"):
                break
        time.sleep(rng.uniform(0, 0.05))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        # only the writer's own "w N" / "d N" lines: a log line the kill cut in half may be there too
        lines = [line.split() for line in rest.splitlines() if re.fullmatch(r"[wd] -?\d+", line.strip())]
        done = max([int(g) for k, g in lines if k == "d"] or [int(first.split()[1])])
        begun = max([int(g) for k, g in lines if k == "w"] or [done])
        temp_left += (state_dir / ".state.json.tmp").exists()
        loaded = StateStore(state_dir).current.accepted_generation
        aside = list(state_dir.glob("state.json.unreadable-*"))
        if aside:
            bad.append(f"cycle {cycle}: state file unreadable")
            break
        if begun > done:
            kind = "old" if loaded == done else "new" if loaded == begun else None
        else:
            kind = "no write in flight" if loaded == done else None
        if kind is None:
            bad.append(f"cycle {cycle}: loaded generation {loaded}, expected {done} or {begun}")
        else:
            outcomes[kind] += 1
    size = (state_dir / "state.json").stat().st_size
    case.ok = not bad
    case.seen = "; ".join(bad) if bad else (f"{cycles} kills: old document {outcomes['old']}, new document "
                                            f"{outcomes['new']}, between writes {outcomes['no write in flight']}; "
                                            "never a mix, never unreadable")
    case.figures = {"cycles": cycles, "killed mid-write": outcomes["old"] + outcomes["new"],
                    "state file": f"{size / 1024:.0f} KiB", "temp file left by the kill": temp_left,
                    "corrupt": len(bad)}
    return case


# -- an agent with one app on an engine --------------------------------------------------------------

@dataclass
class Rig:
    agent: AgentProcess
    peer: FleetPeer
    client: docker.DockerClient
    generation: int = 0

    def want(self, *apps: AppSpec) -> None:
        self.generation += 1
        self.peer.publish(DesiredState(self.agent.device_id, self.generation, apps))

    def wait(self, check: Callable[[ReportedState], bool], what: str, timeout: float = 60) -> ReportedState:
        generation = self.generation
        return self.peer.wait(self.agent.device_id, lambda r: r.generation >= generation and check(r), timeout, what)

    def running(self, image: str, timeout: float = 60) -> ReportedState:
        def ok(r: ReportedState) -> bool:
            s = r.app("hello")
            return s is not None and s.phase == Phase.RUNNING and s.current_image == image
        return self.wait(ok, f"hello running {image}", timeout)

    def containers(self) -> list[Any]:
        return self.client.containers.list(all=True, filters={"label": f"io.tinyfleet.device={self.agent.device_id}"})

    def close(self) -> None:
        self.agent.stop()
        for c in self.containers():
            c.remove(force=True)
        self.peer.clear(self.agent.device_id)
        self.peer.close()


def rig(name: str, broker_url: str, docker_host: str, root: Path) -> Rig:
    peer = FleetPeer(broker_url)
    agent = AgentProcess(f"fault-{name}-{random.randrange(16**6):06x}", "linux/amd64", broker_url, docker_host,
                         root / "agents", heartbeat_seconds=1, settle_seconds=1, deadline_seconds=60,
                         controller_key=str(peer.signer.public)).start()
    return Rig(agent, peer, docker.DockerClient(base_url=docker_host, timeout=30))


# -- dockerd restarted under a running agent -----------------------------------------------------------

@timed
def dockerd_restart(root: Path, broker_url: str, registry_host: str) -> Case:
    case = Case("dockerd-restart", "the app runs again in the same container after the engine restarts, the "
                                   "agent (still the same process) reports it running, no duplicate container")
    engine = Dockerd(root / "d").start()
    image, _ = publish(registry_host, root, "faults/dockerd", "1")
    r = rig("dockerd", broker_url, engine.url, root)
    try:
        r.want(AppSpec("hello", image, health=HEALTH))
        r.running(image)
        (before,) = r.containers()
        agent_pid = r.agent.proc.proc.pid  # type: ignore[union-attr]
        down_at = time.monotonic()
        engine.stop()
        time.sleep(2)  # the agent meets a dead engine at least once
        engine.start()
        back_at = time.monotonic()
        r.client = docker.DockerClient(base_url=engine.url, timeout=30)

        def adopted(rep: ReportedState) -> bool:
            s = rep.app("hello")
            return (s is not None and s.phase == Phase.RUNNING and bool(rep.ts) and rep.ts > time.time() - 2
                    and [c.status for c in r.containers()] == ["running"])
        r.wait(adopted, "hello running again after the engine restart")
        running_at = time.monotonic()
        time.sleep(3)  # a few more passes: nothing more is created
        after = r.containers()
        same_agent = r.agent.alive() and r.agent.proc.proc.pid == agent_pid  # type: ignore[union-attr]
        case.ok = len(after) == 1 and after[0].id == before.id and after[0].status == "running" and same_agent
        same = "the same" if after and after[0].id == before.id else "not the same"
        state = after[0].status if after else "none"
        case.seen = (f"{len(after)} container(s) after the restart, {same} one, {state}; "
                     f"agent {'still the same process' if same_agent else 'restarted'}")
        case.figures = {"engine down": f"{back_at - down_at:.1f} s",
                        "engine back -> app running and reported": f"{running_at - back_at:.1f} s",
                        "containers before/after": f"1/{len(after)}",
                        "container restarts": after[0].attrs["RestartCount"] if after else None}
    finally:
        r.close()
        engine.stop()
    return case


# -- registry down, then stalled, while an update is due -----------------------------------------------

@timed
def registry_outage(root: Path, broker_url: str, registry_host: str, docker_host: str, down_s: float = 12.0,
                    stall_s: float = 6.0) -> Case:
    case = Case("registry-outage", "while the registry is down and then stalled the agent retries with "
                                   "growing, jittered gaps, reports the update as waiting (not failed) and the "
                                   "old version alone keeps running; once it is back the update lands")
    proxy = FaultProxy.in_front_of(registry_host)
    v1, _ = publish(proxy.host, root, "faults/registry", "1")
    v2, _ = publish(proxy.host, root, "faults/registry", "2")
    r = rig("registry", broker_url, docker_host, root)
    problems: list[str] = []
    try:
        r.want(AppSpec("hello", v1, health=HEALTH))
        r.running(v1)
        (old,) = r.containers()
        reports: list[ReportedState] = []
        proxy.set("down")
        outage_at = time.monotonic()
        r.want(AppSpec("hello", v2, health=HEALTH))
        for mode, phase_s in (("down", down_s), ("stall", stall_s)):
            proxy.set(mode)
            until = time.monotonic() + phase_s
            while time.monotonic() < until:
                cs = r.containers()
                if [c.id for c in cs] != [old.id] or cs[0].status != "running":
                    problems.append(f"{mode}: containers {[(c.name, c.status) for c in cs]}")
                    break
                rep = r.peer.reported.get(r.agent.device_id)
                if rep is not None:
                    reports.append(rep)
                time.sleep(0.5)
        status = reports[-1].app("hello") if reports else None
        if status is None or status.phase in (Phase.FAILED, Phase.ROLLED_BACK) \
                or "retrying" not in (status.error or ""):
            problems.append(f"reported {status}")
        proxy.set("up")
        up_at = time.monotonic()
        r.running(v2, timeout=90)
        landed_at = time.monotonic()
        down = proxy.attempts_in("down")
        gaps = [b - a for a, b in zip(down, down[1:], strict=False)]
        # The agent's own backoff (1, 2, 4 s ... plus up to 1 s of jitter) over the registry client's quick
        # retries (0.2 s ... with jitter): the longest gaps are the agent's.
        long_gaps = sorted(g for g in gaps if g > 0.9)
        floors = [2.0 ** i for i in range(len(long_gaps))]  # 1, 2, 4 s ...: each gap at least its step
        if len(long_gaps) < 2 or any(g < 0.95 * f for g, f in zip(long_gaps, floors, strict=True)) \
                or all(abs(g - round(g)) < 0.05 for g in long_gaps):
            problems.append(f"no growing, jittered backoff in the gaps between attempts: {[round(g, 2) for g in gaps]}")
        case.ok = not problems
        case.seen = "; ".join(problems) if problems else (
            f"{len(down)} connection attempts while down, gaps growing {fmt(long_gaps)} s; "
            f"{len(proxy.attempts_in('stall'))} held while stalled; reported '{status.phase.value}' with "  # type: ignore[union-attr]
            f"'{(status.error or '')[:60]}...'; only the old container ran; v2 running {landed_at - up_at:.1f} s "
            "after the registry came back")
        case.figures = {"outage": f"{up_at - outage_at:.1f} s ({down_s:g} s down, {stall_s:g} s stalled)",
                        "attempts while down": len(down), "backoff gaps": fmt(long_gaps),
                        "gap spread (jitter)": f"{statistics.pstdev(gaps):.2f} s" if len(gaps) > 1 else "-",
                        "registry back -> v2 running": f"{landed_at - up_at:.1f} s",
                        "containers during the outage": 1}
    finally:
        r.close()
        proxy.close()
    return case


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values) + "]"


# -- Mosquitto restarted while boards update ----------------------------------------------------------

class IngestAudit:
    """Every report the real controller process stores, as it stores it: a trigger in its own SQLite
    database (added after the controller made its schema; the controller's code is untouched) copies each
    write of a device's reported document into an audit table."""

    def __init__(self, db: Path) -> None:
        self.db = db
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn, conn:
            conn.executescript("""
                CREATE TABLE IF NOT EXISTS fault_audit (device_id TEXT NOT NULL, reported_json TEXT NOT NULL);
                CREATE TRIGGER IF NOT EXISTS fault_audit_insert AFTER INSERT ON devices
                    WHEN NEW.reported_json IS NOT NULL
                    BEGIN INSERT INTO fault_audit VALUES (NEW.id, NEW.reported_json); END;
                CREATE TRIGGER IF NOT EXISTS fault_audit_update AFTER UPDATE OF reported_json ON devices
                    WHEN NEW.reported_json IS NOT NULL
                    BEGIN INSERT INTO fault_audit VALUES (NEW.id, NEW.reported_json); END;""")

    def stored(self) -> dict[str, list[tuple[Any, ...]]]:
        """Per device, the reports the controller wrote, in order (duplicates and retained re-sends too)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            for device_id, raw in conn.execute("SELECT device_id, reported_json FROM fault_audit ORDER BY rowid"):
                doc = json.loads(raw)
                out.setdefault(device_id, []).append(
                    _key(doc["generation"], {a["name"]: a["phase"] for a in doc["apps"]}, doc.get("error")))
        return out


def _key(generation: int, apps: dict[str, str], error: str | None) -> tuple[Any, ...]:
    return generation, tuple(sorted(apps.items())), error


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The agent's JSON log lines for one event."""
    out = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                out.append(entry)
    return out


def logged_reports(log: Path) -> list[tuple[Any, ...]]:
    """What the agent handed to its MQTT client: its 'reported' log lines."""
    return [_key(e["generation"], e["apps"], e.get("error")) for e in log_events(log, "reported")]


@timed
def mosquitto_restart(root: Path, registry_host: str, docker_host: str, boards: int = 3,
                      down_s: float = 2.0) -> Case:
    case = Case("mosquitto-restart", f"{boards} boards updating while the broker restarts (persistence on): 0 "
                                     "reports lost between the agents and the real controller's store")
    broker = Mosquitto(root / "mqtt").start()
    v1, _ = publish(registry_host, root, "faults/mqtt", "1")
    v2, _ = publish(registry_host, root, "faults/mqtt", "2")
    ctl = ControllerProcess(root / "ctl", broker.url).start()  # ingests the reports; the peer signs desired states
    audit = IngestAudit(ctl.db)
    rigs = [rig(f"mqtt{i}", broker.url, docker_host, root) for i in range(boards)]
    try:
        for r in rigs:
            r.want(AppSpec("hello", v1, health=HEALTH))
        for r in rigs:
            r.running(v1)
        for r in rigs:
            r.want(AppSpec("hello", v2, health=HEALTH))
        time.sleep(0.3)  # the updates under way
        restart_at = time.monotonic()
        broker.stop()
        time.sleep(down_s)
        broker.start()
        back_at = time.monotonic()
        for r in rigs:
            r.running(v2, timeout=90)
        settled_at = time.monotonic()
        for r in rigs:
            r.agent.stop()
        sent = {r.agent.device_id: logged_reports(r.agent.log) for r in rigs}

        def last_ones_stored() -> bool:
            stored = audit.stored()
            return all(mine and mine[-1] in stored.get(d, []) for d, mine in sent.items())
        with contextlib.suppress(AssertionError):
            _until(last_ones_stored, 30, "every agent's last report stored")
        stored = audit.stored()
        lost = [(d, k) for d, mine in sent.items() for k in mine if k not in set(stored.get(d, []))]
        total, writes = sum(map(len, sent.values())), sum(len(stored.get(d, [])) for d in sent)
        case.ok = not lost and total > 0
        case.seen = (f"{total} reports handed to MQTT by {boards} agents, {total - len(lost)} of them stored by the "
                     f"controller ({writes} store writes with QoS 1 duplicates and retained re-sends); "
                     f"lost: {lost or 0}")
        case.figures = {"reports sent": total, "stored by the controller": total - len(lost), "lost": len(lost),
                        "broker down": f"{back_at - restart_at:.1f} s",
                        "broker back -> every board on v2 and reported": f"{settled_at - back_at:.1f} s"}
    finally:
        for r in rigs:
            r.close()
        ctl.stop()
        broker.stop()
    return case


# -- the controller killed mid-batch -------------------------------------------------------------------

def accepted_generations(log: Path) -> list[int]:
    return [int(e["generation"]) for e in log_events(log, "desired state accepted")]


@timed
def controller_kill(root: Path, broker_url: str, registry_host: str, docker_host: str, boards: int = 3) -> Case:
    case = Case("controller-kill", "the rollout resumes after the controller is killed mid-batch and completes; "
                                   "each board accepts one desired document and creates one container for v2")
    v1, _ = publish(registry_host, root, "faults/ctl", "1")
    v2, _ = publish(registry_host, root, "faults/ctl", "2")
    ctl = ControllerProcess(root / "ctl", broker_url).start()
    client = docker.DockerClient(base_url=docker_host, timeout=30)
    agents = [AgentProcess(f"fault-ctl{i}-{random.randrange(16**6):06x}", "linux/amd64", broker_url, docker_host,
                           root / "agents", heartbeat_seconds=1, settle_seconds=1, deadline_seconds=60,
                           controller_key=ctl.public_key).start() for i in range(boards)]
    group = f"faults-{random.randrange(16**6):06x}"
    health = {"settle_seconds": 1, "deadline_seconds": 60}
    try:
        api = ctl.client()
        ids = {a.device_id for a in agents}
        _until(lambda: sum(d["online"] for d in api.devices() if d["id"] in ids) == boards, 60, "boards online")
        for a in agents:
            api.join(a.device_id, group)
        r1, r2 = (api.create_release("hello", ref, health=health) for ref in (v1, v2))
        first = api.start_rollout("hello", r1["id"], f"group:{group}", canary=0, batch="100%", health_timeout=120)
        assert api.wait_rollout(first["id"], timeout=120, interval=0.2)["state"] == "completed"
        since = int(time.time())
        before = {a.device_id: len(accepted_generations(a.log)) for a in agents}
        rollout = api.start_rollout("hello", r2["id"], f"group:{group}", canary=1, batch=1, health_timeout=120)

        def batch_one_under_way() -> bool:
            targets = api.rollout(rollout["id"])["targets"]
            return any(t["batch"] == 1 and t["state"] == "updating" for t in targets)
        _until(batch_one_under_way, 120, "batch 1 under way")
        killed_at = time.monotonic()
        ctl.kill()
        time.sleep(2)
        ctl.start()
        restarted_at = time.monotonic()
        api = ctl.client()
        done = api.wait_rollout(rollout["id"], timeout=180, interval=0.2)
        completed_at = time.monotonic()
        creates: dict[str, int] = {}
        for event in client.events(since=since, until=int(time.time()) + 1, decode=True,
                                   filters={"type": "container", "event": "create"}):
            labels = event.get("Actor", {}).get("Attributes", {})
            if labels.get("io.tinyfleet.device") in ids and labels.get("io.tinyfleet.image") == v2:
                creates[labels["io.tinyfleet.device"]] = creates.get(labels["io.tinyfleet.device"], 0) + 1
        accepted = {a.device_id: len(accepted_generations(a.log)) - before[a.device_id] for a in agents}
        states = sorted(t["state"] for t in done["targets"])
        case.ok = (done["state"] == "completed" and states == ["converged"] * boards
                   and all(creates.get(d) == 1 for d in ids) and all(n == 1 for n in accepted.values()))
        case.seen = (f"rollout {done['state']} ({', '.join(states)}); desired documents accepted per board "
                     f"{sorted(accepted.values())}, v2 containers created per board "
                     f"{sorted(creates.get(d, 0) for d in ids)}")
        case.figures = {"controller down": f"{restarted_at - killed_at:.1f} s",
                        "restart -> rollout completed": f"{completed_at - restarted_at:.1f} s",
                        "boards updated twice": sum(n > 1 for n in creates.values())}
    finally:
        for a in agents:
            a.stop()
            for c in client.containers.list(all=True, filters={"label": f"io.tinyfleet.device={a.device_id}"}):
                c.remove(force=True)
        ctl.stop()
        # the broker may be shared (the test session's): leave no retained board behind for the next fleet
        cleaner = FleetPeer(broker_url)
        try:
            for a in agents:
                cleaner.clear(a.device_id)
        finally:
            cleaner.close()
    return case


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)


# -- disk full ------------------------------------------------------------------------------------------

MiB = 2**20


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def _small_disk(root: Path, disk_mib: int) -> Iterator[tuple[Dockerd, Path]]:
    """A private engine whose data root is a tmpfs of `disk_mib` MiB: (engine, data root)."""
    data = root / "d" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_mib}m", "tmpfs", str(data)], check=True)
    engine = None
    try:
        engine = Dockerd(root / "d").start()
        yield engine, data
    finally:
        if engine is not None:
            engine.stop()  # unmounts what is under its root, the tmpfs too
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def _fill(data: Path, leave: int) -> Path:
    """Ballast on the engine's disk until `leave` bytes are free (0: until the disk is full)."""
    ballast = data / f"ballast-{random.randrange(16**6):06x}"
    chunk = b"\0" * MiB
    with open(ballast, "wb", buffering=0) as f:  # unbuffered: ENOSPC comes from write(), not from close()
        try:
            while _free(data) > leave + MiB:
                f.write(chunk)
            if leave == 0:
                while True:
                    f.write(chunk[:4096])
        except OSError:  # ENOSPC: full
            pass
    return ballast


def _padded_images(root: Path, registry_host: str, repo: str, pad_mib: int,
                   versions: tuple[tuple[str, bool], ...]) -> list[str]:
    """The demo app as (version, padded with `pad_mib` MiB of incompressible data) images."""
    from sandbox import binaries
    from sandbox.images import publish_demo

    built = binaries.build(root / "bin", ("linux/amd64",))
    pad = root / "pad.bin"
    if not pad.exists():
        pad.write_bytes(os.urandom(pad_mib * MiB))  # incompressible: compressed size = its size
    return [publish_demo(registry_host, repo, version, built, version=version, healthcheck=False,
                         adds=((pad, "/padding.bin"),) if padded else ()).ref for version, padded in versions]


def _old_alone(r: Rig, old: Any) -> tuple[bool, str]:
    """Whether the old container alone runs, one image in the engine, and a few words saying what is there."""
    after = r.containers()
    images = len(r.client.images.list())
    ok = [c.id for c in after] == [old.id] and after[0].status == "running" and images == 1
    return ok, (f"old version {after[0].status if after else 'gone'} ({len(after)} container), "
                f"{images} image(s) in the engine")


@timed
def disk_full(root: Path, broker_url: str, registry_host: str, disk_mib: int = 192, pad_mib: int = 24) -> Case:
    case = Case("disk-full", "an update that does not fit the engine's disk is refused before any layer is pulled, "
                             "with the space it needs in the reason; the old version keeps running; no space lost; "
                             "a replaced image's space is reclaimed")
    with _small_disk(root, disk_mib) as (engine, data):
        big_old, small, big_new = _padded_images(root, registry_host, "faults/disk", pad_mib,
                                                 (("0", True), ("1", False), ("2", True)))
        r = rig("disk", broker_url, engine.url, root)
        try:
            r.want(AppSpec("hello", big_old, health=HEALTH))
            r.running(big_old)
            with_big = _free(data)
            r.want(AppSpec("hello", small, health=HEALTH))
            r.running(small)
            _until(lambda: len(r.client.images.list()) == 1, 30, "the replaced image pruned")
            reclaimed = _free(data) - with_big
            # Fill the disk so the next image (pad_mib compressed, x3 + the agent's 64 MiB reserve) cannot fit.
            ballast = _fill(data, leave=64 * MiB + 2 * pad_mib * MiB)
            free_before = _free(data)
            (old,) = r.containers()
            r.want(AppSpec("hello", big_new, health=HEALTH))
            report = r.wait(lambda rep: rep.app("hello") is not None and rep.app("hello").phase == Phase.FAILED,  # type: ignore[union-attr]
                            "the update refused")
            status = report.app("hello")
            time.sleep(2)
            alone, there = _old_alone(r, old)
            free_after = _free(data)
            ok_reason = "not enough space" in (status.error or "")  # type: ignore[union-attr]
            case.ok = (ok_reason and alone and status.current_image == small  # type: ignore[union-attr]
                       and abs(free_after - free_before) < MiB and reclaimed > pad_mib * MiB // 2)
            case.seen = (f"reported {status.phase.value}: '{status.error}'; {there}; free space "  # type: ignore[union-attr]
                         f"{free_before / MiB:.0f} -> {free_after / MiB:.0f} MiB")
            case.figures = {"disk": f"{disk_mib} MiB tmpfs", "update": f"{pad_mib} MiB compressed",
                            "free when refused": f"{free_before / MiB:.0f} MiB",
                            "space lost by the refusal": f"{(free_before - free_after) / MiB:.1f} MiB",
                            "reclaimed by pruning the replaced image": f"{reclaimed / MiB:.0f} MiB"}
            ballast.unlink()
        finally:
            r.close()
    return case


@timed
def disk_full_mid_pull(root: Path, broker_url: str, registry_host: str, disk_mib: int = 224,
                       pad_mib: int = 24) -> Case:
    case = Case("disk-full-mid-pull", "the disk fills up while an update is being pulled (it fitted when the pull "
                                      "began): the pull fails with a terminal, clear error (reported failed, not "
                                      "retried), the old version keeps running, the partial download is reclaimed")
    proxy = FaultProxy.in_front_of(registry_host)
    with _small_disk(root, disk_mib) as (engine, data):
        small, big = _padded_images(root, proxy.host, "faults/diskpull", pad_mib, (("1", False), ("2", True)))
        r = rig("diskpull", broker_url, engine.url, root)
        try:
            r.want(AppSpec("hello", small, health=HEALTH))
            r.running(small)
            (old,) = r.containers()
            free_before = _free(data)
            proxy.set("slow")  # the pull takes a while (~pad_mib / 2 MiB/s): time to fill the disk under it
            start_bytes = proxy.delivered
            r.want(AppSpec("hello", big, health=HEALTH))
            _until(lambda: proxy.delivered - start_bytes > 2 * MiB, 60, "the pull under way")
            filled_at = time.monotonic()
            ballast = _fill(data, leave=0)  # another writer takes the rest of the disk mid-pull
            pulled = proxy.delivered - start_bytes
            proxy.set("up")
            report = r.wait(lambda rep: rep.app("hello") is not None and rep.app("hello").phase == Phase.FAILED,  # type: ignore[union-attr]
                            "the pull failed for lack of space", timeout=120)
            failed_at = time.monotonic()
            status = report.app("hello")
            pulls_before = len(log_events(r.agent.log, "pulled"))
            time.sleep(3)  # no retry: a terminal failure waits for a new desired state
            alone, there = _old_alone(r, old)
            ballast_size = ballast.stat().st_size
            ballast.unlink()
            time.sleep(1)
            free_after = _free(data)
            left = free_before - free_after
            error = status.error or ""  # type: ignore[union-attr]
            clear = "no space left on device" in error.lower()
            retried = "retrying" in error or len(log_events(r.agent.log, "pulled")) != pulls_before
            case.ok = clear and not retried and alone and status.current_image == small and left < 2 * MiB  # type: ignore[union-attr]
            case.seen = (f"reported {status.phase.value}: '...{error[-90:]}'; {there}; free space with the "  # type: ignore[union-attr]
                         f"ballast gone {free_before / MiB:.1f} -> {free_after / MiB:.1f} MiB")
            case.figures = {"disk": f"{disk_mib} MiB tmpfs", "update": f"{pad_mib} MiB compressed",
                            "free when the pull began": f"{free_before / MiB:.0f} MiB",
                            "filled mid-pull with": f"{ballast_size / MiB:.0f} MiB",
                            "filling began -> reported failed": f"{failed_at - filled_at:.1f} s",
                            "pulled before the disk filled": f"{pulled / MiB:.1f} MiB of {pad_mib}",
                            "space left behind by the failed pull": f"{left / MiB:.1f} MiB"}
        finally:
            r.close()
            proxy.close()
    return case


# -- the report ---------------------------------------------------------------------------------------

def main() -> None:
    from sandbox.stack import Stack

    parser = argparse.ArgumentParser(prog="bench faults")
    parser.add_argument("--cycles", type=int, default=50, help="kill -9 cycles of the state write")
    parser.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    args = parser.parse_args(sys.argv[1:])
    cases: list[Case] = []
    with Stack() as stack:
        runs: dict[str, Callable[[], Case]] = {
            "state-write-kill": lambda: state_write_kill(stack.root / "swk", args.cycles),
            "dockerd-restart": lambda: dockerd_restart(stack.root / "dr", stack.broker_url, stack.registry_host),  # type: ignore[arg-type]
            "mosquitto-restart": lambda: mosquitto_restart(stack.root / "mq", stack.registry_host,  # type: ignore[arg-type]
                                                           stack.docker_host),  # type: ignore[arg-type]
            "controller-kill": lambda: controller_kill(stack.root / "ck", stack.broker_url, stack.registry_host,  # type: ignore[arg-type]
                                                       stack.docker_host),  # type: ignore[arg-type]
            "disk-full": lambda: disk_full(stack.root / "df", stack.broker_url, stack.registry_host),  # type: ignore[arg-type]
            "disk-full-mid-pull": lambda: disk_full_mid_pull(stack.root / "dp", stack.broker_url,  # type: ignore[arg-type]
                                                             stack.registry_host),  # type: ignore[arg-type]
            "registry-outage": lambda: registry_outage(stack.root / "ro", stack.broker_url, stack.registry_host,  # type: ignore[arg-type]
                                                       stack.docker_host),  # type: ignore[arg-type]
        }
        for name, run in runs.items():
            if args.only and name not in args.only:
                continue
            (stack.root / name).mkdir(parents=True, exist_ok=True)
            case = run()
            cases.append(case)
            print(case, flush=True)
    passed = sum(c.ok for c in cases)
    print(f"\nfault suite: {passed}/{len(cases)} passed")
