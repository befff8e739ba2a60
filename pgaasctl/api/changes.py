"""How every change the API makes is carried out: the documents it writes or removes are checked against the rest
of the specs first (the desired state with the change, built in memory), a dry run plans that state, and a real
change writes the documents under the pair's operation claim and applies exactly their addresses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgaasctl import workspace
from pgaasctl.api import documents
from pgaasctl.api.errors import ApiError
from pgaasctl.api.operations import Operation, Work
from pgaasctl.plan.render import render_json
from pgaasctl.spec.desired import DesiredState, build_desired
from pgaasctl.spec.loader import LoadedDoc, Source


def desired_with(desired: DesiredState, changes: dict[str, tuple[Any, Path | None]]) -> DesiredState:
    """The desired state with the document at each address replaced (a None document: removed), checked like a
    load of the specs would be (422 with the problems)."""
    docs = [d for d in desired.documents if d.address not in changes]
    for doc, path in changes.values():
        if doc is not None:
            assert path is not None
            docs.append(LoadedDoc(doc=doc, source=Source(file=path, line=1)))
    try:
        return build_desired(docs)
    except Exception as exc:  # noqa: BLE001 - SpecError: its problems, said to the caller
        raise ApiError(422, f"the specs would not hold with this change: {getattr(exc, 'message', exc)}") from None


def dry_run(ctx: Any, loaded: workspace.LoadedWorkspace, desired: DesiredState, targets: list[str]) -> dict[str, Any]:
    """The plan of `desired` for `targets` (the JSON of `plan --json`); changes nothing."""
    work = workspace.plan_specs(desired, loaded.spec_dir, ctx.store, targets=targets)
    work.close()
    return json.loads(render_json(work.plan))  # type: ignore[no-any-return]


def applying(ctx: Any, targets: list[str], paths: list[Path], user: str,
             after: Callable[[], None] | None = None, undo: Callable[[], None] | None = None) -> Work:
    """The operation's work: plan the specs as they are on disk for `targets`, apply under the pair's locks, then
    `after`, then commit `paths` in git (when the specs are a repository). A change the planner refuses (nothing
    applied yet) is undone with `undo`, so the specs never keep a document no plan accepts."""
    def work(op: Operation) -> dict[str, Any] | None:
        executing = False
        try:
            loaded = ctx.loaded()
            with workspace.locked_plan(loaded.desired, loaded.spec_dir, ctx.store, targets=targets) as planned:
                plan = json.loads(render_json(planned.plan))
                executing = True
                workspace.execute(planned, ctx.store)
        except BaseException:
            if not executing and undo is not None:
                undo()
            raise
        if after is not None:
            after()
        documents.commit(loaded.spec_dir, paths, user, f"{op.type.lower().replace('_', ' ')} {op.target} "
                         f"(operation {op.id}, by {user})")
        return plan  # type: ignore[no-any-return]

    return work


def start(ctx: Any, pair: str, op_type: str, targets: list[str], user: str,
          documents_to_write: dict[Path, dict[str, Any] | None], before: Callable[[], None] | None = None,
          after: Callable[[], None] | None = None) -> Operation:
    """Write (or, for None, remove) the documents under the pair's claim, then apply `targets` as an operation.
    A change the planner refuses puts the documents back as they were (the operation FAILED with the reason). An
    apply that fails part-way leaves them in place: they are what was asked for, and the next plan shows what is
    left to do."""
    previous: dict[Path, str | None] = {}

    def write() -> None:
        if before is not None:
            before()
        for path, document in documents_to_write.items():
            if document is None:
                previous[path] = path.read_text(encoding="utf-8") if path.exists() else None
                path.unlink(missing_ok=True)
            else:
                previous[path] = documents.write_document(path, document)

    def undo() -> None:
        for path, text in previous.items():
            documents.restore(path, text)

    return ctx.operations.start(pair, op_type, targets[0], user,  # type: ignore[no-any-return]
                                applying(ctx, targets, list(documents_to_write), user, after, undo), before=write)
