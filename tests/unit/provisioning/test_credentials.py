"""Per-device credentials: Mosquitto's own $7$ hash format, one entry per device, atomic updates."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest

from provisioning import credentials
from provisioning.errors import CredentialError


def test_hash_is_mosquittos_pbkdf2_sha512_format() -> None:
    salt = b"0123456789ab"
    hashed = credentials.hash_secret("s3cret", salt)
    _, alg, iterations, salt_b64, digest_b64 = hashed.split("$")
    assert (alg, iterations, base64.b64decode(salt_b64)) == ("7", "101", salt)
    assert base64.b64decode(digest_b64) == hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    assert credentials.matches("s3cret", hashed) and not credentials.matches("other", hashed)


@pytest.mark.parametrize("hashed", ["", "$6$abc$def", "$7$101$!!!$???", "plain"])
def test_unknown_hash_formats_never_match(hashed: str) -> None:
    assert not credentials.matches("s3cret", hashed)


def test_every_device_gets_its_own_random_secret() -> None:
    a, b = credentials.issue("pi-1"), credentials.issue("pi-1")
    assert a.username == "pi-1" and a.secret != b.secret and len(a.secret) >= 40
    assert a.secret not in repr(a)


@pytest.mark.parametrize("device_id, secret", [("bad id", None), ("pi-1", "short"), ("pi-1", "x" * 20 + ":y")])
def test_bad_identities_are_refused(device_id: str, secret: str | None) -> None:
    with pytest.raises(CredentialError):
        credentials.issue(device_id, secret)


def test_password_file_updates_keep_other_entries_and_stay_private(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.passwd"
    path.write_text("controller:$7$101$abc$def\n")
    path.chmod(0o640)
    passwd = credentials.PasswordFile(path)
    one = credentials.issue("pi-1")
    passwd.put(one)
    passwd.put(credentials.issue("pi-2"))
    passwd.put(one)  # re-provisioning replaces, never duplicates
    entries = passwd.entries()
    assert list(entries) == ["controller", "pi-1", "pi-2"]
    assert credentials.matches(one.secret, entries["pi-1"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640, "an existing file keeps its mode"
    assert passwd.remove("pi-2") and not passwd.remove("pi-2")
    assert list(passwd.entries()) == ["controller", "pi-1"]


def test_a_new_password_file_is_owner_only(tmp_path: Path) -> None:
    passwd = credentials.PasswordFile(tmp_path / "new" / "passwd")
    passwd.put(credentials.issue("pi-1"))
    assert stat.S_IMODE(passwd.path.stat().st_mode) == 0o600
