"""The board's Ed25519 verifier: RFC 8032's test vectors, agreement with `cryptography` on random keys
and messages, and refusal of every malformed or non-canonical input."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinyfleet.protocol import ed25519

RFC8032 = [  # (public key, message, signature): section 7.1, tests 1-3
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe2465"
     "5141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb0"
     "0d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc0"
     "27beceea1ec40a"),
]


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize(("public", "message", "signature"), RFC8032)
def test_rfc8032_vectors_verify(public: str, message: str, signature: str) -> None:
    ed25519.verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))


def test_agrees_with_cryptography_and_refuses_any_flipped_bit() -> None:
    for n in range(64):
        key = Ed25519PrivateKey.generate()
        message = os.urandom(n * 7)
        signature = key.sign(message)
        ed25519.verify(raw_public(key), message, signature)
        flipped = bytearray(signature)
        flipped[n] ^= 1 << (n % 8)
        with pytest.raises(ed25519.BadSignature):
            ed25519.verify(raw_public(key), message, bytes(flipped))
        with pytest.raises(ed25519.BadSignature):
            ed25519.verify(raw_public(key), message + b"!", signature)
        with pytest.raises(ed25519.BadSignature):
            ed25519.verify(raw_public(Ed25519PrivateKey.generate()), message, signature)


def test_encoding_round_trips() -> None:
    key = raw_public(Ed25519PrivateKey.generate())
    assert ed25519.encode_point(ed25519.decode_point(key)) == key


PUBLIC, MESSAGE, SIGNATURE = (bytes.fromhex(x) for x in RFC8032[1])
P_BYTES = ed25519.P.to_bytes(32, "little")  # y = p: not canonical
S_TOO_BIG = SIGNATURE[:32] + (int.from_bytes(SIGNATURE[32:], "little") + ed25519.L).to_bytes(32, "little")


@pytest.mark.parametrize(("public", "signature", "problem"), [
    (PUBLIC[:31], SIGNATURE, "a public key is 32 bytes"),
    (PUBLIC, SIGNATURE[:63], "a signature is 64 bytes"),
    (P_BYTES, SIGNATURE, "not canonical"),
    (PUBLIC, P_BYTES + SIGNATURE[32:], "not canonical"),
    ((2).to_bytes(32, "little"), SIGNATURE, "not a point on the curve"),
    (PUBLIC, S_TOO_BIG, "not below the group order"),  # the malleable twin of a valid signature
    ((1 | 1 << 255).to_bytes(32, "little"), SIGNATURE, "not canonical"),  # x = 0 (y = 1) with the sign bit set
])
def test_malformed_keys_and_signatures_are_refused(public: bytes, signature: bytes, problem: str) -> None:
    with pytest.raises(ed25519.BadSignature, match=problem):
        ed25519.verify(public, MESSAGE, signature)
