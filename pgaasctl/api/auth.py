"""Who is calling: `Authorization: Bearer <token>` to a user (401 without a usable one), and the roles a route
allows (403 for the others). Async: a token check is one indexed read of the store, cheaper than the thread hop a
sync dependency costs on every request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from pgaasctl.api import errors
from pgaasctl.api.users import ROLES, Role, User, authenticate

SESSION_COOKIE = "pgaas_session"
CONSOLE_HEADER = "x-pgaasctl-console"  # a header a page of another site cannot send without asking (CORS)
READING = ("GET", "HEAD", "OPTIONS")


async def current_user(request: Request) -> User:
    """The caller: a bearer token (scripts), else the console's session cookie. A change asked with the cookie
    must carry the console's header too, so a page of another site cannot ride on the cookie (CSRF)."""
    authorization = request.headers.get("authorization")
    if not authorization:
        session = request.cookies.get(SESSION_COOKIE)
        if not session:
            raise errors.unauthenticated()
        if request.method not in READING and request.headers.get(CONSOLE_HEADER) != "1":
            raise errors.forbidden(f"a change signed in with the session cookie needs the header {CONSOLE_HEADER}: 1")
        found = authenticate(request.app.state.context.store, session)
        if found is None:
            raise errors.unauthenticated("The session is over (signed out, expired, or the user disabled): sign in.")
        return found
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.unauthenticated("Send `Authorization: Bearer <token>`.")
    found = authenticate(request.app.state.context.store, token.strip())
    if found is None:
        raise errors.unauthenticated("The token is unknown, expired or revoked, or its user is disabled.")
    return found


def allowed(*roles: Role) -> Callable[[User], Awaitable[User]]:
    async def check(caller: Annotated[User, Depends(current_user)]) -> User:
        if caller.role not in roles:
            raise errors.forbidden(f"a {caller.role} may not do this (it needs: {', '.join(roles)})")
        return caller

    return check


Caller = Annotated[User, Depends(current_user)]
Reader = Annotated[User, Depends(allowed(*ROLES))]
Admin = Annotated[User, Depends(allowed("admin"))]
