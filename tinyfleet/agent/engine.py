"""The Docker Engine adapter (docker SDK). Sees and touches only containers labelled as this
device's; turns every SDK and transport error into agent.errors at this edge."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests.exceptions
import structlog

from tinyfleet.agent import model
from tinyfleet.agent.errors import ContainerRefused, EngineUnavailable, ImageRefused, ImageVanished, RegistryUnavailable
from tinyfleet.agent.model import ContainerView, Observed
from tinyfleet.oci.platform import Platform
from tinyfleet.oci.registry import Credentials
from tinyfleet.protocol import AppSpec, RestartPolicy

log = structlog.get_logger("agent.engine")
STOP_TIMEOUT_S = 10
# What a failed pull says when the registry (not the image) is the problem: worth retrying.
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "timeout", "connection reset",
                "tls handshake", "service unavailable", "too many requests", "temporary failure", "eof")


def _time(text: str | None) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(main + "+00:00").timestamp()
    return stamp + float(f"0.{frac[:6]}") if frac else stamp


def _address(info: dict[str, Any]) -> str | None:
    """The container's address as this host reaches it (an app's update-lock endpoint, agent.locks)."""
    if (info.get("HostConfig") or {}).get("NetworkMode") == "host":
        return "127.0.0.1"
    net = info.get("NetworkSettings") or {}
    found = [net.get("IPAddress")] + [n.get("IPAddress") for n in (net.get("Networks") or {}).values()]
    return next((a for a in found if a), None)


@contextlib.contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Connection-level trouble is transient; the caller maps API refusals itself."""
    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise EngineUnavailable(f"docker engine not reachable during {what}: {exc}") from exc
    except docker.errors.DockerException as exc:
        if isinstance(exc, docker.errors.APIError):
            raise
        raise EngineUnavailable(f"docker engine not usable during {what}: {exc}") from exc


class DockerEngine:
    def __init__(self, base_url: str, *, timeout: int = 60, pull_timeout: int = 1800,
                 registry_auth: dict[str, Credentials] | None = None) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.pull_timeout = pull_timeout
        self.registry_auth = registry_auth or {}
        self._api: docker.APIClient | None = None
        self._root_dir: str | None = None

    @property
    def api(self) -> docker.APIClient:
        # Created lazily: the SDK asks the engine for its API version on construction, and the agent must
        # start (and report) even while the engine is down.
        if self._api is None:
            with _engine_errors("connect"):
                self._api = docker.APIClient(base_url=self.base_url, timeout=self.timeout)
        return self._api

    def _reset(self) -> None:
        self._api = None

    # -- reading --------------------------------------------------------------------------------

    def observe(self, device_id: str) -> Observed:
        try:
            with _engine_errors("observe"):
                listed = self.api.containers(all=True, filters={"label": [
                    f"{model.LABEL_OWNER}={model.OWNER}", f"{model.LABEL_DEVICE}={device_id}"]})
                views = []
                for entry in listed:
                    try:
                        views.append(self._view(self.api.inspect_container(entry["Id"])))
                    except docker.errors.NotFound:
                        continue  # removed between list and inspect
                images = set()
                for image in self.api.images():
                    images.update(image.get("RepoDigests") or ())
        except EngineUnavailable:
            self._reset()
            raise
        except docker.errors.APIError as exc:
            raise EngineUnavailable(f"docker engine failed to list containers: {exc.explanation}") from exc
        return Observed(tuple(sorted(views, key=lambda v: v.name)), frozenset(images))

    def _view(self, info: dict[str, Any]) -> ContainerView:
        labels = info["Config"]["Labels"] or {}
        state = info["State"]
        return ContainerView(
            id=info["Id"], name=info["Name"].lstrip("/"), app=labels.get(model.LABEL_APP, ""),
            spec_hash=labels.get(model.LABEL_SPEC_HASH, ""), image=labels.get(model.LABEL_IMAGE, ""),
            pull_ref=labels.get(model.LABEL_PULL_REF, ""), generation=int(labels.get(model.LABEL_GENERATION) or 0),
            created_at=float(labels.get(model.LABEL_CREATED) or _time(info.get("Created")) or 0),
            state=state.get("Status", "unknown"), health=(state.get("Health") or {}).get("Status", "none"),
            restart_count=int(info.get("RestartCount") or 0),
            started_at=_time(state.get("StartedAt")) if state.get("Status") != "created" else None,
            exit_code=state.get("ExitCode"), address=_address(info))

    def disk_free(self) -> int | None:
        try:
            if self._root_dir is None:
                with _engine_errors("info"):
                    self._root_dir = self.api.info().get("DockerRootDir") or ""
            if self._root_dir and os.path.exists(self._root_dir):
                st = os.statvfs(self._root_dir)
                return st.f_bavail * st.f_frsize
        except (docker.errors.APIError, OSError):
            return None
        return None

    def ping(self) -> bool:
        try:
            with _engine_errors("ping"):
                return bool(self.api.ping())
        except (EngineUnavailable, docker.errors.APIError):
            self._reset()
            return False

    # -- images ---------------------------------------------------------------------------------

    def pull(self, pull_ref: str, platform: Platform) -> None:
        repo, digest = pull_ref.rsplit("@", 1)
        host = repo.split("/", 1)[0]
        creds = self.registry_auth.get(host)
        auth = {"username": creds.username, "password": creds.password} if creds else None
        try:
            with _engine_errors("pull"):
                # a client with the long timeout a pull needs, without asking the engine its version again
                api = docker.APIClient(base_url=self.base_url, timeout=self.pull_timeout, version=self.api.api_version)
                try:
                    for event in api.pull(repo, tag=digest, stream=True, decode=True, auth_config=auth):
                        if "error" in event:
                            self._pull_failed(pull_ref, str(event.get("error")))
                finally:
                    api.close()
                info = self.api.inspect_image(pull_ref)
        except docker.errors.APIError as exc:
            self._pull_failed(pull_ref, str(exc.explanation or exc))
        got = Platform.normalize(info.get("Os", ""), info.get("Architecture", ""), info.get("Variant"))
        if pull_ref not in (info.get("RepoDigests") or []):
            raise ImageRefused(f"engine holds {info.get('RepoDigests')} after pulling {pull_ref}; refusing it")
        if got != platform:
            self.remove_image(pull_ref)
            raise ImageRefused(f"{pull_ref} turned out to be {got}, not {platform}; the index is mislabelled")
        log.info("pulled", ref=pull_ref, platform=str(got), size=info.get("Size"))

    @staticmethod
    def _pull_failed(pull_ref: str, message: str) -> None:
        lowered = message.lower()
        if any(marker in lowered for marker in _UNREACHABLE):
            raise RegistryUnavailable(f"pulling {pull_ref}: {message}")
        raise ImageRefused(f"pulling {pull_ref}: {message}")

    def remove_image(self, pull_ref: str) -> None:
        try:
            with _engine_errors("remove image"):
                self.api.remove_image(pull_ref)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # in use, perhaps by another device's container: keep it
                return
            raise EngineUnavailable(f"removing image {pull_ref}: {exc.explanation}") from exc

    # -- containers -----------------------------------------------------------------------------

    def create(self, name: str, spec: AppSpec, pull_ref: str, labels: dict[str, str],
               binds: dict[str, str] | None = None) -> str:
        restart = {"Name": spec.restart.value} if spec.restart != RestartPolicy.NO else None
        host_config = self.api.create_host_config(
            restart_policy=restart,
            binds={host: {"bind": inside, "mode": "rw"} for host, inside in (binds or {}).items()} or None,
            port_bindings={f"{p.container_port}/{p.protocol}": (p.host_ip, p.host_port) for p in spec.ports} or None,
            mem_limit=spec.limits.memory_bytes, nano_cpus=int(spec.limits.cpus * 1e9) if spec.limits.cpus else None,
            # SD cards wear out and fill up: keep container logs small.
            log_config={"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}},
            security_opt=["no-new-privileges"])
        try:
            with _engine_errors("create"):
                created = self.api.create_container(
                    image=pull_ref, name=name, command=list(spec.command) if spec.command is not None else None,
                    environment=dict(spec.env), labels=labels, host_config=host_config,
                    ports=[(p.container_port, p.protocol) for p in spec.ports] or None)
                return str(created["Id"])
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return self._existing(name, labels, exc)
            if exc.status_code == 404:  # the image went away (pruned by another agent on a shared engine)
                raise ImageVanished(f"image {pull_ref} vanished before {name} was created; pulling again") from exc
            raise ContainerRefused(f"engine refused to create {name}: {exc.explanation}") from exc

    def _existing(self, name: str, labels: dict[str, str], exc: Exception) -> str:
        """A name conflict: reuse the container if an earlier, unfinished create made it for this spec."""
        try:
            with _engine_errors("inspect"):
                info = self.api.inspect_container(name)
        except docker.errors.APIError as inspect_exc:
            raise ContainerRefused(f"container name {name} is taken and cannot be inspected") from inspect_exc
        theirs = info["Config"]["Labels"] or {}
        if all(theirs.get(k) == labels[k] for k in (model.LABEL_DEVICE, model.LABEL_APP, model.LABEL_SPEC_HASH)):
            return str(info["Id"])
        raise ContainerRefused(f"container name {name} is taken by a container tinyfleet does not own") from exc

    def _container_call(self, what: str, container_id: str, call: Any, **kwargs: Any) -> None:
        try:
            with _engine_errors(what):
                call(container_id, **kwargs)
        except docker.errors.NotFound:
            if what != "remove":
                raise ContainerRefused(f"container {container_id[:12]} vanished before {what}") from None
        except docker.errors.APIError as exc:
            raise ContainerRefused(f"engine refused to {what} {container_id[:12]}: {exc.explanation}") from exc

    def start(self, container_id: str) -> None:
        self._container_call("start", container_id, self.api.start)

    def stop(self, container_id: str) -> None:
        self._container_call("stop", container_id, self.api.stop, timeout=STOP_TIMEOUT_S)

    def restart(self, container_id: str) -> None:
        self._container_call("restart", container_id, self.api.restart, timeout=STOP_TIMEOUT_S)

    def remove(self, container_id: str) -> None:
        """Graceful: SIGTERM and a grace period first, then remove."""
        with contextlib.suppress(ContainerRefused):
            self._container_call("stop", container_id, self.api.stop, timeout=STOP_TIMEOUT_S)
        self._container_call("remove", container_id, self.api.remove_container, force=True)
