"""What every console page shares: the templates, the signed-in user (from the session cookie, through the API),
the CSRF check of every form, and how a page is rendered."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from pgaasctl.api.auth import SESSION_COOKIE
from pgaasctl.console.client import Api, ApiFailure

CSRF_COOKIE = "pgaas_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.autoescape = True  # every value is escaped, whatever the file's name


class SignedOut(Exception):
    """No usable session: the console answers with the sign-in page."""


class CsrfRefused(Exception):
    """A form without the right CSRF token."""


@dataclass
class Page:
    """A signed-in request: the user, the API as that user, and the CSRF token for the page's forms."""

    request: Request
    api: Api
    me: dict[str, Any]
    csrf: str

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        response = templates.TemplateResponse(self.request, template, {"me": self.me, "csrf": self.csrf, **values},
                                              status_code=status)
        remember_csrf(self.request, response, self.csrf)
        response.headers["Cache-Control"] = "no-store"
        return response


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (a random value in its own cookie; every form repeats it), made when missing."""
    token = request.cookies.get(CSRF_COOKIE, "")
    return token if len(token) == 43 else secrets.token_urlsafe(32)


def remember_csrf(request: Request, response: Response, token: str) -> None:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")


async def check_csrf(request: Request) -> dict[str, str]:
    """The submitted form, when it (or the htmx header) carries the browser's CSRF token; else CsrfRefused. A page
    of another site can neither read the cookie nor set the header, so it cannot forge the pair."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise CsrfRefused()
    return form


async def signed_in(request: Request) -> Page:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignedOut()
    api = Api(request.app.state.console_http, token)
    try:
        me = await api.get("/v1/me")
    except ApiFailure as exc:
        if exc.status == 401:
            raise SignedOut() from None
        raise
    return Page(request=request, api=api, me=me, csrf=csrf_token(request))


def go(url: str, request: Request) -> Response:
    """After a form: to `url` (htmx follows HX-Redirect; a plain form a 303)."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def sign_in_page(request: Request, status: int = 200, error: str | None = None, name: str = "") -> HTMLResponse:
    token = csrf_token(request)
    response = templates.TemplateResponse(request, "sign_in.html", {"csrf": token, "error": error, "name": name,
                                                                    "me": None}, status_code=status)
    remember_csrf(request, response, token)
    response.headers["Cache-Control"] = "no-store"
    return response
