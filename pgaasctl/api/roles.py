"""/v1/pairs/{pair}/roles: list, read, create and delete roles. Admins make any role; a member makes login roles
it owns (no superuser, createrole, replication, bypassrls or createdb, and membership only in its own roles).
A login role made here gets a generated password, kept in a 0600 file outside the specs (its document points at
it), shown once to its owner at /credentials."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from pgaasctl.api import changes, documents, errors
from pgaasctl.api.access import secret_path, write_password
from pgaasctl.api.auth import Caller
from pgaasctl.api.common import context, loaded_pair
from pgaasctl.api.databases import open_to
from pgaasctl.api.errors import ApiError
from pgaasctl.api.operations import Operation
from pgaasctl.api.paging import PageSize, PageToken, page
from pgaasctl.api.users import User
from pgaasctl.spec.models import OWNER_LABEL, Identifier, RoleDoc, RoleSpec

router = APIRouter(prefix="/v1/pairs/{pair}/roles", tags=["roles"])
ADMIN_ONLY = ("superuser", "createrole", "replication", "bypassrls", "createdb")


class RoleCreate(RoleSpec):
    """A new role: its name and the fields of a Role document's spec, but its password, which is generated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Identifier


class RoleView(BaseModel):
    name: str
    pair: str
    owner_user: str | None
    managed_by: str  # api | specs
    declared_in: str
    spec: dict[str, Any]
    actions: list[str] = []  # what the caller may do: certificate (a new client certificate of the role)


class RolePage(BaseModel):
    items: list[RoleView]
    next_page_token: str | None = None


class RoleCredentials(BaseModel):
    role: str
    password: str
    uri: str


def _mine(caller: User, doc: RoleDoc) -> bool:
    return caller.role == "admin" or doc.metadata.labels.get(OWNER_LABEL) == caller.name


def _view(loaded: Any, pair: str, found: Any, caller: User | None = None) -> RoleView:
    doc: RoleDoc = found.doc
    pair_spec = loaded.desired.pairs[pair].doc.spec
    tls = getattr(pair_spec, "tls", None)
    certified = tls is not None and tls.mode != "disable" and doc.spec.login and (
        doc.spec.client_certificate or tls.client_certificates == "required")
    actions = ["certificate"] if certified and caller is not None and caller.role != "viewer" and _mine(caller, doc) \
        else []
    spec = doc.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    spec.pop("password", None)  # where the password lives is nobody's business but the server's
    return RoleView(name=doc.metadata.name, pair=pair, owner_user=doc.metadata.labels.get(OWNER_LABEL),
                    managed_by="api" if documents.by_api(loaded, found.source.file) else "specs",
                    declared_in=f"{found.source.file}:{found.source.line}", spec=spec, actions=actions)


@router.get("", response_model=RolePage, responses=errors.RESPONSES)
def list_roles(request: Request, pair: str, caller: Caller, page_size: PageSize = 100,
               page_token: PageToken = None) -> RolePage:
    """The pair's roles as the specs declare them (a member sees the ones it owns)."""
    loaded, found = loaded_pair(context(request), pair)
    views = [_view(loaded, pair, d, caller) for _, d in sorted(found.roles.items())
             if caller.role in ("admin", "viewer") or _mine(caller, d.doc)]
    items, token = page(views, page_size, page_token)
    return RolePage(items=items, next_page_token=token)


@router.get("/{name}", response_model=RoleView, responses=errors.RESPONSES)
def get_role(request: Request, pair: str, name: str, caller: Caller) -> RoleView:
    loaded, found = loaded_pair(context(request), pair)
    role = found.roles.get(name)
    if role is None:
        raise errors.not_found(f"role {name!r} of pair {pair!r}")
    if caller.role == "member" and not _mine(caller, role.doc):
        raise errors.forbidden(f"role {name!r} is not yours")
    return _view(loaded, pair, role, caller)


@router.post("", status_code=202, response_model=Operation | dict[str, Any], responses=errors.RESPONSES)
def create_role(request: Request, pair: str, body: RoleCreate, caller: Caller, response: Response,
                dry_run: bool = False) -> Operation | dict[str, Any]:
    """Create a role: 202 with the operation (`?dry_run=true`: the plan). A login role's password is generated;
    its owner fetches it once at /credentials."""
    ctx = context(request)
    loaded, target = loaded_pair(ctx, pair)
    if caller.role == "viewer":
        raise errors.forbidden("a viewer may not create roles")
    if caller.role == "member":
        if not open_to(caller, target):
            raise errors.forbidden(f"pair {pair!r} is not open to {caller.name!r}")
        if not body.login:
            raise ApiError(403, "a member makes login roles only", field="login")
        for field in ADMIN_ONLY:
            if getattr(body, field):
                raise ApiError(403, f"{field}: only an admin may give it", field=field)
        for parent in body.member_of:
            owner = target.roles.get(parent)
            if owner is None or owner.doc.metadata.labels.get(OWNER_LABEL) != caller.name:
                raise ApiError(403, f"member_of: role {parent!r} is not one of your roles", field="member_of")
    if body.password is not None:
        raise ApiError(422, "password: generated by the API for a login role; leave it out", field="password")
    address = f"role.{pair}.{body.name}"
    if address in loaded.desired.by_address():
        documents.refuse_hand_written(loaded, address)
        raise ApiError(409, f"role {body.name!r} of pair {pair!r} already exists", reason="already_exists")
    spec = body.model_dump(mode="json", by_alias=True, exclude={"name", "password"}, exclude_defaults=True)
    secret = secret_path(loaded, pair, body.name)
    if body.login:
        spec["password"] = {"file": str(secret)}
    document = {"kind": "Role", "metadata": {"name": body.name, "pair": pair, "labels": {OWNER_LABEL: caller.name}},
                "spec": spec}
    path = documents.document_path(loaded, "role", pair, body.name)
    if dry_run:  # the plan reads the password: a stand-in, in a file of its own that goes with the dry run
        response.status_code = 200
        with tempfile.TemporaryDirectory() as scratch:
            stand_in = Path(scratch) / "password"
            write_password(stand_in)
            trial = {**document, "spec": {**spec, **({"password": {"file": str(stand_in)}} if body.login else {})}}
            desired = changes.desired_with(loaded.desired, {address: (RoleDoc.model_validate(trial), path)})
            return changes.dry_run(ctx, loaded, desired, [address])
    changes.desired_with(loaded.desired, {address: (RoleDoc.model_validate(document), path)})  # 422 if it won't hold
    return changes.start(ctx, pair, "CREATE_ROLE", [address], caller.name, {path: document},
                         before=(lambda: write_password(secret)) if body.login else None)


@router.delete("/{name}", status_code=202, response_model=Operation | dict[str, Any] | None,
               responses={**errors.RESPONSES, **errors.GONE_ALREADY})
def delete_role(request: Request, pair: str, name: str, caller: Caller, response: Response,
                dry_run: bool = False) -> Operation | dict[str, Any] | None:
    """Delete a role (its document goes, then apply drops it): 202 with the operation; 204 when already gone."""
    ctx = context(request)
    loaded, target = loaded_pair(ctx, pair)
    found = target.roles.get(name)
    if found is None:
        response.status_code = 204
        return None
    if caller.role == "viewer" or not _mine(caller, found.doc):
        raise errors.forbidden(f"role {name!r} is not yours to delete")
    address = f"role.{pair}.{name}"
    documents.refuse_hand_written(loaded, address)
    desired = changes.desired_with(loaded.desired, {address: (None, None)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    secret = secret_path(loaded, pair, name)
    return changes.start(ctx, pair, "DELETE_ROLE", [address], caller.name, {Path(found.source.file): None},
                         after=lambda: secret.unlink(missing_ok=True))


@router.get("/{name}/credentials", response_model=RoleCredentials, responses={
    **errors.RESPONSES, 410: {"model": errors.ErrorBody, "description": "Already fetched"}})
def role_credentials(request: Request, pair: str, name: str, caller: Caller, response: Response) -> RoleCredentials:
    """A login role's generated password and URI, to its owner, once (the file keeps it for the server)."""
    from pgaasctl.status import connection_uri

    ctx = context(request)
    loaded, target = loaded_pair(ctx, pair)
    found = target.roles.get(name)
    if found is None:
        raise errors.not_found(f"role {name!r} of pair {pair!r}")
    if found.doc.metadata.labels.get(OWNER_LABEL) != caller.name:
        raise errors.forbidden("only the role's owner gets its credentials")
    secret = secret_path(loaded, pair, name)
    shown = secret.with_name(secret.name + ".shown")
    if shown.exists():
        raise ApiError(410, "the password was shown once already", reason="gone")
    if not secret.exists() or ctx.store.managed_object(f"role.{pair}.{name}") is None:
        raise ApiError(409, "the role is not made yet; wait for its operation", reason="not_ready", retryable=True)
    shown.touch(mode=0o600)
    response.headers["Cache-Control"] = "no-store"
    return RoleCredentials(role=name, password=secret.read_text(encoding="utf-8").strip(),
                           uri=connection_uri(target, loaded.desired, ctx.store, None, name, False))


class ClientCertificate(BaseModel):
    role: str
    serial: str
    not_after: str
    certificate: str  # PEM
    private_key: str  # PEM: shown this once, kept nowhere
    ca: str  # PEM: the workspace CA, for sslrootcert


@router.post("/{name}/certificate", status_code=201, response_model=ClientCertificate, responses=errors.RESPONSES)
def client_certificate(request: Request, pair: str, name: str, caller: Caller, response: Response) -> ClientCertificate:
    """A new client certificate for a role that logs in with one (CN = the role), to its owner or an admin: the
    private key is in this answer alone (the store keeps the serial)."""
    from pgaasctl.errors import PgaasError
    from pgaasctl.tls.certificates import new_client_certificate

    ctx = context(request)
    loaded, found = loaded_pair(ctx, pair)
    role = found.roles.get(name)
    if role is None:
        raise errors.not_found(f"role {name!r} of pair {pair!r}")
    if caller.role == "viewer" or not _mine(caller, role.doc):
        raise errors.forbidden(f"role {name!r} is not yours")
    try:
        issued, ca = new_client_certificate(loaded.desired, ctx.store, pair, name)
    except PgaasError as exc:
        raise ApiError(409, errors.said(exc), reason="no_certificate") from None
    response.headers["Cache-Control"] = "no-store"
    return ClientCertificate(role=name, serial=format(issued.serial, "x"), not_after=issued.not_after.isoformat(),
                             certificate=issued.cert_pem.decode(), private_key=issued.key_pem.decode(), ca=ca.decode())
