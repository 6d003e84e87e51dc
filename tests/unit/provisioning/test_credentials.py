"""Per-device credentials: Mosquitto's own $7$ hash format, one entry per device, atomic updates."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest

from tinyfleet.protocol import topics
from tinyfleet.provisioning import credentials
from tinyfleet.provisioning.errors import CredentialError


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


@pytest.mark.parametrize("device_id", ["controller", "Controller", "CONTROLLER", "controller-2", "controller.eu",
                                       "controller_backup", "operator", "operator-7"])
def test_the_controllers_and_operators_user_names_are_never_a_devices(device_id: str) -> None:
    with pytest.raises(CredentialError, match="reserved for the controller's and the operator's broker users"):
        credentials.issue(device_id)
    with pytest.raises(CredentialError, match="reserved"):
        credentials.DeviceCredential(device_id, "x" * 20)  # however a device credential is made


@pytest.mark.parametrize("device_id", ["controllerboard", "pi-controller", "my-operator", "pi-0001"])
def test_names_that_only_resemble_a_reserved_one_are_devices_like_any_other(device_id: str) -> None:
    assert credentials.issue(device_id).username == device_id


def test_a_device_provisioned_as_the_controller_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    passwd = credentials.PasswordFile(tmp_path / "passwd")
    controller = credentials.issue_controller("controller")
    passwd.put(controller)
    before = passwd.entries()
    with pytest.raises(CredentialError):
        passwd.put(credentials.issue("controller"))
    assert passwd.entries() == before and credentials.matches(controller.secret, before["controller"])


@pytest.mark.parametrize("user", ["pi-0001", "gateway", "controllerboard"])
def test_the_acl_grants_fleet_wide_access_only_to_a_reserved_name(user: str) -> None:
    with pytest.raises(CredentialError, match="must be a reserved name"):
        credentials.acl(user)
    with pytest.raises(CredentialError):
        credentials.issue_controller(user)


def test_the_acl_gives_each_device_read_on_its_desired_topic_and_write_on_its_other_channels() -> None:
    text = credentials.acl("controller-eu")
    granted = sorted(tuple(line.split()[1:]) for line in text.splitlines() if line.startswith("pattern "))
    want = sorted(("read" if c is topics.Channel.DESIRED else "write", f"{topics.PREFIX}/%u/{c.value}")
                  for c in topics.Channel)  # every channel of the protocol, nothing more
    assert granted == want
    assert "user controller-eu\ntopic readwrite tinyfleet/v1/devices/#\n" in text


@pytest.mark.parametrize("command", ["customize", "flash", "serial"])
def test_provisioning_commands_refuse_a_reserved_device_id_before_doing_anything(command: str, capsys) -> None:  # type: ignore[no-untyped-def]
    from tinyfleet.controller.cli import build_parser

    extra = {"customize": ["x.img"], "flash": ["x.img", "--target", "x-out.img"], "serial": ["--port", "/dev/null",
                                                                                       "--user", "root"]}[command]
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["provision", command, *extra, "--device-id", "controller",
                                   "--broker", "mqtt://10.0.0.5:1883"])
    assert exit_.value.code == 2
    assert "device id 'controller' is reserved" in capsys.readouterr().err
