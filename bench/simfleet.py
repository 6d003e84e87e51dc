"""The fleet simulator's processes, seen from the parent: N simulated devices spread over P worker
processes (bench.simhost), each command sent to all of them at once and their replies gathered.

Workers are spawned, not forked: the parent runs the controller's threads and paho loops, which a
fork would copy in whatever state they were in.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import shutil
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any

from bench import simhost


class WorkerFailed(RuntimeError):
    pass


def device_ids(count: int, prefix: str = "sim") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def state_root() -> Path:
    """Agent state directories on tmpfs when there is one: a thousand agents fsyncing on the one disk
    of the machine that simulates them would measure that disk, not the system (each board has its own)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="tfsim", dir=shm if shm.is_dir() else None))


@dataclass
class Worker:
    process: BaseProcess
    conn: Connection
    devices: list[tuple[str, str]]


class SimFleet:
    def __init__(self, broker: str, devices: list[tuple[str, str]], processes: int, heartbeat: float) -> None:
        """devices: (device id, platform) pairs, dealt round-robin to the processes."""
        self.broker = broker
        self.devices = devices
        self.processes = max(1, min(processes, len(devices)))
        per_process = -(-len(devices) // self.processes)
        if per_process > simhost.MAX_DEVICES:
            raise ValueError(f"{per_process} devices per process is over {simhost.MAX_DEVICES} (paho's select() "
                             f"limit); use at least {-(-len(devices) // simhost.MAX_DEVICES)} processes")
        self.heartbeat = heartbeat
        self.root = state_root()
        self.workers: list[Worker] = []

    def __enter__(self) -> SimFleet:
        ctx = mp.get_context("spawn")
        try:
            for i in range(self.processes):
                share = self.devices[i::self.processes]
                parent, child = ctx.Pipe()
                process = ctx.Process(target=simhost.serve, name=f"fleetsim-{i}", daemon=True,
                                      args=(child, self.broker, share, str(self.root), self.heartbeat))
                process.start()
                child.close()
                self.workers.append(Worker(process, parent, share))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def call(self, command: str, *args: Any, timeout: float = 120.0) -> list[Any]:
        """Run a SimHost method in every worker at once; their results in worker order."""
        for w in self.workers:
            w.conn.send((command, args))
        results = []
        for i, w in enumerate(self.workers):
            if not w.conn.poll(timeout):
                raise WorkerFailed(f"worker {i} did not answer {command!r} within {timeout:g} s")
            try:
                status, result = w.conn.recv()
            except (EOFError, OSError):
                raise WorkerFailed(f"worker {i} died during {command!r} (exit code {w.process.exitcode})") from None
            if status != "ok":
                raise WorkerFailed(f"worker {i}: {command} failed: {result}")
            results.append(result)
        return results

    def total(self, command: str, *args: Any, timeout: float = 120.0) -> int:
        return sum(self.call(command, *args, timeout=timeout))

    def close(self) -> None:
        """Stop every worker (politely, then by force) and remove the agents' state."""
        for w in self.workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(("close", ()))
        for w in self.workers:
            w.process.join(30)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(5)
            w.conn.close()
        self.workers.clear()
        shutil.rmtree(self.root, ignore_errors=True)
