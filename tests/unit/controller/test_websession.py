"""The dashboard's session: the log-in page sets the token as an HttpOnly, SameSite=Strict cookie; the API
takes the cookie or the bearer header; a change sent with the cookie must come from the controller's own
origin (CSRF). FastAPI's TestClient in-process, on a real store (its origin is http://testserver)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.controller.records import release
from tests.unit.controller.test_engine import World
from tinyfleet.controller.api import ApiContext, create_app
from tinyfleet.controller.metrics import Metrics
from tinyfleet.controller.websession import COOKIE

TOKEN = "s" * 43
OWN = "http://testserver"


@pytest.fixture
def browser(store_url: str) -> TestClient:
    world = World(store_url)
    world.online("pi-1")
    world.store.add_release(release(1))
    metrics = Metrics()
    metrics.watch(world.fleet.count, world.store.rollout_states)
    app = create_app(ApiContext(world.fleet, world.releases, world.engine, metrics, TOKEN, "/x/api-token"))
    return TestClient(app, follow_redirects=False)


def logged_in(browser: TestClient) -> TestClient:
    r = browser.post("/login", data={"token": TOKEN}, headers={"Origin": OWN})
    assert r.status_code == 303 and r.headers["location"] == "/"
    return browser


@pytest.mark.parametrize("path", ["/", "/devices/pi-1", "/releases", "/rollouts"])
def test_pages_send_a_stranger_to_the_login_page(browser: TestClient, path: str) -> None:
    r = browser.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert browser.get("/login").status_code == 200


def test_the_right_token_becomes_an_http_only_strict_cookie(browser: TestClient) -> None:
    r = browser.post("/login", data={"token": TOKEN}, headers={"Origin": OWN})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    page = browser.get("/")
    assert page.status_code == 200 and 'data-page="overview"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert browser.get("/v1/devices").json()["devices"][0]["id"] == "pi-1"


@pytest.mark.parametrize("token", ["", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_a_wrong_token_is_refused_and_sets_no_cookie(browser: TestClient, token: str) -> None:
    r = browser.post("/login", data={"token": token}, headers={"Origin": OWN})
    assert r.status_code == 401 and "not this controller's token" in r.text
    assert "set-cookie" not in r.headers
    assert browser.get("/").status_code == 303


def test_a_login_form_from_another_site_is_refused(browser: TestClient) -> None:
    r = browser.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Referer": "http://evil.example/page"}, {"Origin": "https://testserver"}])
def test_a_change_with_the_cookie_from_elsewhere_is_forbidden(browser: TestClient, headers: dict[str, str]) -> None:
    logged_in(browser)
    r = browser.put("/v1/devices/pi-1/tags/site", json={"value": "berlin"}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert browser.get("/v1/devices/pi-1").json()["tags"] == {}, "nothing changed"


@pytest.mark.parametrize("headers", [{"Origin": OWN}, {"Referer": OWN + "/devices/pi-1"}])
def test_a_change_with_the_cookie_from_the_dashboard_goes_through(browser: TestClient, headers: dict[str, str]) -> None:
    logged_in(browser)
    r = browser.put("/v1/devices/pi-1/tags/site", json={"value": "berlin"}, headers=headers)
    assert r.status_code == 200 and r.json()["tags"] == {"site": "berlin"}


def test_the_bearer_header_needs_no_origin(browser: TestClient) -> None:
    r = browser.put("/v1/devices/pi-1/tags/site", json={"value": "x"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200


def test_a_wrong_cookie_is_not_a_session(browser: TestClient) -> None:
    browser.cookies.set(COOKIE, "wrong")
    assert browser.get("/v1/devices").status_code == 401
    assert browser.get("/").status_code == 303


def test_logging_out_forgets_the_cookie(browser: TestClient) -> None:
    logged_in(browser)
    assert browser.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    r = browser.post("/logout", headers={"Origin": OWN})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert browser.get("/").status_code == 303


def test_the_script_and_style_sheet_are_served(browser: TestClient) -> None:
    assert "textContent" in browser.get("/static/app.js").text
    assert browser.get("/static/style.css").status_code == 200
