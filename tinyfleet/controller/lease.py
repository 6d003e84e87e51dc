"""The rollout engine's lease: which of several controllers on one database drives bindings, rollout
steps and desired-state publishing. The others ingest reports, answer connect handshakes and serve the
API (their writes land in the shared store, and the holder acts on them at its next pass).

On PostgreSQL the lease is a session-level advisory lock held on a connection of its own: a killed
controller's connection closes with its process, PostgreSQL releases the lock, and the next
controller's `held()` (called every engine pass) takes it - a takeover within one pass interval. On
SQLite there is one controller per database file, and it always holds the lease.
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from tinyfleet.controller.dialect import Location

log = structlog.get_logger("controller.lease")
ENGINE_LEASE = 0x7466_656E  # "tfen": the advisory lock's first key (the second: the schema)


class Lease:
    def __init__(self, location: Location, key: int = ENGINE_LEASE) -> None:
        self.location = location
        self.key = key
        self._db: Any = None  # the PostgreSQL connection that holds the lock, once taken
        self._held = location.kind != "postgresql"

    def held(self) -> bool:
        """Whether this controller holds the lease now, taking it when it is free."""
        if self.location.kind != "postgresql":
            return True
        import psycopg

        try:
            if self._db is None:
                self._db = psycopg.connect(self.location.target, autocommit=True, connect_timeout=5)
            if self._held:
                self._db.execute("SELECT 1")  # still connected: still ours
                return True
            # one lease per fleet: per database and schema (the tests put a fleet in each schema)
            row = self._db.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",
                                   (self.key,)).fetchone()
        except psycopg.Error as exc:
            log.warning("cannot take the rollout engine's lease", error=str(exc))
            self._drop(exc)
            return False
        self._held = bool(row and row[0])
        if self._held:
            log.info("took the rollout engine's lease: this controller drives rollouts now")
        return self._held

    def _drop(self, exc: Exception) -> None:
        import psycopg

        if self._held:
            log.warning("lost the rollout engine's lease (database connection)", error=str(exc))
        self._held = False
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):  # a broken connection: nothing left to do with it
                self._db.close()
        self._db = None

    def release(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._held = self.location.kind != "postgresql"

