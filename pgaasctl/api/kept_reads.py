"""The busiest read, `GET /v1/pairs/{pair}/databases`, answered before FastAPI routes it: from the body the route
last rendered for the same visibility and query, while the specs and sampled sizes it was made from are the ones in
memory now. The caller's token is checked as on every route (one read of the store, so a revoke counts at once).
Anything else (no body kept yet, no or a bad token, a workspace that does not load, an unknown pair) goes on to
FastAPI, which checks, renders, keeps and answers as always: this only skips the framework's routing, parameter
validation and serialisation, most of what such a read costs."""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from pgaasctl.api.errors import ApiError
from pgaasctl.api.users import authenticate

DATABASES_LIST = re.compile(r"/v1/pairs/([^/]+)/databases")
HEADERS = [(b"content-type", b"application/json")]


def page_key(role: str, name: str, query_string: bytes) -> tuple[str, str, bytes]:
    """What a rendered page depends on besides the pair: who may see and do what (admins and viewers see every
    database, a member its own; what each may do differs), and the query (page size and token) as sent."""
    return (role, name if role == "member" else "", query_string)


class KeptReads:
    def __init__(self, app: ASGIApp, ctx: Any) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = DATABASES_LIST.fullmatch(scope["path"])
            body = self._kept(scope, match.group(1)) if match else None
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*HEADERS, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _kept(self, scope: Scope, pair: str) -> bytes | None:
        rendered = self.ctx.pages.get(pair)
        if rendered is None:
            return None
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if authorization is None or not authorization[:7].lower() == b"bearer ":
            return None
        caller = authenticate(self.ctx.store, authorization[7:].strip().decode("latin-1"))
        if caller is None:
            return None
        try:
            loaded = self.ctx.loaded(fresh=False)
        except ApiError:
            return None
        if pair not in loaded.desired.pairs or not rendered.current((loaded, self.ctx.sizes(pair))):
            return None
        return rendered.body(page_key(caller.role, caller.name, scope["query_string"]))  # type: ignore[no-any-return]
