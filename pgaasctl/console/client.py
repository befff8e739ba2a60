"""The console's way to the service API: requests to the same ASGI app, in-process, with the signed-in user's
session token as the bearer. What the API refuses arrives as an ApiFailure carrying the API's error (its field
too, so a form shows it beside the input at fault)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from starlette.types import ASGIApp


def segment(value: str) -> str:
    """One path segment of an API URL: a name from the browser's URL can never reach another path ('/', '..')."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class ApiFailure(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "the request failed"))
        self.status = status
        self.reason: str = error.get("reason", "error")
        self.message: str = error.get("message", "the request failed")
        self.field: str | None = error.get("field")


class Api:
    """One user's view of the API."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http, self.token = http, token

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        # params=None, never {}: httpx replaces a query the path carries with an empty one
        response = await self.http.request(method, path, json=body, params=query or None,
                                           headers={"Authorization": f"Bearer {self.token}"})
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"message": response.text[:200] or f"HTTP {response.status_code}"}
            raise ApiFailure(response.status_code, error)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, **params)


def in_process(app: ASGIApp) -> httpx.AsyncClient:
    """A client whose requests go straight into `app` (no socket)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pgaasctl.console",
                             timeout=httpx.Timeout(70.0))
