"""`pgaasctl serve`: the REST API (FastAPI). A thin shell over the same core functions as the CLI: reads come from
the lookup the agent keeps (the agent runs in the same process), never from a node on each request."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from pgaasctl import workspace
from pgaasctl.api import access, accounts, databases, documents, errors, grants, pairs, reports, roles, sessions
from pgaasctl.api.auth import Admin, Reader
from pgaasctl.api.common import pair_in
from pgaasctl.api.errors import ApiError
from pgaasctl.api.kept_reads import KeptReads
from pgaasctl.api.operations import Operation, OperationRunner
from pgaasctl.api.paging import PageSize, PageToken, RenderedPages, page
from pgaasctl.api.users import User
from pgaasctl.console.app import install as install_console
from pgaasctl.errors import PgaasError
from pgaasctl.monitor.agent import Agent
from pgaasctl.monitor.endpoint import LookupCollector
from pgaasctl.monitor.models import CheckResult, LookupNode
from pgaasctl.spec.desired import DesiredPair
from pgaasctl.spec.models import MEMBERS_LABEL
from pgaasctl.store import Store

API_VERSION = "v1"
MAX_BODY_BYTES = 64 * 1024
SPEC_CHECK_SECONDS = 0.5  # a hand edit of the specs shows within this long
ERRORS = errors.RESPONSES


@dataclass
class ApiContext:
    """What every request reads: the workspace, the store (one connection, shared under its lock), the agent."""

    path: Path
    store: Store
    agent: Agent | None = None
    operations: OperationRunner = field(init=False)
    _cached: tuple[tuple[tuple[str, int, int], ...], workspace.LoadedWorkspace] | None = None
    _checked_at: float = 0.0  # time.monotonic() of the last look at the spec files
    _cache_lock: threading.Lock = field(default_factory=threading.Lock)
    pages: dict[str, RenderedPages] = field(default_factory=dict)  # per pair: its databases list, rendered
    _sizes: dict[str, tuple[Any, dict[str, float]]] = field(default_factory=dict)  # per pair: (samples, sizes)

    def __post_init__(self) -> None:
        self.operations = OperationRunner(self.store)

    def loaded(self, fresh: bool = True) -> workspace.LoadedWorkspace:
        """The workspace as the specs on disk say (at once; with `fresh=False`, for the busiest reads, a hand edit
        within SPEC_CHECK_SECONDS). Loaded again only when a spec file changed: a look at every file's size and time costs
        far less than parsing them all."""
        with self._cache_lock:
            cached, checked_at = self._cached, self._checked_at
        if not fresh and cached is not None and time.monotonic() - checked_at < SPEC_CHECK_SECONDS:
            return cached[1]
        if cached is not None and _stamp(cached[1]) == cached[0]:
            with self._cache_lock:
                self._checked_at = time.monotonic()
            return cached[1]
        try:
            fresh = workspace.load(self.path)
        except PgaasError as exc:  # broken specs on disk: said, not guessed around
            raise ApiError(503, f"the workspace's specs do not load: {exc.message}", retryable=True) from None
        with self._cache_lock:
            self._cached, self._checked_at = (_stamp(fresh), fresh), time.monotonic()
        return fresh


    def sizes(self, pair: str) -> dict[str, float]:
        """Each database's size as the agent last sampled it (the largest of the nodes' figures). From the agent's
        memory, and the same dict until its next samples of the pair; from the store before its first."""
        samples = self.agent.latest_samples(pair) if self.agent is not None else None
        if samples is None:
            found: dict[str, float] = {}
            for sample in sorted(self.store.latest(pair, "pg_database_size_bytes"), key=lambda s: s.at):
                found[sample.database] = sample.value
            return found
        kept = self._sizes.get(pair)
        if kept is not None and kept[0] is samples:
            return kept[1]
        sizes: dict[str, float] = {}
        for node_samples in samples.values():
            for sample in node_samples:
                if sample.metric == "pg_database_size_bytes":
                    sizes[sample.database] = max(sample.value, sizes.get(sample.database, 0.0))
        self._sizes[pair] = (samples, sizes)
        return sizes


def _stamp(loaded: workspace.LoadedWorkspace) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file the workspace is read from; a file added or removed changes it too."""
    files = [p for pattern in ("*.yaml", "*.yml") for p in loaded.spec_dir.rglob(pattern)]
    if loaded.location.workspace_file is not None:
        files.append(loaded.location.workspace_file)
    stamp = []
    for path in sorted(set(files)):
        try:
            status = path.stat()
        except OSError:
            continue
        stamp.append((str(path), status.st_size, status.st_mtime_ns))
    return tuple(stamp)


# ---------------------------------------------------------------- response models

class PairSummary(BaseModel):
    name: str
    provider: str
    replication: str
    healthy: bool | None  # None: no look at it yet
    primary: str | None
    checked_at: str | None
    worst_check: CheckResult | None = None
    nodes: list[LookupNode] = []
    reasons: list[str] = []  # why it is not healthy
    error: str | None = None
    virtual_ip: str | None = None
    managed_by: str = "specs"  # api | specs: a pair declared by hand changes in git
    members: str = ""  # who among the members may create databases on it: "*", names, or "" (nobody)
    actions: list[str] = []  # what the caller may do: create_database, change, switchover, delete


class PairDetail(PairSummary):
    checks: list[CheckResult] = []
    settings: dict[str, Any] = {}  # the server parameters the spec sets
    restart_settings: list[str] = []  # which of them take effect only at a restart (the others at a reload)
    deletion_protection: bool = True
    declared_in: str = ""  # file:line of its document
    labels: dict[str, str] = {}


class Page(BaseModel):
    next_page_token: str | None = None


class PairPage(Page):
    items: list[PairSummary]


class ConnectionDetails(BaseModel):
    pair: str
    uri: str  # a libpq URI without a password: every node, read-write target (or the virtual IP)
    hosts: list[str]
    virtual_ip: str | None = None


class OperationPage(Page):
    items: list[Operation]


class Health(BaseModel):
    status: str
    agent_rounds: int
    seconds_since_last_round: float | None


# ---------------------------------------------------------------- authentication and authorization

def _context(request: Request) -> ApiContext:
    return request.app.state.context  # type: ignore[no-any-return]


# ---------------------------------------------------------------- helpers

def etag(model: BaseModel) -> str:
    return '"' + hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:32] + '"'


def _pair_or_404(ctx: ApiContext, name: str) -> DesiredPair:
    loaded = ctx.loaded()
    pair = loaded.desired.pairs.get(name)
    if pair is None:
        raise errors.not_found(f"pair {name!r}")
    return pair


def _summary(ctx: ApiContext, loaded: workspace.LoadedWorkspace, pair: DesiredPair, caller: User) -> PairDetail:
    """The pair as the lookup last saw it, what its spec says, and what the caller may do to it."""
    lookup = ctx.store.lookup(pair.name)
    spec = pair.doc.spec
    vip = getattr(spec, "virtual_ip", None)
    by_api = documents.by_api(loaded, pair.loaded.source.file)
    actions = ["create_database"] if databases.open_to(caller, pair) else []
    if caller.role == "admin":
        actions += ["switchover"] + (["change", "delete"] if by_api else [])
    detail = PairDetail(name=pair.name, provider=spec.provider, replication=spec.replication, healthy=None,
                        primary=None, checked_at=None, virtual_ip=str(vip) if vip is not None else None,
                        managed_by="api" if by_api else "specs", actions=actions,
                        members=pair.doc.metadata.labels.get(MEMBERS_LABEL, ""),
                        settings=dict(spec.settings), deletion_protection=spec.deletion_protection,
                        declared_in=f"{pair.loaded.source.file}:{pair.loaded.source.line}",
                        labels=dict(pair.doc.metadata.labels))
    if lookup is not None:
        detail.healthy, detail.primary, detail.checked_at = lookup.healthy, lookup.primary, lookup.checked_at
        detail.worst_check, detail.nodes, detail.reasons = lookup.worst_check, lookup.nodes, lookup.reasons
        detail.error, detail.checks = lookup.error, lookup.checks
        detail.restart_settings = [name for name in lookup.restart_settings if name in detail.settings]
    return detail


# ---------------------------------------------------------------- the app

class BoundedBodies:
    """A request body over MAX_BODY_BYTES is refused before it is read (413); so is one of unknown length (411).
    Plain ASGI: Starlette's decorator middleware costs a task per request, on every read too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            refusal = None
            if length is None and headers.get(b"transfer-encoding"):
                refusal = ApiError(411, "send Content-Length; a streamed body is not accepted", reason="length_required")
            elif length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                refusal = ApiError(413, f"the request body is over {MAX_BODY_BYTES // 1024} KiB")
            if refusal is not None:
                await errors.reply(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="pgaasctl", version="1", docs_url=None, redoc_url=None, description="PostgreSQL as a service on your own VMs: pairs, "
                  "databases, roles and access, on the same specs and planner as the CLI.")
    app.state.context = ctx
    errors.install(app)

    app.add_middleware(BoundedBodies)
    app.add_middleware(KeptReads, ctx=ctx)  # added last: the outermost, before the body check and the routes

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz(response: Response) -> Health:
        """200 while the agent's rounds succeed (or before its first), 503 when its last success is old."""
        agent = ctx.agent
        if agent is None:
            return Health(status="ok", agent_rounds=0, seconds_since_last_round=None)
        since = agent.seconds_since_success()
        stale = since is not None and since > max(30.0, 6 * agent.interval)
        response.status_code = 503 if stale else 200
        return Health(status="stale" if stale else "ok", agent_rounds=agent.rounds(), seconds_since_last_round=since)

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: the agent's (see the README's Monitoring section)."""
        registry = CollectorRegistry()
        if ctx.agent is not None:
            registry.register(LookupCollector(ctx.agent))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"/{API_VERSION}/me", response_model=User, responses=ERRORS, tags=["users"])
    def me(caller: Reader) -> User:
        """Who the caller is: name and role."""
        return caller

    @app.get(f"/{API_VERSION}/pairs", response_model=PairPage, responses=ERRORS, tags=["pairs"])
    def list_pairs(caller: Reader, page_size: PageSize = 100,
                   page_token: PageToken = None) -> PairPage:
        """Every pair the workspace declares, with its nodes and health as the agent last saw them."""
        loaded = ctx.loaded(fresh=False)
        summaries = [PairSummary(**_summary(ctx, loaded, p, caller).model_dump(include=set(PairSummary.model_fields)))
                     for p in sorted(loaded.desired.pairs.values(), key=lambda p: p.name)]
        items, token = page(summaries, page_size, page_token)
        return PairPage(items=items, next_page_token=token)

    @app.get(f"/{API_VERSION}/pairs/{{pair}}", response_model=PairDetail, responses=ERRORS, tags=["pairs"])
    def get_pair(pair: str, caller: Reader, response: Response) -> PairDetail:
        """One pair: its nodes and their roles, replication and lag, health checks, virtual IP, settings."""
        loaded = ctx.loaded()
        found = pair_in(loaded, pair)
        detail = _summary(ctx, loaded, found, caller)
        response.headers["ETag"] = etag(found.doc)  # of the document: what If-Match guards, not the health
        return detail

    @app.get(f"/{API_VERSION}/pairs/{{pair}}/connection", response_model=ConnectionDetails, responses=ERRORS,
             tags=["pairs"])
    def pair_connection(pair: str, _: Reader, database: str | None = None, role: str | None = None,
                        virtual_ip: bool = False) -> ConnectionDetails:
        """The URI clients should use (no password in it): every node, read-write target, so it follows a
        failover; or the pair's virtual IP."""
        from pgaasctl.status import connection_uri

        loaded = ctx.loaded()
        found = _pair_or_404(ctx, pair)
        uri = connection_uri(found, loaded.desired, ctx.store, database, role, virtual_ip)
        vip = getattr(found.doc.spec, "virtual_ip", None)
        lookup = ctx.store.lookup(pair)
        hosts = [n.address for n in lookup.nodes if n.address and n.role != "witness"] if lookup else []
        return ConnectionDetails(pair=pair, uri=uri, hosts=hosts, virtual_ip=str(vip) if vip is not None else None)

    @app.get(f"/{API_VERSION}/operations/{{operation}}", response_model=Operation, responses=ERRORS,
             tags=["operations"])
    def get_operation(operation: str, caller: Reader,
                      wait: Annotated[str | None, Query(pattern=r"^([0-9]|[1-5][0-9]|60)s$", description="Long-poll: "
                                                        "wait up to this long (0s to 60s) for the operation to end.")]
                      = None) -> Operation:
        """An operation; with `?wait=30s`, answered when it ends (or when the wait is over)."""
        seconds = _wait_seconds(wait)
        found = ctx.operations.wait(operation, seconds) if seconds else ctx.operations.get(operation)
        if found is None or (caller.role == "member" and found.user != caller.name):
            raise errors.not_found(f"operation {operation!r}")
        return found

    @app.get(f"/{API_VERSION}/operations", response_model=OperationPage, responses=ERRORS, tags=["operations"])
    def list_operations(caller: Reader, pair: str | None = None,
                        page_size: PageSize = 100,
                        page_token: PageToken = None) -> OperationPage:
        """Operations, newest first (a member sees its own)."""
        found = [op for op in ctx.operations.list(pair) if caller.role != "member" or op.user == caller.name]
        items, token = page(found, page_size, page_token)
        return OperationPage(items=items, next_page_token=token)

    @app.post(f"/{API_VERSION}/pairs/{{pair}}/switchover", status_code=202, response_model=Operation,
              responses=ERRORS, tags=["pairs"])
    def switchover(pair: str, caller: Admin,
                   to: Annotated[str | None, Query(description="The standby to promote (default: the standby).")]
                   = None) -> Operation:
        """Planned maintenance (admins): promote the standby, the old primary follows it; no commit is lost."""
        _pair_or_404(ctx, pair)

        def work(_: Operation) -> dict[str, Any] | None:
            old, new = workspace.switchover_pair(ctx.loaded().desired, ctx.store, pair, to)
            return {"switchover": {"old_primary": old, "new_primary": new}}

        return ctx.operations.start(pair, "SWITCHOVER", f"pair.{pair}", caller.name, work)

    app.include_router(pairs.router)
    app.include_router(databases.router)
    app.include_router(access.router)
    app.include_router(roles.router)
    app.include_router(grants.router)
    app.include_router(sessions.router)
    app.include_router(reports.router)
    app.include_router(accounts.router)
    install_console(app)
    return app


MAX_WAIT = 60.0


def _wait_seconds(text: str | None) -> float:
    if text is None:
        return 0.0
    from pgaasctl.durations import parse_duration

    try:
        seconds = parse_duration(text, "wait")
    except PgaasError:
        raise ApiError(422, f"wait: {text!r} is not a duration like 30s", field="wait") from None
    if not 0 <= seconds <= MAX_WAIT:
        raise ApiError(422, f"wait: at most {MAX_WAIT:g}s", field="wait")
    return seconds
