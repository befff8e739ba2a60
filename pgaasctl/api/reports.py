"""/v1/pairs/{pair}/report: the report `pgaasctl report` makes (health checks with remedies, charts, databases by
size, top statements, events) for one pair over a period, as JSON, HTML or Markdown. A member gets the pair's own
figures and only its own databases (sizes, statements); with `database`, it must be one it owns."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from pgaasctl.api import errors
from pgaasctl.api.auth import Caller
from pgaasctl.api.common import context, pair_in
from pgaasctl.api.errors import ApiError
from pgaasctl.durations import parse_duration
from pgaasctl.errors import PgaasError
from pgaasctl.monitor.report import PairReport, Report, build_report, render_html, render_json, render_markdown
from pgaasctl.spec.models import OWNER_LABEL

router = APIRouter(prefix="/v1/pairs/{pair}/report", tags=["reports"])
MAX_SECONDS = 90 * 86400
KINDS = {"json": ("application/json", render_json), "html": ("text/html; charset=utf-8", render_html),
         "markdown": ("text/markdown; charset=utf-8", render_markdown)}
Since = Annotated[str, Query(pattern=r"^[0-9]{1,6}(ms|s|m|h|d)$", description="The period: 15m, 1h, 24h, 7d...")]


@router.get("", responses={**errors.RESPONSES, 200: {"content": {"application/json": {}, "text/html": {},
                                                                 "text/markdown": {}}}})
def pair_report(request: Request, pair: str, caller: Caller, since: Since = "24h", database: str | None = None,
                format: Literal["json", "html", "markdown"] = "json", download: bool = False) -> Response:
    """The pair's report over `since` (from the agent's history). `download=true` names it as an attachment."""
    ctx = context(request)
    found = pair_in(ctx.loaded(), pair)
    owned = {name for name, d in found.databases.items() if d.doc.metadata.labels.get(OWNER_LABEL) == caller.name}
    if database is not None and database not in found.databases:
        raise errors.not_found(f"database {database!r} of pair {pair!r}")
    if caller.role == "member" and database is not None and database not in owned:
        raise errors.forbidden(f"database {database!r} is not yours")
    try:
        seconds = parse_duration(since, "since")
    except PgaasError as exc:
        raise ApiError(422, exc.message, field="since") from None
    if seconds > MAX_SECONDS:
        raise ApiError(422, "since: at most 90d", field="since")
    try:
        report = build_report(ctx.store, [pair], database, seconds)
    except PgaasError as exc:  # the database has no samples in the period
        raise ApiError(404, exc.message, reason="no_samples") from None
    if caller.role == "member":
        report = _only(report, owned)
    media, render = KINDS[format]
    headers = {"Cache-Control": "no-store"}
    if download:
        suffix = {"json": "json", "html": "html", "markdown": "md"}[format]
        headers["Content-Disposition"] = f'attachment; filename="pgaasctl-{pair}-{since}.{suffix}"'
    return Response(render(report), media_type=media, headers=headers)


def _only(report: Report, databases: set[str]) -> Report:
    """The report with no other member's database in it (its size, growth or statements)."""
    def mine(pair: PairReport) -> PairReport:
        charts = [c.model_copy(update={"series": [s for s in c.series if s.label in databases]})
                  if c.title == "Database size" else c for c in pair.charts]
        return pair.model_copy(update={
            "charts": charts, "databases": [d for d in pair.databases if d.database in databases],
            "statements": [s for s in pair.statements if s.database in databases],
            "checks": [c for c in pair.checks if not c.database or c.database in databases]})

    return report.model_copy(update={"pairs": [mine(p) for p in report.pairs]})
