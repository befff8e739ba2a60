"""/v1/pairs/{pair}/grants: what a role may do in a database, as Grant documents. Admins grant anything; a member
grants access to the databases it owns (to any role), and revokes those grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from pgaasctl.api import changes, documents, errors
from pgaasctl.api.auth import Caller
from pgaasctl.api.common import context, loaded_pair
from pgaasctl.api.errors import ApiError
from pgaasctl.api.operations import Operation
from pgaasctl.api.paging import PageSize, PageToken, page
from pgaasctl.api.users import User
from pgaasctl.spec.desired import DesiredPair
from pgaasctl.spec.models import OWNER_LABEL, GrantDoc, GrantSpec

router = APIRouter(prefix="/v1/pairs/{pair}/grants", tags=["grants"])


class GrantView(BaseModel):
    pair: str
    role: str
    database: str
    owner_user: str | None
    managed_by: str  # api | specs
    declared_in: str
    spec: dict[str, Any]


class GrantPage(BaseModel):
    items: list[GrantView]
    next_page_token: str | None = None


def _owns_database(caller: User, pair: DesiredPair, database: str) -> bool:
    found = pair.databases.get(database)
    return found is not None and found.doc.metadata.labels.get(OWNER_LABEL) == caller.name


def _may_see(caller: User, pair: DesiredPair, doc: GrantDoc) -> bool:
    if caller.role in ("admin", "viewer") or doc.metadata.labels.get(OWNER_LABEL) == caller.name:
        return True
    role = pair.roles.get(doc.spec.role)
    return _owns_database(caller, pair, doc.spec.database) or (
        role is not None and role.doc.metadata.labels.get(OWNER_LABEL) == caller.name)


def _view(loaded: Any, pair: str, found: Any) -> GrantView:
    doc: GrantDoc = found.doc
    return GrantView(pair=pair, role=doc.spec.role, database=doc.spec.database,
                     owner_user=doc.metadata.labels.get(OWNER_LABEL),
                     managed_by="api" if documents.by_api(loaded, found.source.file) else "specs",
                     declared_in=f"{found.source.file}:{found.source.line}",
                     spec=doc.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True))


@router.get("", response_model=GrantPage, responses=errors.RESPONSES)
def list_grants(request: Request, pair: str, caller: Caller, page_size: PageSize = 100,
                page_token: PageToken = None) -> GrantPage:
    """The pair's grants (a member sees those on its databases, to its roles, or made by it)."""
    loaded, found = loaded_pair(context(request), pair)
    views = [_view(loaded, pair, d) for _, d in sorted(found.grants.items()) if _may_see(caller, found, d.doc)]
    items, token = page(views, page_size, page_token)
    return GrantPage(items=items, next_page_token=token)


@router.post("", status_code=202, response_model=Operation | dict[str, Any], responses=errors.RESPONSES)
def create_grant(request: Request, pair: str, body: GrantSpec, caller: Caller, response: Response,
                 dry_run: bool = False) -> Operation | dict[str, Any]:
    """Grant a role privileges in a database (the fields of a Grant document's spec): 202 with the operation."""
    ctx = context(request)
    loaded, target = loaded_pair(ctx, pair)
    if caller.role == "viewer" or (caller.role == "member" and not _owns_database(caller, target, body.database)):
        raise ApiError(403, f"database {body.database!r} is not yours to grant on", field="database")
    address = f"grant.{pair}.{body.database}.{body.role}"
    if address in loaded.desired.by_address():
        documents.refuse_hand_written(loaded, address)
        raise ApiError(409, f"role {body.role!r} already has a grant on {body.database!r}; delete it first",
                       reason="already_exists")
    document = {"kind": "Grant", "metadata": {"pair": pair, "labels": {OWNER_LABEL: caller.name}},
                "spec": body.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
    document["spec"].update({"role": body.role, "database": body.database})
    path = documents.document_path(loaded, "grant", pair, f"{body.database}-{body.role}")
    desired = changes.desired_with(loaded.desired, {address: (GrantDoc.model_validate(document), path)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    return changes.start(ctx, pair, "CREATE_GRANT", [address], caller.name, {path: document})


@router.delete("/{database}/{role}", status_code=202, response_model=Operation | dict[str, Any] | None,
               responses={**errors.RESPONSES, **errors.GONE_ALREADY})
def delete_grant(request: Request, pair: str, database: str, role: str, caller: Caller, response: Response,
                 dry_run: bool = False) -> Operation | dict[str, Any] | None:
    """Revoke a grant (its document goes, then apply revokes the privileges); 204 when already gone."""
    ctx = context(request)
    loaded, target = loaded_pair(ctx, pair)
    found = target.grants.get((database, role))
    if found is None:
        response.status_code = 204
        return None
    if caller.role == "viewer" or (caller.role == "member" and not _owns_database(caller, target, database)):
        raise errors.forbidden(f"database {database!r} is not yours to revoke on")
    address = f"grant.{pair}.{database}.{role}"
    documents.refuse_hand_written(loaded, address)
    desired = changes.desired_with(loaded.desired, {address: (None, None)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    return changes.start(ctx, pair, "DELETE_GRANT", [address], caller.name, {Path(found.source.file): None})
