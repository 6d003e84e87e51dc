"""Ed25519 signature verification (RFC 8032, section 5.1.7), standard library only.

Why our own: the agent checks one signature per desired state on boards as small as a Pi Zero, and
every compiled crypto library costs megabytes of resident memory there and a wheel per architecture
on the card. Verification handles public data only (key, message, signature), so a variable-time
implementation leaks nothing; signing, which needs constant time, is the controller's and uses
`cryptography`.

Strict where RFC 8032 is strict: a key or R that is not a canonical point encoding, or S >= L, is
refused. The check is the cofactorless [S]B == R + [k]A, as in the RFC's reference code, computed as
[S]B - [k]A in one pass over both scalars.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
D2 = 2 * D % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T): x = X/Z, y = Y/Z, x*y = T/Z
IDENTITY: Point = (0, 1, 1, 0)


class BadSignature(ValueError):
    """The signature does not verify, or the key or signature is not a valid encoding."""


def _add(p: Point, q: Point) -> Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _double(p: Point) -> Point:
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return e * f % P, g * h % P, f * g % P, e * h % P


def _equal(p: Point, q: Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def decode_point(data: bytes) -> Point:
    if len(data) != 32:
        raise BadSignature(f"a point is 32 bytes, got {len(data)}")
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        raise BadSignature("point encoding is not canonical")
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if (v * x * x - u) % P:
        if (v * x * x + u) % P:
            raise BadSignature("not a point on the curve")
        x = x * SQRT_M1 % P
    if x == 0 and sign:
        raise BadSignature("point encoding is not canonical")
    if x & 1 != sign:
        x = P - x
    return x, y, 1, x * y % P


def encode_point(p: Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, -1, P)
    x, y = x * zi % P, y * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _base() -> Point:
    y = 4 * pow(5, -1, P) % P
    return decode_point(y.to_bytes(32, "little"))


B = _base()
_WINDOW = 4
_base_multiples: list[Point] | None = None  # 0..15 times B, made on first use (16 points, not a big table)


def _multiples(p: Point) -> list[Point]:
    out = [IDENTITY, p]
    for _ in range(2**_WINDOW - 2):
        out.append(_add(out[-1], p))
    return out


def _double_mul(s: int, k: int, p: Point) -> Point:
    """[s]B + [k]p with shared doublings (Straus): one pass over 4-bit windows of both scalars."""
    global _base_multiples
    if _base_multiples is None:
        _base_multiples = _multiples(B)
    b_table, p_table = _base_multiples, _multiples(p)
    acc = IDENTITY
    for shift in range(252, -_WINDOW, -_WINDOW):
        acc = _double(_double(_double(_double(acc))))
        if digit := (s >> shift) & 15:
            acc = _add(acc, b_table[digit])
        if digit := (k >> shift) & 15:
            acc = _add(acc, p_table[digit])
    return acc


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Return if `signature` is `public_key`'s signature of `message`; raise BadSignature otherwise."""
    if len(public_key) != 32:
        raise BadSignature(f"a public key is 32 bytes, got {len(public_key)}")
    if len(signature) != 64:
        raise BadSignature(f"a signature is 64 bytes, got {len(signature)}")
    a = decode_point(public_key)
    r = decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        raise BadSignature("signature's S is not below the group order")
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % L
    x, y, z, t = a
    minus_a = ((-x) % P, y, z, (-t) % P)
    if not _equal(_double_mul(s, k, minus_a), r):  # [S]B - [k]A == R  <=>  [S]B == R + [k]A
        raise BadSignature("signature does not verify")


__all__ = ["BadSignature", "decode_point", "encode_point", "verify"]
