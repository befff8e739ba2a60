"""/v1/sessions: the console signs in with a name and password and gets a session cookie (HttpOnly, SameSite
Strict), which is a short-lived API token kept hashed like any other; signing out revokes it at once."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from pgaasctl.api import errors
from pgaasctl.api.auth import SESSION_COOKIE, Caller
from pgaasctl.api.users import (
    TOKEN_FORMAT,
    User,
    check_password,
    create_token,
    revoke_token,
)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
SESSION_DAYS = 1


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    password: str = Field(min_length=1, max_length=200)


@router.post("", response_model=User, responses=errors.RESPONSES)
def sign_in(request: Request, body: SignIn, response: Response) -> User:
    """Sign in: 200 with the user and a session cookie; 401 for a wrong name or password (the same answer)."""
    store = request.app.state.context.store
    user = check_password(store, body.name, body.password)
    if user is None:
        raise errors.unauthenticated("The name or the password is wrong, or the user is disabled.")
    _, secret = create_token(store, user.name, days=SESSION_DAYS)
    response.set_cookie(SESSION_COOKIE, secret, max_age=SESSION_DAYS * 86400, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    response.headers["Cache-Control"] = "no-store"
    return user


@router.delete("", status_code=204, responses=errors.RESPONSES)
def sign_out(request: Request, _: Caller, response: Response) -> None:
    """Sign out: the session's token (the cookie, or the bearer the console passes on) is revoked and the cookie
    cleared."""
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    session = request.cookies.get(SESSION_COOKIE) or (bearer.strip() if scheme.lower() == "bearer" else "")
    match = TOKEN_FORMAT.fullmatch(session)
    if match is not None:
        revoke_token(request.app.state.context.store, match.group(1))
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.status_code = 204
