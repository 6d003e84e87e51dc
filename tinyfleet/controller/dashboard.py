"""The web dashboard, served by the controller on the API's port with the API's token.

    GET  /login              the log-in page: one field, the API token
    POST /login              token=...: right -> the token in an HttpOnly cookie, off to /; wrong -> 401
    POST /logout             forget the cookie
    GET  /                   fleet overview: counts, the devices that need attention, every device
    GET  /devices/{id}       one device: apps, phases, health, metrics, last reports, pins
    GET  /releases           releases with per-platform sizes
    GET  /rollouts           rollouts live: progress per batch, start, pause, resume, abort
    GET  /static/...         the pages' script and style sheet (no token: nothing in them is secret)

The pages are static shells (controller/web/); their script (web/static/app.js) polls the JSON API with
the cookie and builds every element with textContent, so nothing a device reports is ever parsed as
HTML. No page renders device data on the server. The Content-Security-Policy allows only the
controller's own script and style sheet: no inline script runs even if something slipped through.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from tinyfleet.controller import websession

WEB = Path(__file__).parent / "web"
PAGES = {"overview": "Fleet", "device": "Device", "releases": "Releases", "rollouts": "Rollouts"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LOGIN_MESSAGES = {
    "": "",
    "wrong": "That is not this controller's token.",
    "origin": "The log-in form must be sent from this controller's own page.",
}


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    template = (WEB / "login.html").read_text()
    return _html(template.replace("{message}", LOGIN_MESSAGES[message]), status)


def _page(page: str) -> HTMLResponse:
    template = (WEB / "page.html").read_text()
    return _html(template.replace("{page}", page).replace("{title}", PAGES[page]))


def mount(app: FastAPI, token: str) -> None:
    """Add the dashboard's routes and static files to the API's application."""
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")

    def logged_in(request: Request) -> bool:
        given = websession.presented(request)
        return given is not None and websession.matches(given.token, token)

    def shell(page: str, request: Request) -> Response:
        if not logged_in(request):
            return RedirectResponse("/login", status_code=303)
        return _page(page)

    @app.get("/login", include_in_schema=False)
    def login_form() -> Response:
        return _login_page()

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not websession.from_own_origin(request):
            return _login_page("origin", 403)
        form = parse_qs((await request.body()).decode(errors="replace"), max_num_fields=4)
        given = (form.get("token") or [""])[0].strip()
        if not given or not websession.matches(given, token):
            return _login_page("wrong", 401)
        response = RedirectResponse("/", status_code=303)
        websession.remember(response, request, token)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        if not websession.from_own_origin(request):
            return _login_page("origin", 403)
        response = RedirectResponse("/login", status_code=303)
        websession.forget(response)
        return response

    @app.get("/", include_in_schema=False)
    def overview(request: Request) -> Response:
        return shell("overview", request)

    @app.get("/devices/{device_id}", include_in_schema=False)
    def device(device_id: str, request: Request) -> Response:
        return shell("device", request)  # the page's script reads the id from its address

    @app.get("/releases", include_in_schema=False)
    def releases(request: Request) -> Response:
        return shell("releases", request)

    @app.get("/rollouts", include_in_schema=False)
    def rollouts(request: Request) -> Response:
        return shell("rollouts", request)
