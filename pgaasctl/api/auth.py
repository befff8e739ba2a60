"""Who is calling: `Authorization: Bearer <token>` to a user (401 without a usable one), and the roles a route
allows (403 for the others). Async: a token check is one indexed read of the store, cheaper than the thread hop a
sync dependency costs on every request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from pgaasctl.api import errors
from pgaasctl.api.users import ROLES, Role, User, authenticate


async def current_user(request: Request) -> User:
    authorization = request.headers.get("authorization")
    if not authorization:
        raise errors.unauthenticated()
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
