"""Registry v2 client (the adapter for registries): standard library HTTP, anonymous, basic and
bearer-token auth, digest-verified manifests, blob and manifest uploads for the packer.

Every exception leaving this module is an oci.errors.RegistryError; see that module for what the
caller should do with each. Plain http is used only for loopback registries or hosts the caller
lists in `insecure_hosts`; everything else is https.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from tinyfleet.oci import manifest as mf
from tinyfleet.oci.errors import (
    DigestMismatch,
    ManifestTooLarge,
    NotFound,
    RegistryError,
    TransportError,
    Unauthorized,
)
from tinyfleet.oci.reference import ImageReference

log = structlog.get_logger("oci.registry")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line or a traceback
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class Fetched:
    digest: str
    media_type: str | None
    data: bytes


class _Response:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class RegistryClient:
    def __init__(self, credentials: Mapping[str, Credentials] | None = None, *,
                 insecure_hosts: tuple[str, ...] = (), timeout: float = 30.0, attempts: int = 3,
                 max_manifest_bytes: int = MAX_MANIFEST_BYTES) -> None:
        self._credentials = dict(credentials or {})
        self._insecure = set(insecure_hosts)
        self._timeout = timeout
        self._attempts = attempts
        self._max_manifest = max_manifest_bytes
        self._tokens: dict[tuple[str, str], str] = {}
        self._opener = urllib.request.build_opener(_NoRedirectOnWrite)

    # -- reading --------------------------------------------------------------------------------

    def get_manifest(self, ref: ImageReference) -> mf.Index | mf.ImageManifest:
        """Fetch the index or manifest `ref` names. When `ref` is pinned, the bytes must hash to its
        digest (DigestMismatch otherwise); when it names a tag, the digest is computed here."""
        fetched = self.fetch_manifest(ref)
        return mf.parse(fetched.data, fetched.digest, fetched.media_type, str(ref))

    def fetch_manifest(self, ref: ImageReference) -> Fetched:
        resp = self._call("GET", ref, f"manifests/{ref.reference}", {"Accept": mf.ACCEPT},
                          limit=self._max_manifest)
        digest = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(str(ref), ref.digest, digest)
        return Fetched(digest, resp.headers.get("content-type"), resp.body)

    def get_blob(self, ref: ImageReference, digest: str, *, limit: int = MAX_CONFIG_BYTES) -> bytes:
        """Fetch a small blob (an image config) and verify it; never used for layers."""
        resp = self._call("GET", ref, f"blobs/{digest}", {}, limit=limit)
        actual = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        if actual != digest:
            raise DigestMismatch(f"{ref.name} blob", digest, actual)
        return resp.body

    def blob_exists(self, ref: ImageReference, digest: str) -> bool:
        try:
            self._call("HEAD", ref, f"blobs/{digest}", {}, limit=0)
        except NotFound:
            return False
        return True

    # -- writing (the packer) -------------------------------------------------------------------

    def push_blob(self, ref: ImageReference, data: bytes, digest: str | None = None) -> str:
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        if self.blob_exists(ref, digest):
            return digest
        start = self._call("POST", ref, "blobs/uploads/", {"Content-Length": "0"}, body=b"", push=True,
                           expect=(202,))
        location = start.headers.get("location")
        if not location:
            raise RegistryError(f"{ref.name}: registry started an upload without a Location header")
        url = urllib.parse.urljoin(self._base(ref), location)
        sep = "&" if "?" in url else "?"
        self._call("PUT", ref, None, {"Content-Type": "application/octet-stream",
                                      "Content-Length": str(len(data))},
                   body=data, push=True, url=f"{url}{sep}digest={urllib.parse.quote(digest)}", expect=(201,))
        return digest

    def push_manifest(self, ref: ImageReference, data: bytes, media_type: str, reference: str) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        resp = self._call("PUT", ref, f"manifests/{reference}", {"Content-Type": media_type}, body=data,
                          push=True, expect=(201,))
        echoed = resp.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise DigestMismatch(f"{ref.name}:{reference}", digest, echoed)
        return digest

    # -- plumbing -------------------------------------------------------------------------------

    def _base(self, ref: ImageReference) -> str:
        plain = ref.is_loopback or ref.registry in self._insecure
        return f"{'http' if plain else 'https'}://{ref.api_host}"

    def _call(self, method: str, ref: ImageReference, path: str | None, headers: dict[str, str], *,
              limit: int = 64 * 1024, body: bytes | None = None, push: bool = False, url: str | None = None,
              expect: tuple[int, ...] = (200,)) -> _Response:
        url = url or f"{self._base(ref)}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        retry = Retrying(retry=retry_if_exception_type(TransportError), reraise=True,
                         stop=stop_after_attempt(self._attempts),
                         wait=wait_exponential(multiplier=0.2, max=5) + wait_random(0, 0.2))
        for attempt in retry:
            with attempt:
                resp = self._send(method, url, ref, scope, headers, body, limit)
                if resp.status == 401:
                    self._authenticate(ref, scope, resp.headers.get("www-authenticate", ""))
                    resp = self._send(method, url, ref, scope, headers, body, limit)
                return self._check(resp, method, ref, path or "upload", expect)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, resp: _Response, method: str, ref: ImageReference, what: str,
               expect: tuple[int, ...]) -> _Response:
        status = resp.status
        if status in expect or (method == "HEAD" and status == 200):
            return resp
        where = f"{ref.name} {what}"
        if status == 413:
            raise ManifestTooLarge(f"{where}: larger than the size cap; refusing to read it")
        if status == 404:
            raise NotFound(f"{where}: not found in the registry (check the repository, tag or digest)")
        if status in (401, 403):
            raise Unauthorized(f"{where}: registry refused access ({status}); check the credentials "
                               f"configured for {ref.registry}")
        if status == 429 or status >= 500:
            raise TransportError(f"{where}: registry answered {status}; it will be retried")
        detail = resp.body[:300].decode("utf-8", "replace")
        raise RegistryError(f"{where}: unexpected HTTP {status} for {method}: {detail}")

    def _send(self, method: str, url: str, ref: ImageReference, scope: str, headers: dict[str, str],
              body: bytes | None, limit: int) -> _Response:
        headers = dict(headers)
        auth = self._tokens.get((ref.api_host, scope))
        if auth:
            headers["Authorization"] = auth
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout) as raw:
                return self._read(raw.status, raw.headers, raw, limit)
        except urllib.error.HTTPError as exc:
            with exc:
                return self._read(exc.code, exc.headers, exc, 64 * 1024)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            reason = getattr(exc, "reason", exc)
            raise TransportError(f"{ref.registry}: cannot reach the registry ({reason}); it will be "
                                 "retried") from exc

    def _read(self, status: int, headers: object, stream: object, limit: int) -> _Response:
        lowered = {k.lower(): v for k, v in headers.items()}  # type: ignore[attr-defined]
        length = lowered.get("content-length")
        if limit and length and length.isdigit() and int(length) > limit:
            return _Response(413, lowered, b"")
        try:
            data = stream.read(limit + 1) if limit else b""  # type: ignore[attr-defined]
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"registry connection broke while reading: {exc}") from exc
        if limit and len(data) > limit:
            return _Response(413, lowered, b"")
        return _Response(status, lowered, data)

    def _authenticate(self, ref: ImageReference, scope: str, challenge: str) -> None:
        scheme, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        creds = self._credentials.get(ref.registry) or self._credentials.get(ref.api_host)
        if scheme.lower() == "basic":
            if not creds:
                raise Unauthorized(f"{ref.registry} wants a username and password; none are configured")
            self._tokens[(ref.api_host, scope)] = "Basic " + _basic(creds)
            return
        if scheme.lower() != "bearer" or "realm" not in params:
            raise Unauthorized(f"{ref.registry}: unsupported auth challenge {scheme!r}")
        query = {"service": params.get("service", ""), "scope": scope}
        token_url = params["realm"] + "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
        headers = {"Authorization": "Basic " + _basic(creds)} if creds else {}
        try:
            with self._opener.open(urllib.request.Request(token_url, headers=headers),
                                   timeout=self._timeout) as raw:
                doc = json.loads(raw.read(256 * 1024))
        except urllib.error.HTTPError as exc:
            raise Unauthorized(f"{ref.registry}: token service refused ({exc.code}); check credentials") from exc
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise TransportError(f"{ref.registry}: token service unreachable ({exc})") from exc
        except ValueError as exc:
            raise Unauthorized(f"{ref.registry}: token service sent something that is not JSON") from exc
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise Unauthorized(f"{ref.registry}: token service answered without a token")
        self._tokens[(ref.api_host, scope)] = f"Bearer {token}"


def _basic(creds: Credentials) -> str:
    return base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


class _NoRedirectOnWrite(urllib.request.HTTPRedirectHandler):
    """Follow redirects for reads only, and drop Authorization when the redirect leaves the host
    (blob storage behind a registry must not receive the registry's token)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if req.get_method() not in ("GET", "HEAD"):
            return None
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new
