"""The fleet's persistent state, and the only module that speaks SQL.

Two databases behind one class (controller.dialect connects and adapts the SQL): SQLite, embedded and
the default, in WAL mode with synchronous=FULL, so a committed rollout step, generation or release
survives a crash of the controller or of the machine; and PostgreSQL (`postgresql://...`), which
several controllers can share. One connection serves every thread under one re-entrant lock;
`transaction()` makes a read-decide-write sequence atomic (the rollout engine, the API and the ingest
writer all go through it), so an operator's pause cannot be lost under a concurrent tick. Ingest
writes whole batches in one transaction, so thousands of messages cost one fsync.

Public methods speak in the controller's records (controller.model, controller.rollout), never in
rows. The SQL is written once, in what both understand (ON CONFLICT upserts, RETURNING, CASE), in
SQLite's spelling; the dialect rewrites placeholders, `json_each(?)`, `IS ?`, `BEGIN IMMEDIATE` and
the migrations' type words for PostgreSQL.

The schema is versioned in `meta.schema_version`; MIGRATIONS[n] moves a database from version n to
n+1 inside one transaction. A database newer than this code is refused rather than misread.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyfleet.controller.dialect import Location, connect
from tinyfleet.controller.errors import StoreError
from tinyfleet.controller.model import Binding, DeviceRecord, Release, ReleasePlatform
from tinyfleet.controller.rollout import Amount, Rollout, RolloutState, Tally, Target, TargetState, is_open
from tinyfleet.controller.schema import MIGRATIONS
from tinyfleet.controller.selector import Kind, Selector
from tinyfleet.protocol.messages import Health, HealthPolicy, LockEndpoint, ReportedState, Status

SCHEMA_VERSION = len(MIGRATIONS)
ROWS_PER_STATEMENT = 500  # x at most 10 values: far under SQLite's 32,766 bound parameters

# A live message is a sign of life: it (re)starts `online_since` when the device was offline or its
# last sign of life is older than `stale`, and marks it online. Retained deliveries (:seen NULL) are
# history replayed by the broker, not a sign of life.
_ALIVE = """
    online_since = CASE WHEN :seen IS NULL THEN devices.online_since
                        WHEN devices.status_online = 0 OR devices.last_seen IS NULL
                             OR :seen - devices.last_seen > :stale THEN :seen
                        ELSE devices.online_since END,
    last_seen = COALESCE(:seen, devices.last_seen)"""
_STATUS_SQL = f"""
INSERT INTO devices (id, first_seen, last_seen, online_since, status_online, platform, agent_version, status_json)
VALUES (:id, :now, :seen, :seen, :online, :platform, :agent_version, :json)
ON CONFLICT(id) DO UPDATE SET {_ALIVE}, status_online = :online,
    platform = COALESCE(:platform, devices.platform),
    agent_version = COALESCE(:agent_version, devices.agent_version), status_json = :json,
    needs_publish = CASE WHEN devices.desired_payload IS NOT NULL AND :generation > devices.desired_generation
                         THEN 1 ELSE devices.needs_publish END"""
_HEALTH_SQL = f"""
INSERT INTO devices (id, first_seen, last_seen, online_since, status_online, agent_version, health_json, health_at)
VALUES (:id, :now, :seen, :seen, :alive, :agent_version, :json, :now)
ON CONFLICT(id) DO UPDATE SET {_ALIVE},
    status_online = CASE WHEN :seen IS NULL THEN devices.status_online ELSE 1 END,
    agent_version = :agent_version, health_json = :json, health_at = :now"""
_REPORTED_SQL = f"""
INSERT INTO devices (id, first_seen, last_seen, online_since, status_online, platform, agent_version,
                     reported_json, reported_generation, reported_at)
VALUES (:id, :now, :seen, :seen, :alive, :platform, :agent_version, :json, :generation, :now)
ON CONFLICT(id) DO UPDATE SET {_ALIVE},
    status_online = CASE WHEN :seen IS NULL THEN devices.status_online ELSE 1 END,
    platform = COALESCE(:platform, devices.platform),
    agent_version = COALESCE(:agent_version, devices.agent_version),
    reported_json = :json, reported_generation = :generation, reported_at = :now,
    needs_publish = CASE WHEN devices.desired_payload IS NOT NULL AND :generation > devices.desired_generation
                         THEN 1 ELSE devices.needs_publish END"""
_DEVICE_COLUMNS = ("id, first_seen, last_seen, online_since, status_online, platform, agent_version, status_json, "
                   "health_json, health_at, reported_json, reported_at, desired_generation, desired_payload")
_DEVICE_COLUMNS_LIGHT = _DEVICE_COLUMNS.replace("status_json", "NULL").replace("health_json", "NULL").replace(
    "desired_payload", "NULL")
_ROLLOUT_COLUMNS = ("r.id, r.app, r.release_id, rel.image, rel.platforms_json, r.selector, r.canary, r.batch, "
                    "r.max_failures, r.health_timeout, r.offline_deadline, r.state, r.reason, r.created_at, "
                    "r.finished_at, r.batches_started")
_TARGET_COLUMNS = ("device_id, state, previous_release_id, previous_image, batch, started_at, generation, "
                   "settled_at, reason")


@dataclass(frozen=True)
class Incoming:
    """One validated device message, and whether it arrived live (a sign of life) or as retained history."""

    message: Status | Health | ReportedState
    live: bool


class Store:
    def __init__(self, location: str | Path) -> None:
        """`location`: a path or sqlite:///PATH (SQLite), or postgresql://... (see controller.dialect)."""
        self.location = Location.parse(location)
        self.path = str(self.location)  # for messages: never a URL's password
        self._db = connect(self.location)
        self._lock = threading.RLock()
        self._depth = 0
        self._releases: dict[int, Release] = {}
        self._changed: set[str] | None = None  # devices written since take_changed(); None: all of them
        self._versions: dict[str, str] | None = None  # PostgreSQL: each device row's xmin at take_changed()
        self._migrate()

    @property
    def kind(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.location.kind

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Atomic and isolated from every other thread of this process; nests (inner blocks join)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute(self._db.begin)
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                self._releases.clear()  # a release read back inside the transaction may not exist now
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def _mark(self, device_ids: Iterable[str]) -> None:
        """Note devices whose record (DeviceRecord) this write changes. Call it in every write that does."""
        with self._lock:
            if self._changed is not None:
                self._changed.update(device_ids)

    def take_changed(self) -> set[str] | None:
        """The devices whose records were written since the last call (None: assume all of them), so a
        reader that keeps records between passes re-reads only those. SQLite counts this process's
        writes (one controller per file); PostgreSQL, which other controllers write too, compares each
        device row's version (xmin: every write to a record writes its devices row, see `_touch`)."""
        if self.kind == "postgresql":
            versions = dict(self._rows("SELECT id, CAST(xmin AS TEXT) FROM devices"))
            with self._lock:
                previous, self._versions = self._versions, versions
            if previous is None:
                return None
            return {i for i, v in versions.items() if previous.get(i) != v}
        with self._lock:
            changed, self._changed = self._changed, set()
            return changed

    def _write(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        with self.transaction():
            return self._db.execute(sql, params)

    def _values(self, head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> list[tuple[Any, ...]]:
        """`head` VALUES (...), (...) `tail` for many rows, a few hundred rows per statement: one statement
        (one round trip to PostgreSQL) instead of one per row. Returns what a RETURNING `tail` returns."""
        returned: list[tuple[Any, ...]] = []
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start:start + ROWS_PER_STATEMENT]
            cur = self._db.execute_values(head, chunk, tail)
            if "RETURNING" in tail:
                returned += cur.fetchall()
        return returned

    def _migrate(self) -> None:
        with self.transaction():
            self._db.lock_migrations()
            version = 0
            if self._db.has_table("meta"):
                row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {version}, newer than this tinyfleet "
                                 f"understands ({SCHEMA_VERSION}); upgrade tinyfleet")
            for script in MIGRATIONS[version:]:
                for statement in self._db.schema(script):
                    self._db.execute(statement)
            self._db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))

    def schema_version(self) -> int:
        row = self._one("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(row[0]) if row else 0

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value))

    # -- ingest ---------------------------------------------------------------------------------

    def record(self, batch: Iterable[Incoming], now: float, stale_after: float) -> int:
        """Write a batch of device messages in arrival order, in one transaction."""
        count = 0
        with self.transaction(), self._db.pipeline():
            for item in batch:
                m = item.message
                self._mark((m.device_id,))
                seen = now if item.live else None
                params: dict[str, Any] = {"id": m.device_id, "now": now, "stale": stale_after,
                                          "json": json.dumps(m.to_dict(), separators=(",", ":"))}
                if isinstance(m, Status):
                    params.update(seen=seen if m.online else None, online=int(m.online), platform=m.platform,
                                  agent_version=m.agent_version, generation=m.generation)
                    self._db.execute(_STATUS_SQL, params)
                elif isinstance(m, Health):
                    params.update(seen=seen, alive=int(item.live), agent_version=m.agent_version)
                    self._db.execute(_HEALTH_SQL, params)
                else:
                    params.update(seen=seen, alive=int(item.live), platform=m.platform,
                                  agent_version=m.agent_version, generation=m.generation)
                    self._db.execute(_REPORTED_SQL, params)
                count += 1
        return count

    # -- devices --------------------------------------------------------------------------------

    def device(self, device_id: str) -> DeviceRecord | None:
        found = self.devices(ids=[device_id])
        return found[0] if found else None

    def devices(self, selector: Selector | None = None, ids: Sequence[str] | None = None, *,
                detail: bool = True) -> list[DeviceRecord]:
        """Devices with their memberships, pins and assignments. Without `detail`, the last status,
        health and desired documents are left out (the rollout engine reads thousands per pass)."""
        where, params = self._selection(selector, ids)
        columns = _DEVICE_COLUMNS if detail else _DEVICE_COLUMNS_LIGHT
        with self._lock:
            rows = self._db.execute(f"SELECT {columns} FROM devices d {where} ORDER BY id", params).fetchall()
            chosen = json.dumps([r[0] for r in rows])
            extra: dict[str, dict[str, list[Any]]] = {}
            for table, cols in (("device_tags", "key, value"), ("device_groups", "name"),
                                ("pins", "app, release_id"), ("assignments", "app, release_id")):
                extra[table] = {}
                for row in self._db.execute(f"SELECT device_id, {cols} FROM {table} WHERE device_id IN "
                                            f"(SELECT value FROM json_each(?)) ORDER BY 1, 2", (chosen,)):
                    extra[table].setdefault(row[0], []).append(row[1:] if len(row) > 2 else row[1])
        out = []
        for r in rows:
            out.append(DeviceRecord(
                id=r[0], first_seen=r[1], last_seen=r[2], online_since=r[3], status_online=bool(r[4]),
                platform=r[5], agent_version=r[6], status=_loads(r[7]), health=_loads(r[8]), health_at=r[9],
                reported=_loads(r[10]), reported_at=r[11], desired_generation=r[12],
                desired=json.loads(r[13])["body"] if r[13] else None,
                tags=tuple(extra["device_tags"].get(r[0], ())), groups=tuple(extra["device_groups"].get(r[0], ())),
                pins=tuple(extra["pins"].get(r[0], ())), assignments=tuple(extra["assignments"].get(r[0], ()))))
        return out

    def device_ids(self, selector: Selector | None = None) -> list[str]:
        where, params = self._selection(selector, None)
        return [r[0] for r in self._rows(f"SELECT id FROM devices d {where} ORDER BY id", params)]

    @staticmethod
    def _selection(selector: Selector | None, ids: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
        if ids is not None:
            return "WHERE d.id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),)
        if selector is None or selector.kind == Kind.ALL:
            return "", ()
        if selector.kind == Kind.DEVICE:
            return "WHERE d.id IN (SELECT value FROM json_each(?))", (json.dumps(list(selector.values)),)
        if selector.kind == Kind.GROUP:
            return "WHERE d.id IN (SELECT device_id FROM device_groups WHERE name = ?)", selector.values
        return "WHERE d.id IN (SELECT device_id FROM device_tags WHERE key = ? AND value = ?)", selector.values

    def liveness(self) -> list[tuple[bool, float | None]]:
        return [(bool(a), b) for a, b in self._rows("SELECT status_online, last_seen FROM devices")]

    def fleet_platforms(self) -> dict[str, int]:
        rows = self._rows("SELECT platform, COUNT(*) FROM devices WHERE platform IS NOT NULL GROUP BY platform")
        return {platform: count for platform, count in rows}

    def groups(self) -> list[tuple[str, int]]:
        return [(n, c) for n, c in self._rows("SELECT name, COUNT(*) FROM device_groups GROUP BY name ORDER BY name")]

    def _touch(self, device_id: str) -> None:
        """Write the devices row of a record changed only in another table (its version moves)."""
        self._db.execute("UPDATE devices SET needs_binding = needs_binding WHERE id = ?", (device_id,))

    def _touch_membership(self, device_id: str) -> None:
        self._mark((device_id,))
        self._db.execute("UPDATE devices SET needs_binding = 1 WHERE id = ?", (device_id,))

    def set_tag(self, device_id: str, key: str, value: str) -> None:
        with self.transaction():
            self._db.execute("INSERT INTO device_tags (device_id, key, value) VALUES (?, ?, ?) "
                             "ON CONFLICT(device_id, key) DO UPDATE SET value = excluded.value",
                             (device_id, key, value))
            self._touch_membership(device_id)

    def remove_tag(self, device_id: str, key: str) -> bool:
        with self.transaction():
            self._mark((device_id,))
            self._touch(device_id)
            return self._db.execute("DELETE FROM device_tags WHERE device_id = ? AND key = ?",
                                    (device_id, key)).rowcount > 0

    def add_to_group(self, device_id: str, group: str) -> None:
        with self.transaction():
            self._db.execute("INSERT INTO device_groups (device_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
                             (device_id, group))
            self._touch_membership(device_id)

    def remove_from_group(self, device_id: str, group: str) -> bool:
        with self.transaction():
            self._mark((device_id,))
            self._touch(device_id)
            return self._db.execute("DELETE FROM device_groups WHERE device_id = ? AND name = ?",
                                    (device_id, group)).rowcount > 0

    def set_pin(self, device_id: str, app: str, release_id: int | None) -> None:
        with self.transaction():
            self._mark((device_id,))
            self._touch(device_id)
            self._db.execute("INSERT INTO pins (device_id, app, release_id) VALUES (?, ?, ?) "
                             "ON CONFLICT(device_id, app) DO UPDATE SET release_id = excluded.release_id",
                             (device_id, app, release_id))

    def remove_pin(self, device_id: str, app: str) -> bool:
        with self.transaction():
            self._mark((device_id,))
            removed = self._db.execute("DELETE FROM pins WHERE device_id = ? AND app = ?",
                                       (device_id, app)).rowcount > 0
            if removed:  # unpinned: it should follow its groups again
                self._touch_membership(device_id)
            return removed

    def pinned(self, app: str, device_ids: Sequence[str]) -> set[str]:
        """Those of the devices that are pinned for the app, or whole ('*')."""
        return {r[0] for r in self._rows("SELECT device_id FROM pins WHERE app IN (?, '*') AND device_id IN "
                                         "(SELECT value FROM json_each(?))", (app, json.dumps(list(device_ids))))}

    def devices_needing_binding(self, limit: int = 1000) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM devices WHERE needs_binding = 1 ORDER BY id LIMIT ?",
                                         (limit,))]

    def clear_needs_binding(self, device_ids: Sequence[str]) -> None:
        self._write("UPDATE devices SET needs_binding = 0 WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(device_ids)),))

    # -- assignments and desired states ---------------------------------------------------------

    def assign(self, device_id: str, app: str, release_id: int | None, rollout_id: int | None, now: float) -> bool:
        """Point one app of a device at a release (None: take the app off). True when it changed."""
        return bool(self.assign_many(app, [(device_id, release_id)], rollout_id, now))

    def assign_many(self, app: str, changes: Sequence[tuple[str, int | None]], rollout_id: int | None,
                    now: float) -> list[str]:
        """Point one app of many devices at releases, in the order given; returns the devices whose
        assignment changed (their documents are now due). A few statements for a whole batch: a
        rollout moves a thousand devices at once."""
        with self.transaction():
            ids = json.dumps([device_id for device_id, _ in changes])
            current = dict(self._db.execute("SELECT device_id, release_id FROM assignments WHERE app = ? AND "
                                            "device_id IN (SELECT value FROM json_each(?))", (app, ids)))
            final: dict[str, int | None] = {}
            for device_id, release_id in changes:
                final[device_id] = release_id
            changed = [d for d, release_id in final.items() if current.get(d) != release_id]
            if not changed:
                return []
            self._db.executemany("DELETE FROM assignments WHERE device_id = ? AND app = ?",
                                 [(d, app) for d in changed if final[d] is None])
            self._values("INSERT INTO assignments (device_id, app, release_id, rollout_id, assigned_at)",
                         [(d, app, final[d], rollout_id, now) for d in changed if final[d] is not None],
                         "ON CONFLICT(device_id, app) DO UPDATE SET release_id = excluded.release_id, "
                         "rollout_id = excluded.rollout_id, assigned_at = excluded.assigned_at")
            self._db.execute("UPDATE devices SET needs_publish = 1 WHERE id IN (SELECT value FROM json_each(?))",
                             (json.dumps(changed),))
            self._mark(changed)
        return changed

    def desired_inputs_many(self, device_ids: Sequence[str]) -> dict[str, tuple[int, int, list[Release]]]:
        """(stored desired generation, reported generation, the releases assigned) per device, in two
        queries; every one must exist."""
        ids = json.dumps(list(device_ids))
        with self._lock:
            rows = self._db.execute("SELECT id, desired_generation, reported_generation FROM devices WHERE id IN "
                                    "(SELECT value FROM json_each(?))", (ids,)).fetchall()
            assigned: dict[str, list[int]] = {}
            for device_id, release_id in self._db.execute(
                    "SELECT device_id, release_id FROM assignments WHERE device_id IN "
                    "(SELECT value FROM json_each(?)) ORDER BY device_id, app", (ids,)):
                assigned.setdefault(device_id, []).append(release_id)
        out = {r[0]: (r[1], r[2], [self.release(i) for i in assigned.get(r[0], ())]) for r in rows}
        missing = [d for d in device_ids if d not in out]
        if missing:
            raise StoreError(f"device {missing[0]} is not in the store")
        return out  # type: ignore[return-value]

    def save_desired_many(self, documents: Sequence[tuple[str, int, bytes]]) -> None:
        """Record the desired documents just built; all or none: a generation that does not grow over the
        stored one fails them all."""
        if len({device_id for device_id, _, _ in documents}) != len(documents):
            raise StoreError("two desired documents for one device in one save")
        with self.transaction():
            self._mark(device_id for device_id, _, _ in documents)
            # a VALUES list's columns are column1, column2 ... in both databases
            saved = {r[0] for r in self._values(
                "UPDATE devices SET desired_generation = v.column2, desired_payload = v.column3, needs_publish = 0 "
                "FROM (", documents, ") AS v WHERE devices.id = v.column1 AND devices.desired_generation < v.column2 "
                "RETURNING devices.id")}
            for device_id, generation, _ in documents:  # raising rolls the transaction back: none is stored
                if device_id not in saved:
                    raise StoreError(f"desired generation {generation} for {device_id} is not above the stored one")

    def documents_newer_than(self, announced: dict[str, int]) -> list[tuple[str, int, bytes]]:
        """(device id, generation, the exact bytes last sent) for each device that announced an older
        generation than its stored document (the connect handshake)."""
        rows = self._rows("SELECT id, desired_generation, desired_payload FROM devices WHERE desired_payload IS NOT "
                          "NULL AND id IN (SELECT value FROM json_each(?)) ORDER BY id", (json.dumps(list(announced)),))
        return [(i, g, bytes(p)) for i, g, p in rows if g > announced[i]]

    def devices_needing_publish(self, limit: int = 10_000) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM devices WHERE needs_publish = 1 ORDER BY id LIMIT ?",
                                         (limit,))]

    def replace_desired_payloads(self, documents: Sequence[tuple[str, int, bytes]]) -> None:
        """The same documents signed again (after a key rotation): only where the generation still matches."""
        with self.transaction():
            self._db.executemany("UPDATE devices SET desired_payload = ? WHERE id = ? AND desired_generation = ?",
                                 [(payload, device_id, generation) for device_id, generation, payload in documents])

    def desired_payloads(self) -> list[tuple[str, int, bytes]]:
        """(device id, generation, the exact bytes last sent) for every device that has a document."""
        return [(i, g, bytes(p)) for i, g, p in self._rows("SELECT id, desired_generation, desired_payload FROM "
                                                           "devices WHERE desired_payload IS NOT NULL ORDER BY id")]

    # -- releases -------------------------------------------------------------------------------

    def add_release(self, release: Release) -> Release:
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO releases (app, image, source, version, max_bytes, env_json, health_json, platforms_json, "
                "created_at, lock_max_wait, lock_endpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                _release_row(release))
            new_id = cur.fetchone()[0]
        return self.release(new_id)  # type: ignore[return-value]

    def release(self, release_id: int) -> Release | None:
        # Releases never change once created: a rollout materialises thousands of documents from one.
        cached = self._releases.get(release_id)
        if cached is None:
            row = self._one(f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE id = ?", (release_id,))
            if row is None:
                return None
            cached = self._releases.setdefault(release_id, _release(row))
        return cached

    def releases(self, app: str | None = None, limit: int = 100) -> list[Release]:
        rows = self._rows(f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE ? IS NULL OR app = ? "
                          "ORDER BY id DESC LIMIT ?", (app, app, limit))
        return [_release(r) for r in rows]

    def release_by_version(self, app: str, version: str) -> Release | None:
        row = self._one(f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE app = ? AND version = ? "
                        "ORDER BY id DESC LIMIT 1", (app, version))
        return _release(row) if row else None

    def same_release(self, candidate: Release) -> Release | None:
        """An existing release with exactly this app, image and spec (creating it again returns it)."""
        _, image, _, _, max_bytes, env, health, _, _, lock_max_wait, lock_endpoint = _release_row(candidate)
        row = self._one(f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE app = ? AND image = ? AND max_bytes IS ? "
                        "AND env_json = ? AND health_json = ? AND lock_max_wait IS ? AND lock_endpoint IS ? "
                        "ORDER BY id DESC LIMIT 1",
                        (candidate.app, image, max_bytes, env, health, lock_max_wait, lock_endpoint))
        return _release(row) if row else None

    # -- rollouts -------------------------------------------------------------------------------

    def create_rollout(self, r: Rollout) -> Rollout:
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO rollouts (app, release_id, selector, canary, batch, max_failures, health_timeout, "
                "offline_deadline, state, reason, created_at, finished_at, batches_started, open) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (r.app, r.release_id, r.selector, r.canary, str(r.batch), str(r.max_failures), r.health_timeout,
                 r.offline_deadline, r.state.value, r.reason, r.created_at, r.finished_at, r.batches_started,
                 int(is_open(r))))
            rollout_id = cur.fetchone()[0]
            self._save_targets(rollout_id, r.targets)
        return self.rollout(rollout_id)  # type: ignore[return-value]

    def save_rollout(self, r: Rollout, changed: Iterable[Target]) -> None:
        with self.transaction():
            self._db.execute("UPDATE rollouts SET state = ?, reason = ?, finished_at = ?, batches_started = ?, "
                             "open = ? WHERE id = ?", (r.state.value, r.reason, r.finished_at, r.batches_started,
                                                       int(is_open(r)), r.id))
            self._save_targets(r.id, changed)

    def save_targets(self, rollout_id: int, targets: Iterable[Target]) -> None:
        """Some targets of a rollout, leaving the rollout itself as it is."""
        with self.transaction():
            self._save_targets(rollout_id, targets)

    def rollout_head(self, rollout_id: int) -> tuple[RolloutState, int] | None:
        """(state, batches started): enough to tell whether a rollout moved since it was read."""
        row = self._one("SELECT state, batches_started FROM rollouts WHERE id = ?", (rollout_id,))
        return (RolloutState(row[0]), row[1]) if row else None

    def _save_targets(self, rollout_id: int, targets: Iterable[Target]) -> None:
        rows = [(rollout_id, t.device_id, t.state.value, t.previous_release_id, t.previous_image, t.batch,
                 t.started_at, t.generation, t.settled_at, t.reason) for t in targets]
        if rows:
            self._values(f"INSERT INTO rollout_targets (rollout_id, {_TARGET_COLUMNS})", rows,
                         "ON CONFLICT(rollout_id, device_id) DO UPDATE SET state = excluded.state, "
                         "previous_release_id = excluded.previous_release_id, "
                         "previous_image = excluded.previous_image, batch = excluded.batch, "
                         "started_at = excluded.started_at, generation = excluded.generation, "
                         "settled_at = excluded.settled_at, reason = excluded.reason")

    def rollout(self, rollout_id: int) -> Rollout | None:
        """Inside a transaction the rollout stays locked until its end (another controller's API call that
        changes it waits), so a read-decide-write of it is atomic across controllers too."""
        with self._lock:
            if self._depth:
                self._db.lock_row("rollouts", rollout_id)
        found = self._rollouts("WHERE r.id = ?", (rollout_id,))
        return found[0] if found else None

    def rollout_summaries(self, app: str | None = None, limit: int = 20) -> list[tuple[Rollout, Tally]]:
        """The newest rollouts without their targets, which are counted here instead: a listing polled
        every second must not load thousands of targets per rollout."""
        with self._lock:
            found = self._rollouts("WHERE ? IS NULL OR r.app = ? ORDER BY r.id DESC LIMIT ?", (app, app, limit),
                                   with_targets=False)
            counts: dict[int, dict[str, int]] = {r.id: {} for r in found}
            failures = dict.fromkeys(counts, 0)
            for rollout_id, state, number, failed in self._db.execute(
                    "SELECT rollout_id, state, COUNT(*), SUM(CASE WHEN state = ? OR (state IN (?, ?) AND "
                    "substr(reason, 1, 7) = 'failed:') THEN 1 ELSE 0 END) FROM rollout_targets WHERE rollout_id IN "
                    "(SELECT CAST(value AS INTEGER) FROM json_each(?)) GROUP BY rollout_id, state",
                    (TargetState.FAILED.value, TargetState.REVERTING.value, TargetState.REVERTED.value,
                     json.dumps(list(counts)))):
                counts[rollout_id][state] = number
                failures[rollout_id] += failed
        return [(r, Tally(counts[r.id], failures[r.id])) for r in found]

    def open_rollout_ids(self) -> list[int]:
        return [r[0] for r in self._rows("SELECT id FROM rollouts WHERE open = 1 ORDER BY id")]

    def active_rollout(self, app: str) -> int | None:
        row = self._one("SELECT id FROM rollouts WHERE app = ? AND state IN (?, ?) ORDER BY id LIMIT 1",
                        (app, RolloutState.RUNNING.value, RolloutState.PAUSED.value))
        return row[0] if row else None

    def rollout_states(self) -> dict[str, int]:
        return {state: count for state, count in self._rows("SELECT state, COUNT(*) FROM rollouts GROUP BY state")}

    def _rollouts(self, where: str, params: tuple[Any, ...], *, with_targets: bool = True) -> list[Rollout]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts r JOIN releases rel "
                                    f"ON rel.id = r.release_id {where}", params).fetchall()
            out = []
            for row in rows:
                targets = tuple(
                    Target(device_id=t[0], state=TargetState(t[1]), previous_release_id=t[2], previous_image=t[3],
                           batch=t[4], started_at=t[5], generation=t[6], settled_at=t[7], reason=t[8])
                    for t in (self._db.execute(f"SELECT {_TARGET_COLUMNS} FROM rollout_targets WHERE rollout_id = ? "
                                               "ORDER BY device_id", (row[0],)) if with_targets else ()))
                out.append(Rollout(
                    id=row[0], app=row[1], release_id=row[2], image=row[3],
                    platforms=tuple(p["platform"] for p in json.loads(row[4])), selector=row[5], canary=row[6],
                    batch=Amount.parse(row[7], "batch"), max_failures=Amount.parse(row[8], "max failures"),
                    health_timeout=row[9], offline_deadline=row[10], state=RolloutState(row[11]), reason=row[12],
                    created_at=row[13], finished_at=row[14], batches_started=row[15], targets=targets))
        return out

    # -- bindings -------------------------------------------------------------------------------

    def bind(self, b: Binding) -> None:
        self._write("INSERT INTO bindings (selector, app, release_id, rollout_id, bound_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(selector, app) DO UPDATE SET release_id = excluded.release_id, "
                    "rollout_id = excluded.rollout_id, bound_at = excluded.bound_at",
                    (b.selector, b.app, b.release_id, b.rollout_id, b.bound_at))

    def bindings(self) -> list[Binding]:
        return [Binding(*r) for r in self._rows("SELECT selector, app, release_id, rollout_id, bound_at "
                                                "FROM bindings ORDER BY bound_at DESC")]


_RELEASE_COLUMNS = ("id, app, image, source, version, max_bytes, env_json, health_json, platforms_json, "
                    "created_at, lock_max_wait, lock_endpoint")


def _release_row(r: Release) -> tuple[Any, ...]:
    return (r.app, r.image, r.source, r.version, r.max_bytes, json.dumps(dict(r.env), sort_keys=True),
            json.dumps(r.health.to_dict() if r.health else None, sort_keys=True),
            json.dumps([{"platform": p.platform, "digest": p.digest, "compressed_size": p.compressed_size}
                        for p in r.platforms]), r.created_at, r.lock_max_wait,
            json.dumps(r.lock_endpoint.to_dict(), sort_keys=True) if r.lock_endpoint else None)


def _release(row: tuple[Any, ...]) -> Release:
    health = json.loads(row[7])
    return Release(id=row[0], app=row[1], image=row[2], source=row[3], version=row[4], max_bytes=row[5],
                   env=tuple(sorted(json.loads(row[6]).items())),
                   health=HealthPolicy(health["settle_seconds"], health["deadline_seconds"]) if health else None,
                   platforms=tuple(ReleasePlatform(p["platform"], p["digest"], p["compressed_size"])
                                   for p in json.loads(row[8])),
                   created_at=row[9], lock_max_wait=row[10],
                   lock_endpoint=LockEndpoint(**json.loads(row[11])) if row[11] else None)


def _loads(text: str | None) -> dict[str, Any] | None:
    return _parse(text) if text else None


@functools.lru_cache(maxsize=1 << 16)
def _parse(text: str) -> dict[str, Any]:
    """Parsed documents are shared between passes (read-only!): the rollout engine reads thousands of
    device reports per pass, and most have not changed since the last one."""
    return json.loads(text)
