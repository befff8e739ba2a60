"""/v1/access-requests: a member asks for access to a database (read-only or read-write, with a reason); the
database's owner or an admin approves or denies it, with a reason. Approving writes a login role and its grant as
documents under the API's directory and applies them as an operation; the requester then fetches the role's
credentials once (a generated password, kept in a 0600 file outside the specs, which the role's document points
at). Revoking removes both documents and applies that: the role is dropped and can no longer log in."""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from pgaasctl import workspace
from pgaasctl.api import changes, documents, errors
from pgaasctl.api.auth import Caller
from pgaasctl.api.common import context
from pgaasctl.api.errors import ApiError
from pgaasctl.api.operations import Operation
from pgaasctl.api.paging import PageSize, PageToken, page
from pgaasctl.api.users import User
from pgaasctl.spec.models import OWNER_LABEL, Identifier

router = APIRouter(prefix="/v1/access-requests", tags=["access requests"])
Access = Literal["read-only", "read-write"]
Status = Literal["PENDING", "APPROVED", "DENIED", "REVOKED"]
TABLES = {"read-only": ["SELECT"], "read-write": ["SELECT", "INSERT", "UPDATE", "DELETE"]}
SEQUENCES = {"read-only": ["SELECT"], "read-write": ["USAGE", "SELECT", "UPDATE"]}


class AccessAsked(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pair: Identifier
    database: Identifier
    access: Access
    reason: str = Field(min_length=1, max_length=500)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


class AccessRequest(BaseModel):
    id: str
    pair: str
    database: str
    requester: str
    access: Access
    reason: str
    status: Status
    created: str
    decided_by: str | None = None
    decision_reason: str | None = None
    decided: str | None = None
    role: str | None = None  # the login role approval makes
    operation: str | None = None  # the operation that applied the approval (or the revocation)
    credentials_fetched: bool = False
    actions: list[str] = []  # what the caller may do: approve, deny, credentials, revoke (not stored)


class Credentials(BaseModel):
    role: str
    password: str
    uri: str


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")




def _save(ctx: Any, item: AccessRequest) -> None:
    ctx.store.record_access_request(item.id, item.pair, item.database, item.requester, item.status,
                                    item.model_dump_json(exclude={"actions"}), item.created)


def _for(caller: User, loaded: workspace.LoadedWorkspace, item: AccessRequest) -> AccessRequest:
    """The request as the caller sees it: with what the caller may do to it."""
    deciding = _may_decide(caller, loaded, item)
    actions = ["approve", "deny"] if deciding and item.status == "PENDING" else []
    if item.status == "APPROVED":
        if item.requester == caller.name and not item.credentials_fetched:
            actions.append("credentials")
        if deciding or item.requester == caller.name:
            actions.append("revoke")
    return item.model_copy(update={"actions": actions})


def _get(ctx: Any, request_id: str) -> AccessRequest:
    data = ctx.store.access_request_data(request_id)
    if data is None:
        raise errors.not_found(f"access request {request_id!r}")
    return AccessRequest.model_validate_json(data)


def _database_owner(loaded: workspace.LoadedWorkspace, pair: str, database: str) -> str | None:
    found = loaded.desired.pairs[pair].databases.get(database) if pair in loaded.desired.pairs else None
    return found.doc.metadata.labels.get(OWNER_LABEL) if found is not None else None


def _may_decide(caller: User, loaded: workspace.LoadedWorkspace, item: AccessRequest) -> bool:
    return caller.role == "admin" or (caller.role == "member"
                                      and _database_owner(loaded, item.pair, item.database) == caller.name)


def _may_see(caller: User, loaded: workspace.LoadedWorkspace, item: AccessRequest) -> bool:
    return caller.role in ("admin", "viewer") or item.requester == caller.name or _may_decide(caller, loaded, item)


@router.post("", status_code=201, response_model=AccessRequest, responses=errors.RESPONSES)
def ask(request: Request, body: AccessAsked, caller: Caller) -> AccessRequest:
    """Ask for access to a database; its owner or an admin decides."""
    if caller.role == "viewer":
        raise errors.forbidden("a viewer may not ask for access")
    loaded = context(request).loaded()
    pair = loaded.desired.pairs.get(body.pair)
    if pair is None or body.database not in pair.databases:
        raise errors.not_found(f"database {body.database!r} of pair {body.pair!r}")
    item = AccessRequest(id=secrets.token_hex(8), pair=body.pair, database=body.database, requester=caller.name,
                         access=body.access, reason=body.reason, status="PENDING", created=_now())
    _save(context(request), item)
    return item


class AccessRequestPage(BaseModel):
    items: list[AccessRequest]
    next_page_token: str | None = None


@router.get("", response_model=AccessRequestPage, responses=errors.RESPONSES)
def list_requests(request: Request, caller: Caller, status: Status | None = None, page_size: PageSize = 100,
                  page_token: PageToken = None) -> AccessRequestPage:
    """The requests the caller may see, newest first: its own, those for the databases it owns, all for admins and
    viewers (`status` to keep one kind)."""
    ctx = context(request)
    loaded = ctx.loaded()
    items = [AccessRequest.model_validate_json(d) for d in ctx.store.access_requests_data()]
    seen = [_for(caller, loaded, i) for i in items if _may_see(caller, loaded, i) and status in (None, i.status)]
    shown, token = page(seen, page_size, page_token)
    return AccessRequestPage(items=shown, next_page_token=token)


@router.get("/{request_id}", response_model=AccessRequest, responses=errors.RESPONSES)
def get_request(request: Request, request_id: str, caller: Caller) -> AccessRequest:
    ctx = context(request)
    item = _get(ctx, request_id)
    loaded = ctx.loaded()
    if not _may_see(caller, loaded, item):
        raise errors.not_found(f"access request {request_id!r}")
    return _for(caller, loaded, item)


@router.post("/{request_id}/deny", response_model=AccessRequest, responses=errors.RESPONSES)
def deny(request: Request, request_id: str, body: Decision, caller: Caller) -> AccessRequest:
    ctx = context(request)
    item = _decidable(ctx, caller, request_id)
    item.status, item.decided_by, item.decision_reason, item.decided = "DENIED", caller.name, body.reason, _now()
    _save(ctx, item)
    return item


@router.post("/{request_id}/approve", status_code=202, response_model=Operation, responses=errors.RESPONSES)
def approve(request: Request, request_id: str, body: Decision, caller: Caller) -> Operation:
    """Approve: the role and grant documents are written and applied as an operation (202)."""
    ctx = context(request)
    item = _decidable(ctx, caller, request_id)
    loaded = ctx.loaded()
    role = _role_name(loaded, item)
    secret_file = secret_path(loaded, item.pair, role)
    labels = {OWNER_LABEL: item.requester}
    role_doc = {"kind": "Role", "metadata": {"name": role, "pair": item.pair, "labels": labels},
                "spec": {"login": True, "password": {"file": str(secret_file)}}}
    grant_doc = {"kind": "Grant", "metadata": {"pair": item.pair, "labels": labels}, "spec": {
        "role": role, "database": item.database, "privileges": ["CONNECT"],
        "schemas": {"public": {"privileges": ["USAGE"], "tables": TABLES[item.access],
                               "sequences": SEQUENCES[item.access]}}}}
    role_path = documents.document_path(loaded, "role", item.pair, role)
    grant_path = documents.document_path(loaded, "grant", item.pair, f"{item.database}-{role}")
    targets = [f"role.{item.pair}.{role}", f"grant.{item.pair}.{item.database}.{role}"]

    def decided() -> None:  # under the pair's claim, before the documents are written
        write_password(secret_file)
        item.status, item.decided_by, item.decision_reason, item.decided = "APPROVED", caller.name, body.reason, _now()
        item.role = role
        _save(ctx, item)

    op = changes.start(ctx, item.pair, "GRANT_ACCESS", [targets[1], targets[0]], caller.name,
                       {role_path: role_doc, grant_path: grant_doc}, before=decided)
    item.operation = op.id
    _save(ctx, item)
    return op  # type: ignore[no-any-return]


@router.post("/{request_id}/revoke", status_code=202, response_model=Operation, responses=errors.RESPONSES)
def revoke(request: Request, request_id: str, caller: Caller) -> Operation:
    """Revoke granted access: the role and its grant are removed (the role is dropped)."""
    ctx = context(request)
    item = _get(ctx, request_id)
    loaded = ctx.loaded()
    if not (_may_decide(caller, loaded, item) or item.requester == caller.name):
        raise errors.forbidden("only the requester, the database's owner or an admin may revoke this access")
    if item.status != "APPROVED" or item.role is None:
        raise ApiError(409, f"access request {request_id} is {item.status.lower()}, not granted", reason="not_granted")
    role_path = documents.document_path(loaded, "role", item.pair, item.role)
    grant_path = documents.document_path(loaded, "grant", item.pair, f"{item.database}-{item.role}")
    targets = [f"grant.{item.pair}.{item.database}.{item.role}", f"role.{item.pair}.{item.role}"]

    def revoked() -> None:
        item.status = "REVOKED"
        _save(ctx, item)

    secret_file = secret_path(loaded, item.pair, item.role)
    op = changes.start(ctx, item.pair, "REVOKE_ACCESS", targets, caller.name, {grant_path: None, role_path: None},
                       before=revoked, after=lambda: secret_file.unlink(missing_ok=True))
    item.operation = op.id
    _save(ctx, item)
    return op  # type: ignore[no-any-return]


@router.get("/{request_id}/credentials", response_model=Credentials, responses={
    **errors.RESPONSES, 410: {"model": errors.ErrorBody, "description": "Already fetched"}})
def credentials(request: Request, request_id: str, caller: Caller, response: Response) -> Credentials:
    """The granted role's password and URI, to the requester alone, once."""
    from pgaasctl.status import connection_uri

    ctx = context(request)
    item = _get(ctx, request_id)
    if item.requester != caller.name:
        raise errors.forbidden("only the requester gets the credentials")
    if item.status != "APPROVED" or item.role is None:
        raise ApiError(409, f"access request {request_id} is {item.status.lower()}, not granted", reason="not_granted")
    op = ctx.operations.get(item.operation) if item.operation else None
    if op is None or op.status != "DONE":
        raise ApiError(409, "the grant is not applied yet; wait for its operation", reason="not_ready", retryable=True)
    if item.credentials_fetched:
        raise ApiError(410, "the credentials were shown once already; ask for a new access to get new ones",
                       reason="gone")
    loaded = ctx.loaded()
    password = secret_path(loaded, item.pair, item.role).read_text(encoding="utf-8").strip()
    uri = connection_uri(loaded.desired.pairs[item.pair], loaded.desired, ctx.store, item.database, item.role, False)
    item.credentials_fetched = True
    _save(ctx, item)
    response.headers["Cache-Control"] = "no-store"
    return Credentials(role=item.role, password=password, uri=uri)


def _decidable(ctx: Any, caller: User, request_id: str) -> AccessRequest:
    item = _get(ctx, request_id)
    loaded = ctx.loaded()
    if not _may_see(caller, loaded, item):
        raise errors.not_found(f"access request {request_id!r}")
    if not _may_decide(caller, loaded, item):
        raise errors.forbidden("only the database's owner or an admin decides")
    if item.status != "PENDING":
        raise ApiError(409, f"access request {request_id} is already {item.status.lower()}", reason="decided")
    return item


def _role_name(loaded: workspace.LoadedWorkspace, item: AccessRequest) -> str:
    """requester_database, made a valid identifier, unused on the pair."""
    base = re.sub(r"[^a-z0-9_]", "_", f"{item.requester}_{item.database}".lower())[:55]
    taken = set(loaded.desired.pairs[item.pair].roles)
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    return name


def write_password(path: Path) -> None:
    """A new generated password in a file only its owner may read."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(24) + "\n")


def secret_path(loaded: workspace.LoadedWorkspace, pair: str, role: str) -> Path:
    """Beside the store's default place, under the workspace root; never a spec (not YAML), and where that is inside
    the spec directory, ignored by git (a .gitignore of its own)."""
    base = Path(loaded.desired.workspace.secrets_dir)  # Workspace secrets_dir, resolved against the root
    ignore = base / ".gitignore"
    if not ignore.exists():
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        ignore.write_text("# written by pgaasctl: passwords of roles granted through the API, never for git\n*\n")
    return base / pair / f"{role}.password"
