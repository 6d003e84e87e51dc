"""A client of the controller's HTTP API (standard library only): what the CLI and the demo call.

Every failure is an ApiError carrying the HTTP status and the API's error code; a controller that
cannot be reached raises ControllerUnreachable (transient: try again).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ApiError(Exception):
    retryable = False

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ControllerUnreachable(ApiError):
    retryable = True


class ApiClient:
    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"ApiClient({self.url!r})"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                ctype = response.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            with exc:
                raise _error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControllerUnreachable(0, "unreachable", f"cannot reach the controller at {self.url} "
                                                          f"({reason}); is `tinyfleet controller` running?") from exc
        return json.loads(raw) if "json" in ctype else raw.decode()

    # -- devices --------------------------------------------------------------------------------

    def devices(self, selector: str | None = None) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/devices", query={"selector": selector})["devices"]

    def device(self, device_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/devices/{_seg(device_id)}")

    def tag(self, device_id: str, key: str, value: str) -> dict[str, Any]:
        return self.call("PUT", f"/v1/devices/{_seg(device_id)}/tags/{_seg(key)}", {"value": value})

    def untag(self, device_id: str, key: str) -> dict[str, Any]:
        return self.call("DELETE", f"/v1/devices/{_seg(device_id)}/tags/{_seg(key)}")

    def join(self, device_id: str, group: str) -> dict[str, Any]:
        return self.call("PUT", f"/v1/devices/{_seg(device_id)}/groups/{_seg(group)}")

    def leave(self, device_id: str, group: str) -> dict[str, Any]:
        return self.call("DELETE", f"/v1/devices/{_seg(device_id)}/groups/{_seg(group)}")

    def pin(self, device_id: str, app: str, release: int | str | None = None) -> dict[str, Any]:
        return self.call("PUT", f"/v1/devices/{_seg(device_id)}/pins/{_seg(app)}", {"release": release})

    def unpin(self, device_id: str, app: str) -> dict[str, Any]:
        return self.call("DELETE", f"/v1/devices/{_seg(device_id)}/pins/{_seg(app)}")

    def force_update(self, device_id: str, apps: list[str] | None = None) -> dict[str, Any]:
        return self.call("POST", f"/v1/devices/{_seg(device_id)}/update", {"force": True, "apps": apps or []})

    def groups(self) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/groups")["groups"]

    # -- releases -------------------------------------------------------------------------------

    def create_release(self, app: str, image: str, *, max_bytes: int | None = None, env: dict[str, str] | None = None,
                       health: dict[str, float] | None = None, lock_max_wait: float | None = None,
                       lock_endpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"app": app, "image": image, "max_bytes": max_bytes, "env": env or {}}
        if health:
            body["health"] = health
        if lock_max_wait is not None:
            body["lock_max_wait"] = lock_max_wait
        if lock_endpoint is not None:
            body["lock_endpoint"] = lock_endpoint
        return self.call("POST", "/v1/releases", body)

    def releases(self, app: str | None = None) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/releases", query={"app": app})["releases"]

    def release(self, release_id: int) -> dict[str, Any]:
        return self.call("GET", f"/v1/releases/{int(release_id)}")

    # -- rollouts -------------------------------------------------------------------------------

    def start_rollout(self, app: str, release: int | str, selector: str, **options: Any) -> dict[str, Any]:
        """options: canary, batch, max_failures, health_timeout, offline_deadline (see the API)."""
        body = {"app": app, "release": release, "selector": selector,
                **{k: v for k, v in options.items() if v is not None}}
        return self.call("POST", "/v1/rollouts", body)

    def rollouts(self, app: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/rollouts", query={"app": app, "limit": limit})["rollouts"]

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return self.call("GET", f"/v1/rollouts/{int(rollout_id)}")

    def pause(self, rollout_id: int) -> dict[str, Any]:
        return self.call("POST", f"/v1/rollouts/{int(rollout_id)}/pause")

    def resume(self, rollout_id: int) -> dict[str, Any]:
        return self.call("POST", f"/v1/rollouts/{int(rollout_id)}/resume")

    def wait_rollout(self, rollout_id: int, timeout: float = 600.0, interval: float = 0.5) -> dict[str, Any]:
        """Poll until the rollout settles (completed, or aborted with every revert done); returns it.
        Raises TimeoutError with the last state seen."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.rollout(rollout_id)
            if not r["open"]:
                return r
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout {rollout_id} still {r['state']} after {timeout:g}s: {r['counts']}")
            time.sleep(interval)

    def abort(self, rollout_id: int, rollback: bool = True) -> dict[str, Any]:
        return self.call("POST", f"/v1/rollouts/{int(rollout_id)}/abort", {"rollback": rollback})

    def metrics(self) -> str:
        return self.call("GET", "/metrics")


def _seg(text: str) -> str:
    return urllib.parse.quote(str(text), safe="")


def _error(status: int, raw: bytes) -> ApiError:
    try:
        err = json.loads(raw)["error"]
        return ApiError(status, str(err["code"]), str(err["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, "http_error", f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}")
