"""How the console joins the API's app: its routes, its in-process way to the API, what its pages answer when the
user is signed out, a form is forged, or the API refuses, and the headers that keep its pages to this origin."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgaasctl.console import access, admin, assets, forms, health, pages
from pgaasctl.console.client import ApiFailure, in_process
from pgaasctl.console.web import CsrfRefused, SignedOut, go, templates

API_PATHS = ("/v1/", "/docs", "/redoc", "/openapi.json", "/metrics", "/healthz")
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", POLICY.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]


class ConsoleHeaders:
    """The console's pages and assets load nothing from another host, run no inline script, and are framed by
    nobody (Content-Security-Policy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(API_PATHS):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    app.state.console_http = in_process(app)
    app.include_router(assets.router)
    app.include_router(pages.router)
    app.include_router(forms.router)
    app.include_router(access.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.add_middleware(ConsoleHeaders)

    @app.exception_handler(SignedOut)
    async def signed_out(request: Request, _: SignedOut) -> Response:
        return go("/", request)

    @app.exception_handler(CsrfRefused)
    async def forged(request: Request, _: CsrfRefused) -> Response:
        return _error_page(request, 403, "This form was refused: it did not carry the page's security token. "
                           "Reload the page and try again.")

    @app.exception_handler(ApiFailure)
    async def refused(request: Request, exc: ApiFailure) -> Response:
        return _error_page(request, exc.status, exc.message)


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    response = templates.TemplateResponse(request, "error.html", {"status": status, "message": message, "me": None,
                                                                  "csrf": ""}, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response
