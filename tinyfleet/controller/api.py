"""The controller's HTTP JSON API (FastAPI) and /metrics.

Every route but /healthz needs `Authorization: Bearer <token>` or the dashboard's cookie (controller/websession.py;
the dashboard's pages are controller/dashboard.py). Errors always have one shape,
`{"error": {"code": ..., "message": ...}}`, with a 4xx for anything the caller can fix: 400 bad input,
401 token, 403 a cookie-borne change from another origin, 404 unknown device/release/rollout, 409 not now,
413 body too large, 422 release refused, and 502/503 when the registry fails us. Bodies are strict: unknown
fields and wrong types are refused.

    GET    /healthz                                  liveness (no token)
    GET    /metrics                                  Prometheus text format
    GET    /v1/devices[?selector=SEL]                fleet list
    GET    /v1/devices/{id}                          one device with its last status, health, report, desired
    PUT    /v1/devices/{id}/tags/{key}    {"value"}  tag
    DELETE /v1/devices/{id}/tags/{key}
    PUT    /v1/devices/{id}/groups/{name}            join a group
    DELETE /v1/devices/{id}/groups/{name}
    PUT    /v1/devices/{id}/pins/{app}    {"release": id|version|null}   app "*" holds the whole device
    DELETE /v1/devices/{id}/pins/{app}
    POST   /v1/devices/{id}/update        {"force": true, "apps"?: [APP...]}   update now, whatever the apps' locks say
    GET    /v1/groups
    GET    /v1/releases[?app=APP]
    POST   /v1/releases                   {"app", "image", "max_bytes"?, "env"?, "health"?, "lock_max_wait"?,
                                           "lock_endpoint"?: {"port", "path"?}}
    GET    /v1/releases/{id}
    GET    /v1/rollouts[?app=APP&limit=N]
    POST   /v1/rollouts                   {"app", "release", "selector", "canary"?, "batch"?, "max_failures"?,
                                           "health_timeout"?, "offline_deadline"?}
    GET    /v1/rollouts/{id}
    POST   /v1/rollouts/{id}/pause | /resume | /abort {"rollback"?}
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinyfleet.controller import dashboard, errors, websession
from tinyfleet.controller.engine import Engine
from tinyfleet.controller.fleet import Fleet
from tinyfleet.controller.metrics import Metrics
from tinyfleet.controller.releases import Releases

log = structlog.get_logger("controller.api")
MAX_BODY_BYTES = 64 * 1024
_TYPE_TAGS = {"int", "str", "float", "bool", "none", "dict", "list"}


@dataclass(frozen=True)
class ApiContext:
    fleet: Fleet
    releases: Releases
    engine: Engine
    metrics: Metrics
    token: str
    token_hint: str = "the controller's token file"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TagBody(_Body):
    value: str


class PinBody(_Body):
    release: int | str | None = None


class ReleaseBody(_Body):
    app: str
    image: str
    max_bytes: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    health: dict[str, Any] | None = None
    lock_max_wait: float | int | None = None  # seconds an app's update lock may hold the release back
    lock_endpoint: dict[str, Any] | None = None  # {"port", "path"?}: the app answers its lock over HTTP (1.4)


class RolloutBody(_Body):
    app: str
    release: int | str
    selector: str
    canary: int = 1
    batch: int | str = "25%"
    max_failures: int | str = 0
    health_timeout: float = 300.0
    offline_deadline: float = 3600.0


class UpdateBody(_Body):
    force: bool
    apps: list[str] = Field(default_factory=list)  # empty: every app of the device


class AbortBody(_Body):
    rollback: bool = True


def _json(content: Any, status: int = 200) -> JSONResponse:
    """Our records come JSON-ready (to_dict): straight to json.dumps. Returned as a plain dict, FastAPI
    would first walk every value through jsonable_encoder - 50 ms of the controller's CPU for a rollout
    of a thousand targets, on every poll of `rollout status --watch`."""
    return JSONResponse(content, status_code=status)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class LimitBody:
    """Refuse request bodies over the limit, whether announced by Content-Length or streamed: the body
    is read here first (it is small by construction) and handed on only when it fits."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _error(413, "too_large", f"request body is over the {self.limit}-byte limit")
        length = dict(scope.get("headers", ())).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def create_app(ctx: ApiContext) -> LimitBody:
    """The ASGI application: FastAPI behind the body-size guard."""
    app = FastAPI(title="tinyfleet controller", version="1", docs_url=None, redoc_url=None, openapi_url=None)

    def authorised(request: Request) -> None:
        websession.check(request, ctx.token, ctx.token_hint)  # the bearer header, or the dashboard's cookie

    @app.exception_handler(errors.ControllerError)
    async def controller_error(request: Request, exc: errors.ControllerError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            where = loc.pop(0) if loc and loc[0] in ("path", "query", "body") else ""
            # pydantic names the variant a value failed to match (`release.int`): not part of the field
            field = ".".join(itertools.takewhile(lambda p: p not in _TYPE_TAGS and "[" not in p, loc)) or where
            text = f"{where + ' ' if where in ('path', 'query') else ''}{field}: {e.get('msg', 'is invalid')}"
            if text not in problems:
                problems.append(text)
        return _error(400, "invalid_request", "; ".join(problems[:5]) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("API request failed", method=request.method, path=request.url.path, exc_info=exc)
        return _error(500, "internal", "internal error; the controller's log has the details")

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        ctx.metrics.api_requests.labels(request.method, route, str(response.status_code)).inc()
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    api = APIRouter(dependencies=[Depends(authorised)])

    @api.get("/metrics")
    def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/v1/devices")
    def devices(selector: str | None = None) -> JSONResponse:
        return _json({"devices": ctx.fleet.list(selector)})

    @api.get("/v1/devices/{device_id}")
    def device(device_id: str) -> JSONResponse:
        return _json(ctx.fleet.detail(device_id))

    @api.put("/v1/devices/{device_id}/tags/{key}")
    def tag(device_id: str, key: str, body: TagBody) -> JSONResponse:
        return _json(ctx.fleet.summary(ctx.fleet.tag(device_id, key, body.value)))

    @api.delete("/v1/devices/{device_id}/tags/{key}")
    def untag(device_id: str, key: str) -> JSONResponse:
        return _json(ctx.fleet.summary(ctx.fleet.untag(device_id, key)))

    @api.put("/v1/devices/{device_id}/groups/{group}")
    def join(device_id: str, group: str) -> JSONResponse:
        return _json(ctx.fleet.summary(ctx.fleet.join(device_id, group)))

    @api.delete("/v1/devices/{device_id}/groups/{group}")
    def leave(device_id: str, group: str) -> JSONResponse:
        return _json(ctx.fleet.summary(ctx.fleet.leave(device_id, group)))

    @api.put("/v1/devices/{device_id}/pins/{app_name}")
    def pin(device_id: str, app_name: str, body: PinBody) -> JSONResponse:
        release = None if body.release is None else ctx.releases.find(app_name, body.release).id
        return _json(ctx.fleet.summary(ctx.fleet.pin(device_id, app_name, release)))

    @api.delete("/v1/devices/{device_id}/pins/{app_name}")
    def unpin(device_id: str, app_name: str) -> JSONResponse:
        return _json(ctx.fleet.summary(ctx.fleet.unpin(device_id, app_name)))

    @api.post("/v1/devices/{device_id}/update")
    def update(device_id: str, body: UpdateBody) -> JSONResponse:
        if not body.force:
            raise errors.InvalidRequest("a device updates by itself; only {\"force\": true} is asked for here")
        return _json(ctx.engine.force_update(device_id, body.apps))

    @api.get("/v1/groups")
    def groups() -> JSONResponse:
        return _json({"groups": ctx.fleet.groups()})

    @api.get("/v1/releases")
    def releases(app: str | None = None) -> JSONResponse:
        return _json({"releases": [r.to_dict() for r in ctx.releases.list(app)]})

    @api.post("/v1/releases", status_code=201)
    def create_release(body: ReleaseBody) -> JSONResponse:
        release, created = ctx.releases.create(body.app, body.image, max_bytes=body.max_bytes, env=body.env,
                                               health=body.health, lock_max_wait=body.lock_max_wait,
                                               lock_endpoint=body.lock_endpoint)
        return _json(release.to_dict(), 201 if created else 200)

    @api.get("/v1/releases/{release_id}")
    def release(release_id: int) -> JSONResponse:
        return _json(ctx.releases.get(release_id).to_dict())

    @api.get("/v1/rollouts")
    def rollouts(app: str | None = None, limit: int = 20) -> JSONResponse:
        if not 1 <= limit <= 1000:
            raise errors.InvalidRequest("limit must be from 1 to 1000")
        listed = ctx.engine.summaries(app, limit)
        return _json({"rollouts": [r.to_dict(targets=False, tally=tally) for r, tally in listed]})

    @api.post("/v1/rollouts", status_code=201)
    def start_rollout(body: RolloutBody) -> JSONResponse:
        started = ctx.engine.start_rollout(body.app, body.release, body.selector, canary=body.canary,
                                           batch=body.batch, max_failures=body.max_failures,
                                           health_timeout=body.health_timeout, offline_deadline=body.offline_deadline)
        return _json(started.to_dict(), 201)

    @api.get("/v1/rollouts/{rollout_id}")
    def rollout(rollout_id: int) -> JSONResponse:
        return _json(ctx.engine.get(rollout_id).to_dict())

    @api.post("/v1/rollouts/{rollout_id}/pause")
    def pause(rollout_id: int) -> JSONResponse:
        return _json(ctx.engine.pause(rollout_id).to_dict())

    @api.post("/v1/rollouts/{rollout_id}/resume")
    def resume(rollout_id: int) -> JSONResponse:
        return _json(ctx.engine.resume(rollout_id).to_dict())

    @api.post("/v1/rollouts/{rollout_id}/abort")
    def abort(rollout_id: int, body: AbortBody | None = None) -> JSONResponse:
        return _json(ctx.engine.abort(rollout_id, rollback=body.rollback if body else True).to_dict())

    app.include_router(api)
    dashboard.mount(app, ctx.token)
    return LimitBody(app)
