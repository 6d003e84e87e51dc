"""A private PostgreSQL cluster on a loopback port: Debian's `postgresql` (initdb + postgres from
/usr/lib/postgresql/<version>/bin), its own data directory and unix socket directory, trust
authentication for loopback and that socket only - a throw-away cluster for tests, the benchmarks and
the sandbox, never a production set-up.

PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user the Debian
package creates (`runuser`), in a directory of its own outside the caller's private (0700) one. By
default the cluster does not fsync (tests create and drop a database each); `durable=True` keeps
PostgreSQL's defaults, for benchmarks that compare it with SQLite's synchronous=FULL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from sandbox.prereqs import MissingPrerequisite
from sandbox.process import ManagedProcess, ServiceError, free_port, wait_until

USER = "tinyfleet"  # the cluster's superuser (initdb -U)
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def binaries() -> Path:
    """The newest installed server's bin directory."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not versions:
        raise MissingPrerequisite("missing PostgreSQL's server (Debian: apt-get install postgresql). "
                                  "`bash scripts/dev.sh setup` installs everything on Debian.")
    return versions[-1].parent


class Postgres:
    def __init__(self, root: Path | None = None, port: int | None = None, durable: bool = False) -> None:
        self.bin = binaries()
        self.port = port or free_port()
        self.durable = durable
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise MissingPrerequisite("no 'postgres' user to run PostgreSQL as (Debian: apt-get install "
                                          "postgresql)") from exc
            self._as = ["runuser", "-u", "postgres", "--"]
        # Its own directory: as root, the caller's private directory is closed to the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="tfpg", dir=str(root.parent) if root else "/tmp"))
        if self._as:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.log = self.root / "postgres.log"
        self.proc: ManagedProcess | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as, *argv], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, cwd=self.root)
        if done.returncode != 0:
            raise ServiceError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> Postgres:
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8",
                      "--no-sync", "--locale=C")
        self._run("mkdir", "-p", str(self.sockets))
        settings = [] if self.durable else list(FAST)
        settings += ["listen_addresses=127.0.0.1", f"unix_socket_directories={self.sockets}",
                     "max_connections=300", "shared_buffers=128MB", "log_min_messages=warning"]
        argv = [*self._as, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for setting in settings:
            argv += ["-c", setting]
        self.proc = ManagedProcess("postgres", argv, self.log)
        self.proc.start()
        wait_until(self._ready, 30, "postgres", self.log)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        self.proc.check_alive()
        return self.execute("SELECT 1") is None

    def execute(self, sql: str) -> None:
        """One statement as the superuser, outside a transaction (CREATE DATABASE)."""
        import psycopg

        try:
            with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as db:
                db.execute(sql)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            raise OSError(f"postgres: {exc}") from exc

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self, name: str) -> str:
        """A fresh, empty schema in the default database, and a URL whose connections use it: cheaper than
        a database per test (no files to copy), as isolated for the store."""
        self.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url()}?options=-csearch_path%3D{name}&application_name={name}"

    def disconnect(self, application_name: str) -> None:
        """End every connection that gave this application name (a schema's, see create_schema): objects a
        test left for the garbage collector must not hold connections until the cluster runs out."""
        self.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                     f"'{application_name}' AND pid <> pg_backend_pid()")

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), then the process group for sure."""
        if self.proc is not None and self.proc.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.proc.wait(10)
            self.proc.stop()
        self.proc = None

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
