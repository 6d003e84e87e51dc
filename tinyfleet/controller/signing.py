"""The controller's signing key: every desired state leaves signed by it.

Beside the database, owner-only:

    signing-key          Ed25519 private key (PKCS#8 PEM), 0600; created on first start
    signing-key.pub      ed25519:<base64>: what boards trust (`controller_key` in agent.toml,
                         `tinyfleet provision ... --controller-key`)
    signing-key.chain    JSON list of endorsements, oldest first, once the key has been rotated

`rotate()` makes a new key, has the current one endorse it, appends that to the chain and destroys the
old private key; the controller must be restarted to sign with the new key. Boards that still trust an
older key follow the chain (protocol.signing) and move to the new key with the first document they accept.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinyfleet.controller.private import owner_only, write_private
from tinyfleet.protocol.messages import DesiredState, Endorsement, Signature
from tinyfleet.protocol.signing import PublicKey, desired_message, endorsement_message

log = structlog.get_logger("controller.signing")
KEY_FILE = "signing-key"


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey
    public: PublicKey
    chain: tuple[Endorsement, ...] = ()

    @classmethod
    def generate(cls) -> Signer:
        """A key held in memory only (tests, the fleet simulator's peers)."""
        private = Ed25519PrivateKey.generate()
        return cls(private, _public(private))

    def sign_bytes(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode()

    def sign(self, desired: DesiredState) -> Signature:
        return Signature("ed25519", self.public.key_id, self.sign_bytes(desired_message(desired.to_dict())),
                         self.chain)

    def endorse(self, new: PublicKey) -> Endorsement:
        return Endorsement(str(new), self.public.key_id, self.sign_bytes(endorsement_message(new)))


def _public(private: Ed25519PrivateKey) -> PublicKey:
    return PublicKey(private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _paths(directory: Path) -> tuple[Path, Path, Path]:
    return directory / KEY_FILE, directory / f"{KEY_FILE}.pub", directory / f"{KEY_FILE}.chain"


def _write(directory: Path, signer: Signer) -> None:
    key_path, pub_path, chain_path = _paths(directory)
    pem = signer.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    write_private(key_path, pem.decode())
    write_private(pub_path, f"{signer.public}\n")
    write_private(chain_path, json.dumps([e.to_dict() for e in signer.chain], indent=1) + "\n")


def load_or_create(directory: Path) -> Signer:
    key_path, pub_path, chain_path = _paths(directory)
    if not key_path.exists():
        signer = Signer.generate()
        _write(directory, signer)
        log.info("generated the signing key for desired states", public_key_file=str(pub_path),
                 key_id=signer.public.key_id)
        return signer
    owner_only(key_path, "signing key")
    try:
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        chain_doc = json.loads(chain_path.read_text()) if chain_path.exists() else []
        chain = tuple(Endorsement(str(e["key"]), str(e["by"]), str(e["value"])) for e in chain_doc)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{key_path} (or its .chain) cannot be read: {exc}; restore it from a backup - a new "
                         "key would not be trusted by the fleet") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{key_path} is not an Ed25519 key")
    signer = Signer(private, _public(private), chain)
    if chain and chain[-1].key != str(signer.public):
        raise ValueError(f"{chain_path} does not end at the key in {key_path}")
    if not pub_path.exists() or pub_path.read_text().strip() != str(signer.public):
        write_private(pub_path, f"{signer.public}\n")
    return signer


def rotate(directory: Path) -> Signer:
    """A new key endorsed by the current one; the current private key is destroyed."""
    current = load_or_create(directory)
    new_private = Ed25519PrivateKey.generate()
    new_public = _public(new_private)
    rotated = Signer(new_private, new_public, (*current.chain, current.endorse(new_public)))
    _write(directory, rotated)
    log.info("rotated the signing key; restart the controller to sign with it", old_key_id=current.public.key_id,
             new_key_id=new_public.key_id)
    return rotated
