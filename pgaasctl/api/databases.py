"""/v1/pairs/{pair}/databases: list, read, create and delete databases. A change writes (or removes) the
database's document under the API's directory and applies it as an operation; `?dry_run=true` returns the plan
instead. Members see and change only the databases they own (the `pgaas.owner` label), and create them only on
pairs opened to them (`pgaas.members`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict

from pgaasctl import workspace
from pgaasctl.api import changes, documents, errors
from pgaasctl.api.auth import Caller
from pgaasctl.api.common import context, pair_in, validated
from pgaasctl.api.errors import ApiError
from pgaasctl.api.kept_reads import page_key
from pgaasctl.api.operations import Operation
from pgaasctl.api.paging import PageSize, PageToken, RenderedPages, page
from pgaasctl.api.users import User
from pgaasctl.spec.desired import DesiredPair
from pgaasctl.spec.loader import LoadedDoc
from pgaasctl.spec.models import (
    MEMBERS_LABEL,
    OWNER_LABEL,
    DatabaseDoc,
    DatabaseSpec,
    Identifier,
)

router = APIRouter(prefix="/v1/pairs/{pair}/databases", tags=["databases"])


class DatabaseCreate(DatabaseSpec):
    """A new database: its name and the same fields as a Database document's spec."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"example": {"name": "orders"}})
    name: Identifier


class DatabasePatch(BaseModel):
    """What may change on a database after its creation; the fields given replace what is there (settings,
    extensions and schemas as a whole)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    owner: Identifier | None = None
    connection_limit: int | None = None
    allow_connections: bool | None = None
    settings: dict[str, Any] | None = None
    extensions: list[Any] | None = None
    schemas: list[Any] | None = None
    deletion_protection: bool | None = None


class Access(BaseModel):
    """A role's grant on the database, as the specs declare it."""

    role: str
    privileges: list[str] | None = None  # on the database itself (CONNECT, CREATE, TEMPORARY)
    schemas: dict[str, Any] = {}


class DatabaseView(BaseModel):
    name: str
    pair: str
    owner_user: str | None  # the API user who owns it (label pgaas.owner); None: declared by hand
    declared_in: str  # file:line of its document
    managed_by: str  # api | specs
    size_bytes: float | None  # as the agent last sampled it
    spec: dict[str, Any]
    access: list[Access] = []  # who has access: the grants on it
    actions: list[str] = []  # what the caller may do to it: change, delete, grant (the console offers these alone)


class DatabasePage(BaseModel):
    items: list[DatabaseView]
    next_page_token: str | None = None




def _view(ctx: Any, loaded: workspace.LoadedWorkspace, pair: str, loaded_doc: LoadedDoc, caller: User,
          sizes: dict[str, float] | None = None) -> DatabaseView:
    doc: DatabaseDoc = loaded_doc.doc
    size = (sizes if sizes is not None else ctx.sizes(pair)).get(doc.metadata.name)
    grants = loaded.desired.pairs[pair].grants
    access = [Access(role=role, privileges=g.doc.spec.privileges,
                     schemas={k: v.model_dump(mode="json", exclude_none=True) for k, v in g.doc.spec.schemas.items()})
              for (database, role), g in sorted(grants.items()) if database == doc.metadata.name]
    by_hand = not documents.by_api(loaded, loaded_doc.source.file)
    return DatabaseView(name=doc.metadata.name, pair=pair, owner_user=doc.metadata.labels.get(OWNER_LABEL),
                        declared_in=f"{loaded_doc.source.file}:{loaded_doc.source.line}",
                        managed_by="specs" if by_hand else "api", size_bytes=size,
                        spec=doc.spec.model_dump(mode="json", by_alias=True), access=access,
                        actions=_actions(caller, doc, by_hand))


def _may_change(caller: User, doc: DatabaseDoc) -> bool:
    return caller.role == "admin" or (caller.role == "member" and doc.metadata.labels.get(OWNER_LABEL) == caller.name)


def _actions(caller: User, doc: DatabaseDoc, by_hand: bool) -> list[str]:
    if not _may_change(caller, doc):
        return []
    return ["grant"] if by_hand else ["change", "delete", "grant"]  # one declared by hand changes in git


def _may_read(caller: User, doc: DatabaseDoc) -> bool:
    return caller.role in ("admin", "viewer") or doc.metadata.labels.get(OWNER_LABEL) == caller.name


def open_to(caller: User, pair: DesiredPair) -> bool:
    if caller.role == "admin":
        return True
    members = pair.doc.metadata.labels.get(MEMBERS_LABEL, "")
    return caller.role == "member" and (members.strip() == "*" or caller.name in {m.strip() for m in members.split(",")})


@router.get("", response_model=DatabasePage, responses=errors.RESPONSES)
async def list_databases(request: Request, pair: str, caller: Caller,
                         page_size: PageSize = 100, page_token: PageToken = None) -> DatabasePage:
    """The pair's databases as the specs declare them (a member sees the ones it owns)."""
    ctx = context(request)
    loaded = ctx.loaded(fresh=False)
    found = pair_in(loaded, pair)
    sizes = ctx.sizes(pair)
    rendered = ctx.pages.setdefault(pair, RenderedPages())
    rendered.current((loaded, sizes))  # the specs or the sizes changed: render again
    key = page_key(caller.role, caller.name, request.scope["query_string"])
    body = rendered.body(key)
    if body is None:
        views = [_view(ctx, loaded, pair, d, caller, sizes) for _, d in sorted(found.databases.items())
                 if _may_read(caller, d.doc)]
        items, token = page(views, page_size, page_token)
        body = rendered.keep(key, DatabasePage(items=items, next_page_token=token).model_dump_json().encode())
    # the bytes as they are: FastAPI's own validation and encoding of the response would cost more than the rest
    return Response(body, media_type="application/json")  # type: ignore[return-value]


@router.get("/{name}", response_model=DatabaseView, responses=errors.RESPONSES)
def get_database(request: Request, pair: str, name: str, caller: Caller, response: Response) -> DatabaseView:
    from pgaasctl.api.app import etag

    ctx = context(request)
    loaded = ctx.loaded()
    found = pair_in(loaded, pair).databases.get(name)
    if found is None:
        raise errors.not_found(f"database {name!r} of pair {pair!r}")
    if not _may_read(caller, found.doc):
        raise errors.forbidden(f"database {name!r} is not yours")
    response.headers["ETag"] = etag(found.doc)  # of the document: what If-Match guards, not the sampled size
    return _view(ctx, loaded, pair, found, caller)


@router.post("", status_code=202, response_model=Operation | dict[str, Any], responses=errors.RESPONSES)
def create_database(request: Request, pair: str, body: DatabaseCreate, caller: Caller, response: Response,
                    dry_run: bool = False) -> Operation | dict[str, Any]:
    """Create a database: 202 with the operation that applies it (`?dry_run=true`: 200 with the plan)."""
    ctx = context(request)
    loaded = ctx.loaded()
    target = pair_in(loaded, pair)
    if caller.role not in ("admin", "member") or not open_to(caller, target):
        raise errors.forbidden(f"pair {pair!r} is not open to {caller.name!r} for new databases"
                               if caller.role == "member" else f"a {caller.role} may not create databases")
    if body.adopt and caller.role != "admin":
        raise errors.forbidden("only an admin may adopt a database that already exists (its data would be yours)")
    if body.owner is not None and caller.role != "admin":
        role = target.roles.get(body.owner)
        if role is None or role.doc.metadata.labels.get(OWNER_LABEL) != caller.name:
            raise ApiError(403, f"owner: role {body.owner!r} is not one of your roles", field="owner")
    address = f"database.{pair}.{body.name}"
    if address in loaded.desired.by_address():
        documents.refuse_hand_written(loaded, address)
        raise ApiError(409, f"database {body.name!r} of pair {pair!r} already exists", reason="already_exists")
    document = {"kind": "Database", "metadata": {"name": body.name, "pair": pair, "labels": {OWNER_LABEL: caller.name}},
                "spec": body.model_dump(mode="json", by_alias=True, exclude={"name"}, exclude_defaults=True)}
    path = documents.document_path(loaded, "database", pair, body.name)
    desired = changes.desired_with(loaded.desired, {address: (DatabaseDoc.model_validate(document), path)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    return changes.start(ctx, pair, "CREATE_DATABASE", [address], caller.name, {path: document})


@router.patch("/{name}", status_code=202, response_model=Operation | dict[str, Any],
              responses={**errors.RESPONSES, 412: {"model": errors.ErrorBody, "description": "If-Match failed"}})
def update_database(request: Request, pair: str, name: str, body: DatabasePatch, caller: Caller, response: Response,
                    dry_run: bool = False, if_match: Annotated[str | None, Header()] = None) -> Operation | dict[str, Any]:
    """Change a database: 202 with the operation (`?dry_run=true`: the plan). With `If-Match`, only while the
    database is as the ETag the caller read (else 412)."""
    from pgaasctl.api.app import etag

    ctx = context(request)
    loaded = ctx.loaded()
    target = pair_in(loaded, pair)
    found = target.databases.get(name)
    if found is None:
        raise errors.not_found(f"database {name!r} of pair {pair!r}")
    if not _may_change(caller, found.doc):
        raise errors.forbidden(f"database {name!r} is not yours to change")
    address = f"database.{pair}.{name}"
    documents.refuse_hand_written(loaded, address)
    if if_match is not None and if_match != etag(found.doc):
        raise ApiError(412, "the database changed since it was read (ETag); read it again", reason="precondition_failed")
    given = body.model_dump(exclude_unset=True)
    if "owner" in given and caller.role != "admin":
        role = target.roles.get(given["owner"] or "")
        if role is None or role.doc.metadata.labels.get(OWNER_LABEL) != caller.name:
            raise ApiError(403, f"owner: role {given['owner']!r} is not one of your roles", field="owner")
    spec = {**found.doc.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True), **given}
    document = {"kind": "Database", "metadata": found.doc.metadata.model_dump(mode="json"), "spec": spec}
    doc = validated(DatabaseDoc, document)
    path = Path(found.source.file)
    desired = changes.desired_with(loaded.desired, {address: (doc, path)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    return changes.start(ctx, pair, "UPDATE_DATABASE", [address], caller.name, {path: document})


@router.delete("/{name}", status_code=202, response_model=Operation | dict[str, Any] | None,
               responses={**errors.RESPONSES, **errors.GONE_ALREADY})
def delete_database(request: Request, pair: str, name: str, caller: Caller, response: Response,
                    dry_run: bool = False) -> Operation | dict[str, Any] | None:
    """Delete a database (its document goes, then apply drops it): 202 with the operation; 204 when it is already
    gone. Deletion protection holds (409, with the reason)."""
    ctx = context(request)
    loaded = ctx.loaded()
    target = pair_in(loaded, pair)
    address = f"database.{pair}.{name}"
    found = target.databases.get(name)
    if found is None:
        response.status_code = 204
        return None
    if not _may_change(caller, found.doc):
        raise errors.forbidden(f"database {name!r} is not yours to delete")
    documents.refuse_hand_written(loaded, address)
    if found.doc.spec.deletion_protection:
        raise ApiError(409, f"database {name!r} has deletion_protection: true; turn it off first",
                       reason="deletion_protected")
    desired = changes.desired_with(loaded.desired, {address: (None, None)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    return changes.start(ctx, pair, "DELETE_DATABASE", [address], caller.name, {Path(found.source.file): None})
