"""Releases: an app, an image pinned to its index digest, the per-platform sizes, and the spec the
agent gets (size budget, environment, health policy).

Creating one resolves the reference in the registry from manifests alone and refuses it, before any
device is touched, when a platform that devices in the fleet run is missing from the index or its
image is over the budget. With no device known yet, every platform in the index must fit the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tinyfleet.controller import errors
from tinyfleet.controller.fleet import check_app
from tinyfleet.controller.model import Release, ReleasePlatform
from tinyfleet.controller.store import Store
from tinyfleet.oci import errors as oe
from tinyfleet.oci import sizes
from tinyfleet.oci.platform import Platform, choose
from tinyfleet.oci.reference import ImageReference
from tinyfleet.oci.registry import RegistryClient
from tinyfleet.protocol.errors import ProtocolError
from tinyfleet.protocol.fields import Reader
from tinyfleet.protocol.messages import ENV_KEY_RE, HealthPolicy, LockEndpoint

MAX_ENV = 128


class Releases:
    def __init__(self, store: Store, registry: RegistryClient, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock

    def create(self, app: str, image: str, *, max_bytes: int | None = None, env: Mapping[str, str] | None = None,
               health: Mapping[str, Any] | None = None, lock_max_wait: float | None = None,
               lock_endpoint: Mapping[str, Any] | None = None) -> tuple[Release, bool]:
        """Resolve, check against the fleet, record. Returns (release, created); creating exactly the same
        release again returns the existing one."""
        app = check_app(app)
        try:
            ref = ImageReference.parse(image)
        except oe.ImageReferenceError as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                      or not 1 <= max_bytes <= 2**40):
            raise errors.InvalidRequest(f"max_bytes {max_bytes!r} must be a whole number of bytes from 1 to 2^40")
        if lock_max_wait is not None and (isinstance(lock_max_wait, bool) or not isinstance(lock_max_wait, int | float)
                                          or not 0 <= lock_max_wait <= 30 * 86400):
            raise errors.InvalidRequest(f"lock_max_wait {lock_max_wait!r} must be seconds from 0 to 30 days")
        endpoint = _policy(lock_endpoint, "lock_endpoint", LockEndpoint) if lock_endpoint is not None else None
        env_pairs = _env(env or {})
        policy = _health(health)
        resolved = self._resolve(ref)
        platforms = tuple(ReleasePlatform(str(p.platform), p.digest, p.compressed_size) for p in resolved.platforms)
        self._check_fleet(resolved, max_bytes)
        candidate = Release(id=0, app=app, image=resolved.reference.pinned(), source=str(ref),
                            version=ref.tag if ref.tag and not ref.digest else resolved.digest[7:19],
                            platforms=platforms, max_bytes=max_bytes, env=env_pairs, health=policy,
                            created_at=self.clock(),
                            lock_max_wait=float(lock_max_wait) if lock_max_wait is not None else None,
                            lock_endpoint=endpoint)
        with self.store.transaction():
            existing = self.store.same_release(candidate)
            if existing is not None:
                return existing, False
            return self.store.add_release(candidate), True

    def _resolve(self, ref: ImageReference) -> sizes.ResolvedImage:
        try:
            return sizes.resolve(self.registry, ref)
        except oe.TransportError as exc:
            raise errors.RegistryUnavailable(f"cannot reach the registry {ref.registry}: {exc}. No release was "
                                             "recorded; try again when the registry is back") from exc
        except oe.NotFound as exc:
            raise errors.ImageNotFound(str(exc)) from exc
        except oe.Unauthorized as exc:
            raise errors.RegistryFailed(str(exc)) from exc
        except (oe.DigestMismatch, oe.ManifestTooLarge) as exc:
            raise errors.RegistryFailed(str(exc)) from exc
        except oe.OciError as exc:  # not an image we understand: the same answer every time
            raise errors.ReleaseRefused(str(exc)) from exc

    def _check_fleet(self, resolved: sizes.ResolvedImage, max_bytes: int | None) -> None:
        fleet = {}
        for name, count in self.store.fleet_platforms().items():
            try:
                fleet[Platform.parse(name)] = count
            except ValueError:
                continue  # a device reported a platform we cannot parse; its agent will refuse by itself
        offered = ", ".join(str(p.platform) for p in resolved.platforms) or "nothing"
        missing = []
        chosen = []
        for board, count in sorted(fleet.items()):
            try:
                chosen.append((board, count, choose(board, ((p.platform, p) for p in resolved.platforms))))
            except oe.PlatformMissing:
                missing.append(f"{board} ({count} device{'s' if count != 1 else ''})")
        if missing:
            raise errors.PlatformMissing(f"{resolved.reference} has no image for {', '.join(missing)} in the fleet "
                                         f"(offered: {offered}); publish those platforms or the devices would "
                                         "refuse it")
        if max_bytes is None:
            return
        if not fleet:
            chosen = [(p.platform, 0, p) for p in resolved.platforms]
        over = [f"{image.platform} is {image.compressed_size} bytes" for _, _, image in chosen
                if image.compressed_size > max_bytes]
        if over:
            raise errors.OverBudget(f"{resolved.reference} is over the budget of {max_bytes} bytes: "
                                    f"{'; '.join(sorted(set(over)))} (compressed)")

    def get(self, release_id: int) -> Release:
        release = self.store.release(release_id)
        if release is None:
            raise errors.NotFound(f"no release {release_id}")
        return release

    def find(self, app: str, ref: str | int) -> Release:
        """A release of `app` by id, or by version (the tag it was created from; newest wins)."""
        app = check_app(app)
        text = str(ref).strip()
        release = self.store.release(int(text)) if text.isdigit() and len(text) < 19 else None
        if release is None or release.app != app:
            release = self.store.release_by_version(app, text) if text else None
        if release is None:
            raise errors.NotFound(f"app {app!r} has no release {text!r} (give its id or version; "
                                  "see `tinyfleet release list`)")
        return release

    def list(self, app: str | None = None) -> list[Release]:
        return self.store.releases(check_app(app) if app else None)


def _env(env: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(env, Mapping) or len(env) > MAX_ENV:
        raise errors.InvalidRequest(f"env must be an object of at most {MAX_ENV} NAME: value strings")
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_KEY_RE.fullmatch(key):
            raise errors.InvalidRequest(f"env name {key!r} must be letters, digits and '_', not starting with a digit")
        if not isinstance(value, str) or len(value) > 4096 or "\x00" in value:
            raise errors.InvalidRequest(f"env {key} must be a string of at most 4096 characters")
    return tuple(sorted(env.items()))


def _health(health: object) -> HealthPolicy | None:
    return None if health is None else _policy(health, "health", HealthPolicy)


def _policy(raw: object, path: str, kind: Any) -> Any:
    """A release's policy field read by the wire contract's own reader (same rules as on the board)."""
    try:
        reader = Reader(raw, path)
        policy = kind.read(reader)
        reader.done()
        return policy
    except ProtocolError as exc:
        raise errors.InvalidRequest(str(exc)) from exc

