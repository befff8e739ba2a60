"""What the API's routes share: the context of the request, the pair a path names (404 when the specs declare
none), and a document checked by its model (422 naming the field)."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from pgaasctl import workspace
from pgaasctl.api import errors
from pgaasctl.api.errors import ApiError
from pgaasctl.spec.desired import DesiredPair
from pgaasctl.spec.loader import real_path

M = TypeVar("M", bound=BaseModel)


def context(request: Request) -> Any:
    """The ApiContext (typed Any here: pgaasctl.api.app imports the routes)."""
    return request.app.state.context


def pair_in(loaded: workspace.LoadedWorkspace, name: str) -> DesiredPair:
    pair = loaded.desired.pairs.get(name)
    if pair is None:
        raise errors.not_found(f"pair {name!r}")
    return pair


def loaded_pair(ctx: Any, name: str) -> tuple[workspace.LoadedWorkspace, DesiredPair]:
    loaded = ctx.loaded()
    return loaded, pair_in(loaded, name)


def validated(model: type[M], document: dict[str, Any]) -> M:
    """The document as `model`, or a 422 naming the first field at fault (below the document's top level)."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in real_path(document, tuple(first["loc"]))[1:]) or None
        raise ApiError(422, f"{field}: {first['msg']}" if field else first["msg"], field=field) from None
