"""/v1/users and /v1/tokens: the same users and tokens as `pgaasctl user` and `pgaasctl token`, for the console's
admin page. Admins make, disable, enable users and reset their passwords (a new one-time password, shown once);
every user lists and revokes its own tokens and makes new ones (an admin: anyone's)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from pgaasctl.api import errors
from pgaasctl.api.auth import Admin, Caller
from pgaasctl.api.common import context
from pgaasctl.api.errors import ApiError
from pgaasctl.api.users import (
    Role,
    Token,
    User,
    create_token,
    create_user,
    disable_user,
    enable_user,
    reset_password,
    revoke_token,
    tokens,
    user,
    users,
)
from pgaasctl.errors import PgaasError

router = APIRouter(tags=["users"])


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    role: Role


class OneTimePassword(BaseModel):
    user: User
    password: str  # shown this once; kept only as an Argon2 hash


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = None  # an admin may make one for another user; default: the caller
    days: int = Field(90, ge=1, le=365)


class NewToken(BaseModel):
    token: Token
    secret: str  # the token itself (`pgaas_<id>_<secret>`), shown this once


def _refused(exc: PgaasError, field: str | None = None) -> ApiError:
    status = 404 if exc.message.startswith("there is no user") else 409 if "already exists" in exc.message else 422
    return ApiError(status, errors.said(exc), field=field if status == 422 else None)


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


@router.get("/v1/users", response_model=list[User], responses=errors.RESPONSES)
def list_users(request: Request, _: Admin) -> list[User]:
    return users(context(request).store)


@router.post("/v1/users", status_code=201, response_model=OneTimePassword, responses=errors.RESPONSES)
def make_user(request: Request, body: UserCreate, _: Admin, response: Response) -> OneTimePassword:
    try:
        made, password = create_user(context(request).store, body.name, body.role)
    except PgaasError as exc:
        raise _refused(exc, "name") from None
    _no_store(response)
    return OneTimePassword(user=made, password=password)


@router.post("/v1/users/{name}/disable", response_model=User, responses=errors.RESPONSES)
def disable(request: Request, name: str, caller: Admin) -> User:
    """Its tokens and sessions stop working at once. An admin cannot disable itself (nobody might be left)."""
    if name == caller.name:
        raise ApiError(409, "you cannot disable yourself; another admin can", reason="self")
    try:
        return disable_user(context(request).store, name).model_copy(update={"disabled": True})
    except PgaasError as exc:
        raise _refused(exc) from None


@router.post("/v1/users/{name}/enable", response_model=User, responses=errors.RESPONSES)
def enable(request: Request, name: str, _: Admin) -> User:
    try:
        return enable_user(context(request).store, name)
    except PgaasError as exc:
        raise _refused(exc) from None


@router.post("/v1/users/{name}/password", response_model=OneTimePassword, responses=errors.RESPONSES)
def new_password(request: Request, name: str, _: Admin, response: Response) -> OneTimePassword:
    """A new one-time password for the user (the old one stops working)."""
    store = context(request).store
    try:
        password = reset_password(store, name)
    except PgaasError as exc:
        raise _refused(exc) from None
    found = user(store, name)
    assert found is not None
    _no_store(response)
    return OneTimePassword(user=found, password=password)


@router.get("/v1/tokens", response_model=list[Token], responses=errors.RESPONSES)
def list_tokens(request: Request, caller: Caller, user_name: str | None = None) -> list[Token]:
    """The caller's tokens (sessions included); an admin's: everyone's, or `user_name`'s."""
    if caller.role != "admin":
        user_name = caller.name
    return tokens(context(request).store, user_name)


@router.post("/v1/tokens", status_code=201, response_model=NewToken, responses=errors.RESPONSES)
def make_token(request: Request, body: TokenCreate, caller: Caller, response: Response) -> NewToken:
    owner = body.user or caller.name
    if owner != caller.name and caller.role != "admin":
        raise errors.forbidden("only an admin makes tokens for someone else")
    try:
        token, secret = create_token(context(request).store, owner, body.days)
    except PgaasError as exc:
        raise _refused(exc, "user") from None
    _no_store(response)
    return NewToken(token=token, secret=secret)


@router.delete("/v1/tokens/{token_id}", status_code=204, responses=errors.RESPONSES)
def delete_token(request: Request, token_id: str, caller: Caller) -> Response:
    store = context(request).store
    found = next((t for t in tokens(store) if t.id == token_id), None)
    if found is None or (found.user != caller.name and caller.role != "admin"):
        raise errors.not_found(f"token {token_id!r}")
    revoke_token(store, token_id)
    return Response(status_code=204)
