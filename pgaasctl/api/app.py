"""`pgaasctl serve`: the REST API (FastAPI). A thin shell over the same core functions as the CLI: reads come from
the lookup the agent keeps (the agent runs in the same process), never from a node on each request."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from pgaasctl import workspace
from pgaasctl.api import errors
from pgaasctl.api.errors import ApiError, ErrorBody
from pgaasctl.api.users import ROLES, Role, User, authenticate
from pgaasctl.errors import PgaasError
from pgaasctl.monitor.agent import Agent
from pgaasctl.monitor.endpoint import LookupCollector
from pgaasctl.monitor.models import CheckResult, LookupNode
from pgaasctl.spec.desired import DesiredPair
from pgaasctl.store import Store

API_VERSION = "v1"
MAX_PAGE_SIZE = 500
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in ((401, "No valid credentials"), (403, "Not allowed"), (404, "Not found"),
                              (422, "Invalid request"))
}


@dataclass
class ApiContext:
    """What every request reads: the workspace, the store (one connection, shared under its lock), the agent."""

    path: Path
    store: Store
    agent: Agent | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def desired(self) -> workspace.LoadedWorkspace:
        return workspace.load(self.path)


# ---------------------------------------------------------------- response models

class PairSummary(BaseModel):
    name: str
    provider: str
    replication: str
    healthy: bool | None  # None: no look at it yet
    primary: str | None
    checked_at: str | None
    worst_check: CheckResult | None = None


class PairDetail(PairSummary):
    nodes: list[LookupNode] = []
    reasons: list[str] = []
    error: str | None = None
    virtual_ip: str | None = None
    checks: list[CheckResult] = []


class Page(BaseModel):
    next_page_token: str | None = None


class PairPage(Page):
    items: list[PairSummary]


class ConnectionDetails(BaseModel):
    pair: str
    uri: str  # a libpq URI without a password: every node, read-write target (or the virtual IP)
    hosts: list[str]
    virtual_ip: str | None = None


class Health(BaseModel):
    status: str
    agent_rounds: int
    seconds_since_last_round: float | None


# ---------------------------------------------------------------- authentication and authorization

def _context(request: Request) -> ApiContext:
    return request.app.state.context  # type: ignore[no-any-return]


def current_user(request: Request,
                 authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> User:
    """The caller, from `Authorization: Bearer <token>`; 401 without a usable one."""
    if not authorization:
        raise errors.unauthenticated()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.unauthenticated("Send `Authorization: Bearer <token>`.")
    found = authenticate(_context(request).store, token.strip())
    if found is None:
        raise errors.unauthenticated("The token is unknown, expired or revoked, or its user is disabled.")
    return found


def allowed(*roles: Role) -> Callable[[User], User]:
    def check(caller: Annotated[User, Depends(current_user)]) -> User:
        if caller.role not in roles:
            raise errors.forbidden(f"a {caller.role} may not do this (it needs: {', '.join(roles)})")
        return caller

    return check


Reader = Annotated[User, Depends(allowed(*ROLES))]


# ---------------------------------------------------------------- helpers

def _page(items: list[Any], page_size: int, page_token: str | None) -> tuple[list[Any], str | None]:
    start = 0
    if page_token:
        if not page_token.isdigit() or int(page_token) > len(items):
            raise ApiError(422, "page_token is not one this API gave", field="page_token")
        start = int(page_token)
    end = start + page_size
    return items[start:end], (str(end) if end < len(items) else None)


def _etag(model: BaseModel) -> str:
    return '"' + hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:32] + '"'


def _pair_or_404(ctx: ApiContext, name: str) -> DesiredPair:
    loaded = _loaded(ctx)
    pair = loaded.desired.pairs.get(name)
    if pair is None:
        raise errors.not_found(f"pair {name!r}")
    return pair


def _loaded(ctx: ApiContext) -> workspace.LoadedWorkspace:
    try:
        return ctx.desired()
    except PgaasError as exc:  # the specs on disk are broken: the API says so instead of guessing
        raise ApiError(503, f"the workspace's specs do not load: {exc.message}", retryable=True) from None


def _summary(ctx: ApiContext, name: str, provider: str, replication: str) -> PairDetail:
    lookup = ctx.store.lookup(name)
    detail = PairDetail(name=name, provider=provider, replication=replication, healthy=None, primary=None,
                        checked_at=None)
    if lookup is not None:
        detail.healthy, detail.primary, detail.checked_at = lookup.healthy, lookup.primary, lookup.checked_at
        detail.worst_check, detail.nodes, detail.reasons = lookup.worst_check, lookup.nodes, lookup.reasons
        detail.error, detail.checks = lookup.error, lookup.checks
    return detail


# ---------------------------------------------------------------- the app

def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="pgaasctl", version="1", description="PostgreSQL as a service on your own VMs: pairs, "
                  "databases, roles and access, on the same specs and planner as the CLI.")
    app.state.context = ctx
    errors.install(app)

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz(response: Response) -> Health:
        """200 while the agent's rounds succeed (or before its first), 503 when its last success is old."""
        agent = ctx.agent
        if agent is None:
            return Health(status="ok", agent_rounds=0, seconds_since_last_round=None)
        snapshot = agent.snapshot()
        since = agent.seconds_since_success()
        stale = since is not None and since > max(30.0, 6 * agent.interval)
        response.status_code = 503 if stale else 200
        return Health(status="stale" if stale else "ok", agent_rounds=snapshot.rounds, seconds_since_last_round=since)

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: the agent's (see the README's Monitoring section)."""
        registry = CollectorRegistry()
        if ctx.agent is not None:
            registry.register(LookupCollector(ctx.agent))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"/{API_VERSION}/pairs", response_model=PairPage, responses=ERRORS, tags=["pairs"])
    def list_pairs(_: Reader, page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
                   page_token: str | None = None) -> PairPage:
        """Every pair the workspace declares, with its health as the agent last saw it."""
        loaded = _loaded(ctx)
        summaries = [PairSummary(**_summary(ctx, p.name, p.doc.spec.provider, p.doc.spec.replication).model_dump(
            include=set(PairSummary.model_fields))) for p in sorted(loaded.desired.pairs.values(), key=lambda p: p.name)]
        items, token = _page(summaries, page_size, page_token)
        return PairPage(items=items, next_page_token=token)

    @app.get(f"/{API_VERSION}/pairs/{{pair}}", response_model=PairDetail, responses=ERRORS, tags=["pairs"])
    def get_pair(pair: str, _: Reader, response: Response) -> PairDetail:
        """One pair: its nodes and their roles, replication and lag, health checks, virtual IP."""
        found = _pair_or_404(ctx, pair)
        detail = _summary(ctx, pair, found.doc.spec.provider, found.doc.spec.replication)
        vip = getattr(found.doc.spec, "virtual_ip", None)
        detail.virtual_ip = str(vip) if vip is not None else None
        response.headers["ETag"] = _etag(detail)
        return detail

    @app.get(f"/{API_VERSION}/pairs/{{pair}}/connection", response_model=ConnectionDetails, responses=ERRORS,
             tags=["pairs"])
    def pair_connection(pair: str, _: Reader, database: str | None = None, role: str | None = None,
                        virtual_ip: bool = False) -> ConnectionDetails:
        """The URI clients should use (no password in it): every node, read-write target, so it follows a
        failover; or the pair's virtual IP."""
        from pgaasctl.status import connection_uri

        loaded = _loaded(ctx)
        found = _pair_or_404(ctx, pair)
        uri = connection_uri(found, loaded.desired, ctx.store, database, role, virtual_ip)
        vip = getattr(found.doc.spec, "virtual_ip", None)
        lookup = ctx.store.lookup(pair)
        hosts = [n.address for n in lookup.nodes if n.address and n.role != "witness"] if lookup else []
        return ConnectionDetails(pair=pair, uri=uri, hosts=hosts, virtual_ip=str(vip) if vip is not None else None)

    return app
