"""The HTTP API: every bad request gets a 4xx with one clear message in one shape; good ones work.
FastAPI's TestClient in-process, on a real store."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.controller.records import release, reported, running
from tests.unit.controller.test_engine import World
from tinyfleet.controller.api import MAX_BODY_BYTES, ApiContext, create_app
from tinyfleet.controller.metrics import Metrics
from tinyfleet.controller.store import Incoming

TOKEN = "t" * 43


@pytest.fixture
def world(store_url: str) -> World:
    w = World(store_url)
    w.online("pi-1", "pi-2")
    w.store.add_release(release(1))
    w.store.add_release(release(2, app="other"))
    return w


@pytest.fixture
def api(world: World) -> TestClient:
    metrics = Metrics()
    metrics.watch(world.fleet.count, world.store.rollout_states)
    app = create_app(ApiContext(world.fleet, world.releases, world.engine, metrics, TOKEN, "/x/api-token"))
    return TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


def error(response: Any, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code
    return body["error"]["message"]


# -- authentication ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"}])
def test_every_route_but_healthz_needs_the_token(api: TestClient, headers: dict[str, str]) -> None:
    for path in ("/v1/devices", "/metrics", "/v1/rollouts"):
        r = api.get(path, headers={"Authorization": "", **headers})
        assert "/x/api-token" in error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    assert api.get("/healthz", headers={"Authorization": ""}).json() == {"ok": True}


# -- shape of requests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,body,status,fragment", [
    ("GET", "/v1/nothing", None, 404, "no route GET /v1/nothing"),
    ("DELETE", "/v1/releases", None, 405, "no route DELETE"),
    ("GET", "/v1/devices?selector=everything", None, 400, "selector 'everything'"),
    ("GET", "/v1/devices/nope", None, 404, "no device 'nope'"),
    ("GET", "/v1/devices/bad%24id", None, 400, "may hold only"),
    ("PUT", "/v1/devices/pi-1/tags/site", None, 400, "body: Field required"),
    ("PUT", "/v1/devices/pi-1/tags/site", {"value": 3}, 400, "value: Input should be a valid string"),
    ("PUT", "/v1/devices/pi-1/tags/site", {"value": "x", "extra": 1}, 400, "extra: Extra inputs"),
    ("PUT", "/v1/devices/pi-1/tags/bad%20key", {"value": "x"}, 400, "tag key"),
    ("PUT", "/v1/devices/nope/tags/site", {"value": "x"}, 404, "no device"),
    ("DELETE", "/v1/devices/pi-1/tags/absent", None, 404, "has no tag"),
    ("PUT", "/v1/devices/pi-1/groups/-bad", None, 400, "group name"),
    ("DELETE", "/v1/devices/pi-1/groups/never", None, 404, "not in group"),
    ("PUT", "/v1/devices/pi-1/pins/hello", {"release": "9.9"}, 404, "has no release '9.9'"),
    ("PUT", "/v1/devices/pi-1/pins/hello", {"release": 2}, 404, "has no release '2'"),
    ("PUT", "/v1/devices/pi-1/pins/hello", {"release": 1.5}, 400, "release"),
    ("PUT", "/v1/devices/pi-1/pins/Bad!", {"release": None}, 400, "app name"),
    ("DELETE", "/v1/devices/pi-1/pins/hello", None, 404, "has no pin"),
    ("POST", "/v1/devices/pi-1/update", {"force": False}, 400, "force"),
    ("POST", "/v1/devices/pi-1/update", {}, 400, "force"),
    ("POST", "/v1/devices/pi-1/update", {"force": True, "apps": ["Bad!"]}, 400, "app name"),
    ("POST", "/v1/devices/nope/update", {"force": True}, 404, "nope"),
    ("GET", "/v1/releases/abc", None, 400, "path release_id"),
    ("GET", "/v1/releases/999", None, 404, "no release 999"),
    ("GET", "/v1/releases?app=BAD", None, 400, "app name"),
    ("POST", "/v1/releases", None, 400, "body: Field required"),
    ("POST", "/v1/releases", {"image": "x"}, 400, "app: Field required"),
    ("POST", "/v1/releases", {"app": "Hello", "image": "127.0.0.1:9/a:1"}, 400, "app name"),
    ("POST", "/v1/releases", {"app": "hello", "image": "Not A/Ref"}, 400, "not an image reference"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a@sha1:00"}, 400, "only sha256"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "max_bytes": 0}, 400, "max_bytes"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "max_bytes": "1k"}, 400, "max_bytes"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "env": {"1X": "y"}}, 400, "env name"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "env": {"X": 1}}, 400, "env.X"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "lock_max_wait": -1}, 400, "lock_max_wait"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "lock_endpoint": {"port": 0}}, 400,
     "lock_endpoint.port: 0 is outside 1..65535"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "lock_endpoint": {"port": True}}, 400,
     "lock_endpoint.port: must be an integer"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1",
                              "lock_endpoint": {"port": 8080, "path": "no-slash"}}, 400, "lock_endpoint.path"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1",
                              "lock_endpoint": {"port": 8080, "host": "10.0.0.1"}}, 400,
     "lock_endpoint.host: is not a known field"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1",
                              "health": {"deadline_seconds": 5, "settle_seconds": 9}}, 400, "shorter than settle"),
    ("POST", "/v1/releases", {"app": "hello", "image": "127.0.0.1:9/a:1", "health": {"bogus": 1}}, 400,
     "health.bogus: is not a known field"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 99, "selector": "all"}, 404, "no release"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1, "selector": "host:x"}, 400, "selector"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1, "selector": "all", "batch": "abc"}, 400, "batch"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1, "selector": "all", "batch": 0}, 400, "at least 1"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1, "selector": "all", "max_failures": "150%"}, 400,
     "over 100%"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1, "selector": "all", "canary": -1}, 400, "canary"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1, "selector": "all", "canary": "1"}, 400, "canary"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1, "selector": "all", "health_timeout": 0}, 400,
     "health timeout"),
    ("POST", "/v1/rollouts", {"app": "hello", "release": 1}, 400, "selector: Field required"),
    ("GET", "/v1/rollouts/999", None, 404, "no rollout 999"),
    ("GET", "/v1/rollouts/x", None, 400, "path rollout_id"),
    ("GET", "/v1/rollouts?limit=0", None, 400, "limit"),
    ("POST", "/v1/rollouts/999/pause", None, 404, "no rollout 999"),
    ("POST", "/v1/rollouts/999/abort", {"rollback": "yes"}, 400, "rollback"),
])
def test_bad_requests_get_a_4xx_with_a_clear_message(api: TestClient, method: str, path: str, body: Any,
                                                     status: int, fragment: str) -> None:
    r = api.request(method, path, json=body)
    assert fragment in error(r, status)


def test_malformed_json_is_a_400(api: TestClient) -> None:
    r = api.post("/v1/releases", content=b"{not json", headers={"Content-Type": "application/json"})
    assert "JSON" in error(r, 400, "invalid_request")


def test_oversized_bodies_are_refused_whether_announced_or_streamed(api: TestClient) -> None:
    big = b'{"app": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert "limit" in error(api.post("/v1/releases", content=big, headers={"Content-Type": "application/json"}),
                            413, "too_large")

    def chunks() -> Any:  # no Content-Length: the server has to count
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    r = api.post("/v1/releases", content=chunks(), headers={"Content-Type": "application/json"})
    error(r, 413, "too_large")


def test_an_unreachable_registry_is_a_503_that_says_to_retry(api: TestClient) -> None:
    r = api.post("/v1/releases", json={"app": "hello", "image": "127.0.0.1:9/acme/hello:1.0"})
    message = error(r, 503, "registry_unavailable")
    assert "cannot reach the registry 127.0.0.1:9" in message and "try again" in message


def test_state_changes_that_make_no_sense_are_409(api: TestClient) -> None:
    started = api.post("/v1/rollouts", json={"app": "hello", "release": "1.0", "selector": "all"})
    assert started.status_code == 201, started.text
    rid = started.json()["id"]
    assert "still running" in error(api.post("/v1/rollouts", json={"app": "hello", "release": 1, "selector": "all"}),
                                    409, "conflict")
    error(api.post(f"/v1/rollouts/{rid}/resume"), 409, "conflict")
    assert api.post(f"/v1/rollouts/{rid}/abort", json={"rollback": False}).json()["state"] == "aborted"
    error(api.post(f"/v1/rollouts/{rid}/pause"), 409, "conflict")


# -- what works -----------------------------------------------------------------------------------------

def test_devices_tags_groups_and_pins(api: TestClient, world: World) -> None:
    assert [d["id"] for d in api.get("/v1/devices").json()["devices"]] == ["pi-1", "pi-2"]
    assert api.put("/v1/devices/pi-1/tags/site", json={"value": "berlin"}).json()["tags"] == {"site": "berlin"}
    assert api.put("/v1/devices/pi-2/groups/kitchen").json()["groups"] == ["kitchen"]
    assert [d["id"] for d in api.get("/v1/devices", params={"selector": "tag:site=berlin"}).json()["devices"]] == [
        "pi-1"]
    assert api.get("/v1/groups").json() == {"groups": [{"name": "kitchen", "devices": 1}]}
    pinned = api.put("/v1/devices/pi-1/pins/hello", json={"release": "1.0"}).json()
    assert pinned["pins"] == {"hello": 1} and pinned["apps"][0]["release"] == 1
    world.store.record([Incoming(reported("pi-1", 1, running("hello", release(1).image)), live=True)],
                       now=world.clock.now, stale_after=3)
    detail = api.get("/v1/devices/pi-1").json()
    assert detail["apps"][0]["phase"] == "running" and detail["reported"]["generation"] == 1
    assert api.delete("/v1/devices/pi-1/pins/hello").json()["pins"] == {}
    assert api.delete("/v1/devices/pi-1/tags/site").json()["tags"] == {}
    assert api.delete("/v1/devices/pi-2/groups/kitchen").json()["groups"] == []


def test_a_forced_update_republishes_the_device(api: TestClient, world: World) -> None:
    api.put("/v1/devices/pi-1/pins/hello", json={"release": "1.0"})
    done = api.post("/v1/devices/pi-1/update", json={"force": True}).json()
    assert done["device"] == "pi-1" and done["forced"] == ["hello"] and done["generation"] >= 1


def test_releases_and_rollouts_are_listed(api: TestClient) -> None:
    assert [r["version"] for r in api.get("/v1/releases", params={"app": "hello"}).json()["releases"]] == ["1.0"]
    assert api.get("/v1/releases/1").json()["platforms"][0]["platform"] == "linux/arm64"
    created = api.post("/v1/rollouts", json={"app": "hello", "release": 1, "selector": "all", "canary": 1,
                                             "batch": "50%", "max_failures": "10%", "health_timeout": 30})
    assert created.status_code == 201
    r = created.json()
    assert (r["batch"], r["max_failures"], r["total"], r["counts"]["pending"]) == ("50%", "10%", 2, 2)
    assert [x["id"] for x in api.get("/v1/rollouts").json()["rollouts"]] == [r["id"]]
    assert api.post(f"/v1/rollouts/{r['id']}/pause").json()["state"] == "paused"
    assert api.post(f"/v1/rollouts/{r['id']}/resume").json()["state"] == "running"


def test_metrics_are_prometheus_text(api: TestClient) -> None:
    api.get("/v1/devices")
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'tinyfleet_devices{state="online"} 2.0' in r.text
    assert 'tinyfleet_api_requests_total{method="GET",route="/v1/devices",status="200"} 1.0' in r.text
