"""The controller database's schema, as migrations: MIGRATIONS[n] moves a database from version n to
n+1 (applied by controller.store inside one transaction). Append, never edit a released entry."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = ("""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL,
    online_since REAL,
    status_online INTEGER NOT NULL DEFAULT 0,
    platform TEXT,
    agent_version TEXT,
    status_json TEXT,
    health_json TEXT,
    health_at REAL,
    reported_json TEXT,
    reported_generation INTEGER NOT NULL DEFAULT 0,
    reported_at REAL,
    desired_generation INTEGER NOT NULL DEFAULT 0,
    desired_payload BLOB,
    needs_publish INTEGER NOT NULL DEFAULT 0,
    needs_binding INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX devices_needs_publish ON devices(needs_publish) WHERE needs_publish = 1;
CREATE INDEX devices_needs_binding ON devices(needs_binding) WHERE needs_binding = 1;
CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (device_id, key));
CREATE INDEX device_tags_kv ON device_tags(key, value);
CREATE TABLE device_groups (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name TEXT NOT NULL, PRIMARY KEY (device_id, name));
CREATE INDEX device_groups_name ON device_groups(name);
CREATE TABLE releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL, image TEXT NOT NULL, source TEXT NOT NULL, version TEXT NOT NULL,
    max_bytes INTEGER, env_json TEXT NOT NULL, health_json TEXT NOT NULL, platforms_json TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE INDEX releases_app ON releases(app, id);
CREATE TABLE pins (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    app TEXT NOT NULL, release_id INTEGER REFERENCES releases(id), PRIMARY KEY (device_id, app));
CREATE TABLE assignments (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    app TEXT NOT NULL, release_id INTEGER NOT NULL REFERENCES releases(id), rollout_id INTEGER,
    assigned_at REAL NOT NULL, PRIMARY KEY (device_id, app));
CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL, release_id INTEGER NOT NULL REFERENCES releases(id), selector TEXT NOT NULL,
    canary INTEGER NOT NULL, batch TEXT NOT NULL, max_failures TEXT NOT NULL,
    health_timeout REAL NOT NULL, offline_deadline REAL NOT NULL,
    state TEXT NOT NULL, reason TEXT, created_at REAL NOT NULL, finished_at REAL,
    batches_started INTEGER NOT NULL DEFAULT 0, open INTEGER NOT NULL DEFAULT 1);
CREATE INDEX rollouts_open ON rollouts(open) WHERE open = 1;
CREATE TABLE rollout_targets (
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL, state TEXT NOT NULL, previous_release_id INTEGER, previous_image TEXT,
    batch INTEGER, started_at REAL, generation INTEGER, settled_at REAL, reason TEXT,
    PRIMARY KEY (rollout_id, device_id));
CREATE TABLE bindings (
    selector TEXT NOT NULL, app TEXT NOT NULL, release_id INTEGER NOT NULL REFERENCES releases(id),
    rollout_id INTEGER, bound_at REAL NOT NULL, PRIMARY KEY (selector, app));
""", """
-- update locks (protocol 1.2): how long a release waits for an app update lock (NULL: until it goes)
ALTER TABLE releases ADD COLUMN lock_max_wait REAL;
""", """
-- update locks the app answers over HTTP (protocol 1.4): {"port", "path"} as JSON, NULL: none
ALTER TABLE releases ADD COLUMN lock_endpoint TEXT;
""")
