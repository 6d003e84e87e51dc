"""The browser's session: the API token kept in a cookie, and the checks every API request passes.

A script sends `Authorization: Bearer <token>`; the dashboard's log-in page takes the same token once and
keeps it in a cookie the page's JavaScript cannot read (HttpOnly), that no other site's page sends
(SameSite=Strict) and that covers the whole controller (Path=/). A request authenticated by the cookie
that changes state (anything but GET/HEAD/OPTIONS) must also come from the controller's own origin: its
Origin header (or, without one, its Referer) must name the scheme, host and port the request was sent to.
That closes cross-site request forgery twice over (SameSite and the origin check); a bearer token needs
no such check, since no browser adds it by itself.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from tinyfleet.controller.errors import Forbidden, Unauthorized

COOKIE = "tinyfleet_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_AGE_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Presented:
    token: str
    via_cookie: bool


def presented(request: Request) -> Presented | None:
    """The token the request carries: the bearer header first, else the cookie."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return Presented(given.strip(), via_cookie=False)
    cookie = request.cookies.get(COOKIE)
    return Presented(cookie, via_cookie=True) if cookie else None


def matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def from_own_origin(request: Request) -> bool:
    """Whether the browser says the request comes from a page of this controller."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = urlsplit(request.headers.get("referer", ""))
        origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme else ""
    return bool(origin) and origin.lower() == own_origin(request)


def check(request: Request, token: str, hint: str) -> None:
    """Raise Unauthorized for a missing or wrong token, Forbidden for a cookie-borne change from elsewhere."""
    given = presented(request)
    if given is None or not matches(given.token, token):
        raise Unauthorized(f"missing or wrong API token: send 'Authorization: Bearer <token>' with the token from "
                           f"{hint}, or log in to the dashboard")
    if given.via_cookie and request.method not in SAFE_METHODS and not from_own_origin(request):
        raise Forbidden("a change sent with the dashboard's cookie must come from the dashboard itself "
                        "(its Origin header does not match this controller)")


def remember(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=MAX_AGE_S, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def forget(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
