"""The controller's signing key: created owner-only on first start, the same key after a restart,
rotated with an endorsement the boards can follow, and never replaced silently when it is damaged."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tinyfleet.controller import signing
from tinyfleet.controller.store import Store
from tinyfleet.protocol import DesiredState
from tinyfleet.protocol.signing import PublicKey, check


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_an_owner_only_key_and_a_restart_reuses_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = signing.load_or_create(state)
    assert mode(state) == 0o700
    assert {p.name: mode(p) for p in state.iterdir()} == {
        "signing-key": 0o600, "signing-key.pub": 0o600, "signing-key.chain": 0o600}
    assert PublicKey.parse((state / "signing-key.pub").read_text()) == first.public
    assert signing.load_or_create(state).public == first.public


def test_a_key_left_readable_by_others_is_made_owner_only(tmp_path: Path) -> None:
    signing.load_or_create(tmp_path)
    (tmp_path / "signing-key").chmod(0o644)
    signing.load_or_create(tmp_path)
    assert mode(tmp_path / "signing-key") == 0o600


def test_a_damaged_key_is_refused_rather_than_replaced(tmp_path: Path) -> None:
    signing.load_or_create(tmp_path)
    (tmp_path / "signing-key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="restore it from a backup"):
        signing.load_or_create(tmp_path)


def test_rotation_endorses_the_new_key_and_destroys_the_old_one(tmp_path: Path) -> None:
    old = signing.load_or_create(tmp_path)
    new = signing.rotate(tmp_path)
    assert new.public != old.public and signing.load_or_create(tmp_path).public == new.public
    assert old.private.private_bytes_raw() not in (tmp_path / "signing-key").read_bytes()
    desired = DesiredState("pi-1", 3)
    assert check(desired.to_dict(), new.sign(desired), old.public) == new.public  # a board on the old key follows
    twice = signing.rotate(tmp_path)
    assert len(twice.chain) == 2 and check(desired.to_dict(), twice.sign(desired), old.public) == twice.public


def test_a_chain_that_does_not_end_at_the_key_is_refused(tmp_path: Path) -> None:
    signing.rotate(tmp_path)
    other = tmp_path / "other"
    signing.load_or_create(other)
    (tmp_path / "signing-key").write_bytes((other / "signing-key").read_bytes())
    with pytest.raises(ValueError, match="does not end at the key"):
        signing.load_or_create(tmp_path)


def test_the_fleet_database_is_created_owner_only_in_an_owner_only_directory(tmp_path: Path) -> None:
    store = Store(tmp_path / "fleet" / "controller.db")
    store.set_meta("probe", "1")  # a write: WAL and shared-memory files appear
    try:
        assert mode(tmp_path / "fleet") == 0o700
        files = {p.name: mode(p) for p in (tmp_path / "fleet").iterdir()}
        assert files and all(m == 0o600 for m in files.values()), files
    finally:
        store.close()
