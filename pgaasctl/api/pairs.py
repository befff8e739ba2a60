"""/v1/pairs changes (admins): create a pair (its Pair document under the API's directory, applied: provider
`local` makes its nodes), change it (nodes, witness, virtual IP, settings, failover, replication, protection,
labels: the plan says what is cloned or removed, and which settings reload or need a restart; the planner's safety
rules hold as for `pgaasctl apply`), and delete it (destroyed like `pgaasctl destroy` of that pair, then its document goes). Pairs declared by
hand are changed in git, not here (409)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict

from pgaasctl import workspace
from pgaasctl.api import changes, documents, errors
from pgaasctl.api.auth import Admin
from pgaasctl.api.common import context, validated
from pgaasctl.api.errors import ApiError
from pgaasctl.api.operations import Operation
from pgaasctl.plan.render import render_json
from pgaasctl.spec.models import Identifier, Labels, PairDoc, PairSpec

router = APIRouter(prefix="/v1/pairs", tags=["pairs"])


class PairCreate(BaseModel):
    """A new pair: its name, labels, and the spec of a Pair document."""

    model_config = ConfigDict(extra="forbid")
    name: Identifier
    labels: Labels = {}
    spec: PairSpec


class PairPatch(BaseModel):
    """What may change on a pair through the API; the fields given replace what is there."""

    model_config = ConfigDict(extra="forbid")
    nodes: list[dict[str, Any]] | None = None  # add a standby, or replace one: the plan says what is cloned or removed
    witness: dict[str, Any] | None = None
    virtual_ip: str | None = None
    settings: dict[str, Any] | None = None
    replication: Literal["synchronous", "asynchronous"] | None = None
    failover: dict[str, Any] | None = None
    statements: bool | None = None
    deletion_protection: bool | None = None
    labels: dict[str, str] | None = None


@router.post("", status_code=202, response_model=Operation | dict[str, Any], responses=errors.RESPONSES)
def create_pair(request: Request, body: PairCreate, caller: Admin, response: Response,
                dry_run: bool = False) -> Operation | dict[str, Any]:
    """Create a pair (admins): 202 with the operation that makes it (`?dry_run=true`: the plan)."""
    ctx = context(request)
    loaded = ctx.loaded()
    address = f"pair.{body.name}"
    if address in loaded.desired.by_address():
        documents.refuse_hand_written(loaded, address)
        raise ApiError(409, f"pair {body.name!r} already exists", reason="already_exists")
    document = {"kind": "Pair", "metadata": {"name": body.name, **({"labels": body.labels} if body.labels else {})},
                "spec": body.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
    document["spec"]["provider"] = body.spec.provider
    path = documents.document_path(loaded, "pair", body.name, body.name)
    desired = changes.desired_with(loaded.desired, {address: (validated(PairDoc, document), path)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    return changes.start(ctx, body.name, "CREATE_PAIR", [address], caller.name, {path: document})


@router.patch("/{pair}", status_code=202, response_model=Operation | dict[str, Any],
              responses={**errors.RESPONSES, 412: {"model": errors.ErrorBody, "description": "If-Match failed"}})
def update_pair(request: Request, pair: str, body: PairPatch, caller: Admin, response: Response,
                dry_run: bool = False, if_match: Annotated[str | None, Header()] = None) -> Operation | dict[str, Any]:
    """Change a pair (admins): its nodes (a standby added is cloned from the primary; a node left out is removed,
    never the primary), witness, virtual IP, settings (the plan says which reload and which need a restart),
    failover, replication, statements, protection, labels."""
    from pgaasctl.api.app import etag

    ctx = context(request)
    loaded = ctx.loaded()
    found = loaded.desired.pairs.get(pair)
    if found is None:
        raise errors.not_found(f"pair {pair!r}")
    address = f"pair.{pair}"
    documents.refuse_hand_written(loaded, address)
    if if_match is not None and if_match != etag(found.doc):
        raise ApiError(412, "the pair changed since it was read (ETag); read it again", reason="precondition_failed")
    given = body.model_dump(exclude_unset=True)
    metadata = found.doc.metadata.model_dump(mode="json")
    if "labels" in given:
        metadata["labels"] = given.pop("labels") or {}
    spec = {**found.doc.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True), **given}
    spec["provider"] = found.doc.spec.provider
    document = {"kind": "Pair", "metadata": metadata, "spec": spec}
    path = Path(found.loaded.source.file)
    desired = changes.desired_with(loaded.desired, {address: (validated(PairDoc, document), path)})
    if dry_run:
        response.status_code = 200
        return changes.dry_run(ctx, loaded, desired, [address])
    return changes.start(ctx, pair, "UPDATE_PAIR", [address], caller.name, {path: document})


@router.delete("/{pair}", status_code=202, response_model=Operation | dict[str, Any] | None,
               responses={**errors.RESPONSES, **errors.GONE_ALREADY})
def delete_pair(request: Request, pair: str, caller: Admin, response: Response,
                dry_run: bool = False) -> Operation | dict[str, Any] | None:
    """Delete a pair (admins): destroyed as `pgaasctl destroy` would (provider local: its nodes and data go), then
    its document goes. 204 when already gone; 409 while it is protected or still declares objects."""
    ctx = context(request)
    loaded = ctx.loaded()
    found = loaded.desired.pairs.get(pair)
    if found is None:
        response.status_code = 204
        return None
    address = f"pair.{pair}"
    documents.refuse_hand_written(loaded, address)
    if found.doc.spec.deletion_protection:
        raise ApiError(409, f"pair {pair!r} has deletion_protection: true; turn it off first (PATCH)",
                       reason="deletion_protected")
    declared = sorted([*found.databases, *found.roles])
    if declared or found.grants:
        raise ApiError(409, f"pair {pair!r} still declares {', '.join(declared) or 'grants'}; delete them first",
                       reason="not_empty")
    path = Path(found.loaded.source.file)
    if dry_run:
        response.status_code = 200
        work_plan = workspace.plan_specs(loaded.desired, loaded.spec_dir, ctx.store, destroy=True, targets=[address])
        work_plan.close()
        return json.loads(render_json(work_plan.plan))  # type: ignore[no-any-return]

    def work(op: Operation) -> dict[str, Any] | None:
        current = ctx.loaded()
        with workspace.locked_plan(current.desired, current.spec_dir, ctx.store, destroy=True,
                                   targets=[address]) as planned:
            plan = json.loads(render_json(planned.plan))
            workspace.execute(planned, ctx.store)
            workspace.forget_destroyed_pairs(planned, ctx.store)
        path.unlink(missing_ok=True)
        documents.commit(current.spec_dir, [path], caller.name, f"delete pair {pair} (operation {op.id}, by "
                         f"{caller.name})")
        return plan  # type: ignore[no-any-return]

    return ctx.operations.start(pair, "DELETE_PAIR", address, caller.name, work)  # type: ignore[no-any-return]
