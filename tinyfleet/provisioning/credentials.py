"""Per-device MQTT identity: every device gets its own username (its device id) and a random secret;
the broker learns only a salted hash, as a Mosquitto password-file entry (`$7$`: PBKDF2-SHA512, the
format mosquitto_passwd writes). No fleet-wide secret exists; a secret is shown to nobody but the
device it is written to.

The controller has a broker user of its own, whose ACL entry reaches every device's topics. Its names
(`controller`, `operator`, and those names followed by `-`, `.` or `_` and anything, in any case) are
reserved: no device may be provisioned with one - its credential would replace or share the
controller's - and the ACL grants fleet-wide access only to a reserved name."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.topics import PREFIX, validate_device_id
from tinyfleet.provisioning.errors import CredentialError

ITERATIONS = 101  # mosquitto_passwd's own default for $7$
SALT_BYTES = 12
SECRET_BYTES = 32
RESERVED_USERS = ("controller", "operator")
# Least privilege for every device: its own subtree only, %u being the MQTT username = the device id.
_RESERVED_NAMES = f"{' and '.join(RESERVED_USERS)}, alone or followed by '-', '.' or '_' and more"
DEVICE_ACL = (f"pattern read {PREFIX}/%u/desired\n"
              f"pattern write {PREFIX}/%u/reported\n"
              f"pattern write {PREFIX}/%u/health\n"
              f"pattern write {PREFIX}/%u/status\n")


def is_reserved(username: str) -> bool:
    """True for the controller's and the operator's user names, which no device may have."""
    name = username.lower()
    return any(name == r or name.startswith((f"{r}-", f"{r}.", f"{r}_")) for r in RESERVED_USERS)


def check_device_username(device_id: str) -> str:
    """The device id as a broker user name, or CredentialError if it is not a valid id or is reserved."""
    try:
        validate_device_id(device_id)
    except ProtocolError as exc:
        raise CredentialError(f"device id: {exc}") from exc
    if is_reserved(device_id):
        raise CredentialError(
            f"device id {device_id!r} is reserved for the controller's and the operator's broker users "
            f"({_RESERVED_NAMES}), whose ACL reaches every device's topics; give the device another id")
    return device_id


def check_controller_username(username: str) -> str:
    if not is_reserved(username):
        raise CredentialError(
            f"the controller's broker user must be a reserved name ({_RESERVED_NAMES}), which no device can be "
            f"provisioned with; {username!r} could also be a device's id")
    if not username or any(c in username for c in "\r\n:+#/ \t"):
        raise CredentialError(f"the controller's broker user {username!r} may not hold ':', '+', '#', '/' or spaces")
    return username


def acl(controller_user: str = "controller") -> str:
    """A Mosquitto ACL file: devices confined to their own topics, the controller reaching all of them
    (with an ACL in force, a user it does not name may do nothing). The controller's user must be a
    reserved name (see `is_reserved`)."""
    check_controller_username(controller_user)
    return (f"# tinyfleet: each device (MQTT username = device id) may use only its own topics\n{DEVICE_ACL}"
            f"# the controller publishes every device's desired state and reads every report\n"
            f"user {controller_user}\ntopic readwrite {PREFIX}/#\n")


@dataclass(frozen=True, repr=False)
class BrokerCredential:
    """A broker user and its secret; the subclasses say whose (a device's, the controller's)."""

    username: str
    secret: str

    def __post_init__(self) -> None:  # each subclass checks the user name is one it may have
        raise TypeError("use DeviceCredential or ControllerCredential")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(username={self.username!r}, secret=<hidden>)"


class DeviceCredential(BrokerCredential):
    def __post_init__(self) -> None:
        check_device_username(self.username)


class ControllerCredential(BrokerCredential):
    """The controller's own broker user (a reserved name) and secret."""

    def __post_init__(self) -> None:
        check_controller_username(self.username)


def issue(device_id: str, secret: str | None = None) -> DeviceCredential:
    check_device_username(device_id)
    _check_secret(secret)
    return DeviceCredential(device_id, secret or secrets.token_urlsafe(SECRET_BYTES))


def issue_controller(username: str = "controller", secret: str | None = None) -> ControllerCredential:
    _check_secret(secret)
    return ControllerCredential(username, secret or secrets.token_urlsafe(SECRET_BYTES))


def _check_secret(secret: str | None) -> None:
    if secret is not None and (len(secret) < 16 or any(c in secret for c in "\r\n:")):
        raise CredentialError("a secret must be at least 16 characters, on one line, without ':'")


def hash_secret(secret: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def matches(secret: str, hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
        got = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, int(parts[2]))
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


class PasswordFile:
    """A Mosquitto password file: `user:hash` lines. Updates are locked against parallel provisioning
    runs and atomic (write temp, fsync, rename); lines it does not own are kept as they are."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CredentialError(f"cannot read the password file {self.path}: {exc.strerror}") from exc
        out = {}
        for line in text.splitlines():
            user, sep, hashed = line.partition(":")
            if sep and user and not line.startswith("#"):
                out[user] = hashed
        return out

    def hash_for(self, username: str) -> str | None:
        return self.entries().get(username)

    def put(self, credential: BrokerCredential) -> None:
        with self._locked():
            entries = self.entries()
            entries[credential.username] = hash_secret(credential.secret)
            self._write(entries)

    def remove(self, username: str) -> bool:
        with self._locked():
            entries = self.entries()
            if entries.pop(username, None) is None:
                return False
            self._write(entries)
            return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, entries: dict[str, str]) -> None:
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o600
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join(f"{user}:{hashed}\n" for user, hashed in entries.items()))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
