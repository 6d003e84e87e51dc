"""The registry client over real HTTP to a scripted peer: auth flows, verification, typed errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.support.http_peer import Answer, serve
from tinyfleet.oci import errors as oe
from tinyfleet.oci import manifest as mf
from tinyfleet.oci import sizes
from tinyfleet.oci.platform import Platform
from tinyfleet.oci.reference import ImageReference
from tinyfleet.oci.registry import Credentials, RegistryClient


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def doc(obj: object) -> bytes:
    return json.dumps(obj).encode()


CONFIG = doc({"architecture": "arm", "os": "linux", "variant": "v7"})


def image_manifest(layer_sizes: list[int]) -> bytes:
    return doc({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                "config": {"mediaType": mf.OCI_CONFIG, "digest": digest(CONFIG), "size": len(CONFIG)},
                "layers": [{"mediaType": mf.OCI_LAYER_GZIP, "digest": "sha256:" + f"{i:064x}", "size": s}
                           for i, s in enumerate(layer_sizes)]})


V7 = image_manifest([1000, 500])
ARM64 = image_manifest([3000])
INDEX = doc({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [
    {"mediaType": mf.OCI_MANIFEST, "digest": digest(V7), "size": len(V7),
     "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    {"mediaType": mf.OCI_MANIFEST, "digest": digest(ARM64), "size": len(ARM64),
     "platform": {"os": "linux", "architecture": "arm64"}},
    {"mediaType": mf.OCI_MANIFEST, "digest": "sha256:" + "f" * 64, "size": 100,
     "platform": {"os": "unknown", "architecture": "unknown"}},  # an attestation: never a candidate
]})


def publish(peer, name: str = "demo") -> None:  # type: ignore[no-untyped-def]
    for body in (V7, ARM64, INDEX):
        peer.route("GET", f"/v2/{name}/manifests/{digest(body)}",
                   Answer(200, body, {"Content-Type": json.loads(body)["mediaType"]}))
    peer.route("GET", f"/v2/{name}/manifests/v1", Answer(200, INDEX, {"Content-Type": mf.OCI_INDEX}))
    peer.route("GET", f"/v2/{name}/blobs/{digest(CONFIG)}", Answer(200, CONFIG))


def test_resolves_sizes_per_platform_from_manifests_alone() -> None:
    with serve() as peer:
        publish(peer)
        resolved = sizes.resolve(RegistryClient(), ImageReference.parse(f"{peer.host}/demo:v1"))
        paths = [s.path for s in peer.seen]
    assert resolved.digest == digest(INDEX)
    got = {str(p.platform): (p.digest, p.compressed_size) for p in resolved.platforms}
    assert got == {"linux/arm/v7": (digest(V7), len(CONFIG) + 1500), "linux/arm64": (digest(ARM64), len(CONFIG) + 3000)}
    assert not [p for p in paths if "/blobs/" in p], "no blob may be fetched to size an index"


def test_select_fetches_only_the_boards_manifest_and_enforces_the_budget() -> None:
    with serve() as peer:
        publish(peer)
        client = RegistryClient()
        ref = ImageReference.parse(f"{peer.host}/demo@{digest(INDEX)}")
        chosen = sizes.select(client, ref, Platform.parse("linux/arm/v7"), budget=10_000)
        assert chosen.digest == digest(V7)
        assert len(peer.seen) == 2  # the index and the v7 manifest, nothing else
        with pytest.raises(oe.OverBudget, match="before pulling any layer") as caught:
            sizes.select(client, ref, Platform.parse("linux/arm64"), budget=2000)
        assert caught.value.size == len(CONFIG) + 3000
        with pytest.raises(oe.PlatformMissing, match="no image for linux/arm/v6"):
            sizes.select(client, ref, Platform.parse("linux/arm/v6"), budget=None)


def test_single_platform_manifest_takes_its_platform_from_the_config() -> None:
    with serve() as peer:
        publish(peer)
        resolved = sizes.resolve(RegistryClient(), ImageReference.parse(f"{peer.host}/demo@{digest(V7)}"))
    assert [str(p.platform) for p in resolved.platforms] == ["linux/arm/v7"]


def test_bytes_that_do_not_hash_to_the_pinned_digest_are_refused() -> None:
    with serve() as peer:
        wanted = digest(INDEX)
        peer.route("GET", f"/v2/demo/manifests/{wanted}", Answer(200, INDEX.replace(b"arm64", b"arm65")))
        with pytest.raises(oe.DigestMismatch, match="refusing it") as caught:
            RegistryClient().get_manifest(ImageReference.parse(f"{peer.host}/demo@{wanted}"))
    assert caught.value.expected == wanted and not caught.value.retryable


def test_a_child_manifest_that_does_not_match_the_index_is_refused() -> None:
    with serve() as peer:
        publish(peer)
        peer.route("GET", f"/v2/demo/manifests/{digest(V7)}", Answer(200, ARM64))
        with pytest.raises(oe.DigestMismatch):
            sizes.resolve(RegistryClient(), ImageReference.parse(f"{peer.host}/demo:v1"))


def test_oversized_manifest_is_refused_without_reading_it_all() -> None:
    with serve() as peer:
        peer.route("GET", "/v2/demo/manifests/big", Answer(200, b"{" + b" " * 70_000 + b"}"))
        with pytest.raises(oe.ManifestTooLarge):
            RegistryClient(max_manifest_bytes=65_536).get_manifest(ImageReference.parse(f"{peer.host}/demo:big"))


@pytest.mark.parametrize(("answer", "error", "words"), [
    (Answer(404), oe.NotFound, "not found"),
    (Answer(403), oe.Unauthorized, "check the credentials"),
    (Answer(503), oe.TransportError, "retried"),
    (Answer(429), oe.TransportError, "retried"),
    (Answer(200, b"not json"), oe.UnsupportedMediaType, "not JSON"),
    (Answer(200, doc({"schemaVersion": 1, "fsLayers": []})), oe.UnsupportedMediaType, "schema 1"),
    (Answer(200, doc({"schemaVersion": 2, "mediaType": "application/vnd.cncf.helm.config.v1+json"})),
     oe.UnsupportedMediaType, "neither an image index nor"),
    (Answer(200, doc({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [{"digest": "x"}]})),
     oe.UnsupportedMediaType, "not sha256"),
])
def test_registry_answers_become_typed_errors(answer: Answer, error: type, words: str) -> None:
    with serve() as peer:
        peer.route("GET", "/v2/demo/manifests/v1", answer)
        with pytest.raises(error, match=words):
            RegistryClient(attempts=2).get_manifest(ImageReference.parse(f"{peer.host}/demo:v1"))


def test_transient_errors_are_retried_then_succeed() -> None:
    calls = []

    def flaky(seen):  # type: ignore[no-untyped-def]
        calls.append(seen)
        return Answer(503) if len(calls) < 3 else Answer(200, INDEX, {"Content-Type": mf.OCI_INDEX})

    with serve() as peer:
        peer.route("GET", "/v2/demo/manifests/v1", flaky)
        index = RegistryClient(attempts=3).get_manifest(ImageReference.parse(f"{peer.host}/demo:v1"))
    assert isinstance(index, mf.Index) and len(calls) == 3


def test_unreachable_registry_is_a_transient_error() -> None:
    with serve() as peer:
        host = peer.host
    with pytest.raises(oe.TransportError, match="cannot reach") as caught:
        RegistryClient(attempts=1, timeout=2).get_manifest(ImageReference.parse(f"{host}/demo:v1"))
    assert caught.value.retryable


def test_basic_auth_is_answered_with_the_configured_credentials() -> None:
    with serve() as peer:
        publish(peer)
        peer.basic = ("ops", "s3cret")
        client = RegistryClient({peer.host: Credentials("ops", "s3cret")})
        assert isinstance(client.get_manifest(ImageReference.parse(f"{peer.host}/demo:v1")), mf.Index)
        with pytest.raises(oe.Unauthorized, match="username and password"):
            RegistryClient().get_manifest(ImageReference.parse(f"{peer.host}/demo:v1"))


def test_bearer_token_flow_with_and_without_credentials() -> None:
    with serve() as peer:
        publish(peer)
        peer.bearer = "tok-123"
        assert isinstance(RegistryClient().get_manifest(ImageReference.parse(f"{peer.host}/demo:v1")), mf.Index)
        token_requests = [s for s in peer.seen if s.path.startswith("/token")]
        assert token_requests and "scope=repository%3Ademo%3Apull" in token_requests[0].path
        peer.basic = ("ops", "s3cret")  # now the token service wants credentials
        with pytest.raises(oe.Unauthorized, match="token service refused"):
            RegistryClient().get_manifest(ImageReference.parse(f"{peer.host}/demo:v1"))
        client = RegistryClient({peer.host: Credentials("ops", "s3cret")})
        assert isinstance(client.get_manifest(ImageReference.parse(f"{peer.host}/demo:v1")), mf.Index)


def test_credentials_never_show_in_repr() -> None:
    assert "s3cret" not in repr(Credentials("ops", "s3cret"))


def test_non_loopback_registries_use_https() -> None:
    client = RegistryClient()
    assert client._base(ImageReference.parse("ghcr.io/a/b")) == "https://ghcr.io"
    assert client._base(ImageReference.parse("127.0.0.1:5000/a")) == "http://127.0.0.1:5000"
    assert RegistryClient(insecure_hosts=("10.0.0.5:5000",))._base(
        ImageReference.parse("10.0.0.5:5000/a")) == "http://10.0.0.5:5000"
