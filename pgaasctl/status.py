"""`pgaasctl status` and `pgaasctl connection`: what each pair looks like now, and how clients reach it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
from pydantic import BaseModel

from pgaasctl.apply.restart import pending_on
from pgaasctl.errors import PgaasError
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.live.connect import connect
from pgaasctl.live.discovery import PairState
from pgaasctl.live.topology import Topology
from pgaasctl.monitor.models import CheckResult
from pgaasctl.parallel import ThreadPool
from pgaasctl.plan.build import pair_inputs
from pgaasctl.spec.desired import DesiredPair, DesiredState
from pgaasctl.spec.models import LocalPairSpec
from providers import LocalProvider
from pgaasctl.store import Store

LAG_SQL = """
SELECT application_name, coalesce(extract(epoch FROM replay_lag), 0)::float8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint
FROM pg_stat_replication
"""


class NodeStatus(BaseModel):
    name: str
    address: str
    role: str  # primary | standby | down | missing | host down | unreachable
    replication: str | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    repmgrd: bool | None = None
    guard: bool | None = None  # the fencing guard runs (None: not a node pgaasctl bootstrapped)
    fenced: str | None = None  # the guard fenced this node: why and when
    virtual_ip: bool | None = None  # holds the pair's virtual IP (None: the pair has none)
    pending_restart: list[str] = []  # parameters whose configuration differs from what the node runs


class PairStatus(BaseModel):
    pair: str
    provider: str
    replication: str
    nodes: list[NodeStatus] = []
    degraded: bool = False
    needs: list[str] = []  # what `pgaasctl apply` would do to the hosts
    warnings: list[str] = []
    error: str | None = None
    nodes_dir: str | None = None  # provider local: the directory the pair's nodes live in
    nodes_dir_source: str | None = None  # which setting chose it ($PGAASCTL_LOCAL_DIR, the Workspace document...)
    health: CheckResult | None = None  # the worst health check the agent last recorded (None: no agent data)
    health_checked_at: str | None = None
    restart_settings: list[str] = []  # the spec's settings that take effect only at a restart (context postmaster)


def pair_status(pair: DesiredPair, desired: DesiredState, store: Store, ssh: SshSessions,
                local_dir_source: str | None = None, on_state: Callable[[PairState], None] | None = None) -> PairStatus:
    """`on_state`: called with what discovery found (its open connection included) before it is closed; the agent
    samples metrics there."""
    spec = pair.doc.spec
    status = PairStatus(pair=pair.name, provider=spec.provider, replication=spec.replication)
    recorded = store.lookup(pair.name)
    if recorded is not None and recorded.checks:
        status.health = recorded.worst_check or CheckResult(name="every check", status="ok", value="")
        status.health_checked_at = recorded.checks_at  # None: an agent of an older pgaasctl, time not kept
    try:
        inputs = pair_inputs(pair, desired.workspace, store)
        if isinstance(spec, LocalPairSpec) and isinstance(inputs.provider, LocalProvider):
            status.nodes_dir = str(inputs.provider.pair_root(pair.name) / pair.name)
            status.nodes_dir_source = inputs.provider.pair_dir_source(pair.name, local_dir_source or "")
        topology: Topology | None = None
        if inputs.uses_ssh:
            topology = inputs.topology(ssh)
            state = topology.state
            status.needs = [f"node {op.node}: {op.detail}" for op in topology.operations]
        else:
            state = inputs.sql_state()
        if state is None:
            assert topology is not None
            status.nodes = [NodeStatus(name=r.name, address=r.host.address, role=r.role, repmgrd=r.repmgrd_process,
                                       guard=r.guard_process, fenced=r.fenced) for r in topology.nodes] + _witness(topology)
            status.warnings = topology.warnings + _fenced(pair.name, status.nodes)
            status.degraded = True
            return status
        try:
            if on_state is not None:
                on_state(state)
            pending, paused = _node_facts(state)
            status.restart_settings = _restart_settings(state, list(pair.doc.spec.settings))
            status.nodes = _nodes(state, topology, pending) + _witness(topology)
            status.warnings = topology.warnings if topology is not None else state.warnings
            status.warnings = status.warnings + _pending_warnings(pair.name, status.nodes, inputs.uses_ssh)
            problems = (_failover_off(pair.name, status.nodes) + _fencing_off(pair.name, status.nodes)
                        + _fenced(pair.name, status.nodes) + _stalled_commits(pair.name, state)
                        + _paused_replay(pair.name, paused))
            problems += _virtual_ip(pair, inputs.provider, status.nodes)
            status.warnings = status.warnings + problems
            # a pair declared with one node is what it was asked to be: warned (not fault tolerant), not degraded
            status.degraded = any("degraded" in w for w in status.warnings) or bool(problems)
        finally:
            state.close()
    except PgaasError as exc:
        status.error = str(exc)
    except psycopg.Error as exc:  # a node that answered discovery stopped answering during the look
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        status.error = f"pair {pair.name!r}: a node stopped answering during the look ({reason}); look again"
    return status


def _nodes(state: PairState, topology: Topology | None, pending: dict[str, list[str]]) -> list[NodeStatus]:
    lag = {row[0]: (row[1], row[2]) for row in state.connection.execute(LAG_SQL).fetchall()}
    reports = {r.name: r for r in topology.nodes} if topology is not None else {}
    out = []
    for node in state.nodes:
        role = node.role
        if topology is not None:
            role = next((r.role for r in topology.nodes if r.name == node.name), role)
        seconds, size = lag.get(node.name, (None, None))
        if seconds is None and node.role == "standby" and len(lag) == 1:
            seconds, size = next(iter(lag.values()))
        out.append(NodeStatus(
            name=node.name, address=f"{node.address.host}:{node.address.port}" if node.address.host else "", role=role,
            replication=node.replication if node.role == "standby" else None,
            lag_seconds=seconds if node.role == "standby" else None, lag_bytes=size if node.role == "standby" else None,
            repmgrd=reports[node.name].repmgrd_process if node.name in reports else None,
            guard=reports[node.name].guard_process if node.name in reports else None,
            fenced=reports[node.name].fenced if node.name in reports else None,
            pending_restart=pending.get(node.name, []),
        ))
    return out


def _witness(topology: Topology | None) -> list[NodeStatus]:
    witness = topology.witness if topology is not None else None
    if witness is None:
        return []
    return [NodeStatus(name=witness.name, address=f"{witness.address}:5432" if witness.address else "", role=witness.role,
                       repmgrd=witness.repmgrd if witness.postgres else None)]


def _node_facts(state: PairState) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per node that answers, the parameters waiting for its restart; per standby, whether its replay is paused.
    One session per standby for both."""
    pending: dict[str, list[str]] = {}
    paused: dict[str, str] = {}
    try:
        pending[state.primary.name] = [p.name for p in pending_on(state.connection)]
    except psycopg.Error:
        pass  # an admin user that may not read pg_file_settings: nothing to show
    for node in state.standbys:
        try:
            with connect(node.address) as conn:
                paused[node.name] = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0]  # type: ignore[index]
                pending[node.name] = [p.name for p in pending_on(conn)]
        except (PgaasError, psycopg.Error):
            continue  # it stopped answering since discovery: its role says what it is
    return pending, paused


def _restart_settings(state: PairState, names: list[str]) -> list[str]:
    """Which of `names` PostgreSQL applies only at a restart (the rest take a reload)."""
    if not names:
        return []
    try:
        rows = state.connection.execute("SELECT name FROM pg_settings WHERE context = 'postmaster' AND name = ANY(%s) "
                                        "ORDER BY name", (names,)).fetchall()
    except psycopg.Error:
        return []
    return [r[0] for r in rows]


STALL_SECONDS = 1.0  # a commit waiting this long for the synchronous standby means replication is stalled
SILENT_STANDBY_SECONDS = 3.0  # standbys pgaasctl sets up reply every second (wal_receiver_status_interval)


def _failover_off(pair: str, nodes: list[NodeStatus]) -> list[str]:
    return [f"pair {pair!r} is degraded: automatic failover is off on {n.name}: repmgrd is not running"
            for n in nodes if n.repmgrd is False and n.role in ("primary", "standby")]


def _virtual_ip(pair: DesiredPair, provider: object, nodes: list[NodeStatus]) -> list[str]:
    """Marks the node holding the pair's virtual IP; degraded when the primary does not hold it."""
    vip = getattr(pair.doc.spec, "virtual_ip", None)
    holder_of = getattr(provider, "virtual_ip_holder", None)
    if vip is None or holder_of is None:
        return []
    holder = holder_of(pair.doc)
    data_nodes = {n.name for n in pair.doc.spec.nodes}
    for node in nodes:
        if node.name in data_nodes:  # the witness never holds it
            node.virtual_ip = node.name == holder
    primary = next((n.name for n in nodes if n.role == "primary"), None)
    if primary is None or holder == primary:
        return []
    where = f"on {holder}, not on the primary {primary}" if holder else "on no node"
    return [f"pair {pair.name!r} is degraded: the virtual IP {vip} is {where} (keepalived moves it within a second "
            "of a promotion; `pgaasctl apply` starts keepalived where it is not running)"]


def _fencing_off(pair: str, nodes: list[NodeStatus]) -> list[str]:
    return [f"pair {pair!r} is degraded: fencing is off on {n.name}: its guard is not running, so a stale primary there "
            "would not be stopped" for n in nodes if n.guard is False and n.role in ("primary", "standby")]


def _fenced(pair: str, nodes: list[NodeStatus]) -> list[str]:
    return [f"pair {pair!r} is degraded: {n.name} was fenced: {n.fenced}" for n in nodes
            if n.fenced and n.role != "standby"]


def _paused_replay(pair: str, paused: dict[str, str]) -> list[str]:
    """A standby whose replay paused (PostgreSQL pauses it when the primary's WAL asks for more of a hot-standby
    parameter than the standby runs): it still looks streaming, but it falls behind and cannot be promoted."""
    return [f"pair {pair!r} is degraded: replay is {state} on standby {node} (its log says why; a hot-standby "
            "setting lower than the primary's needs the standby restarted)"
            for node, state in sorted(paused.items()) if state != "not paused"]


def _stalled_commits(pair: str, state: PairState) -> list[str]:
    """Commits waiting for the synchronous standby: streaming may still look fine while every commit hangs."""
    try:
        count, longest = state.connection.execute(
            "SELECT count(*), coalesce(max(extract(epoch FROM now() - query_start)), 0)::float8 "
            "FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        ).fetchone()  # type: ignore[misc]
    except psycopg.Error:
        return []
    problems = []
    if count and longest >= STALL_SECONDS:
        problems.append(f"pair {pair!r} is degraded: replication stalled: {count} commit(s) waiting for the synchronous "
                        f"standby, the longest for {longest:.1f}s")
    try:
        silent = state.connection.execute(
            "SELECT application_name, extract(epoch FROM now() - reply_time)::float8 FROM pg_stat_replication "
            "WHERE reply_time < now() - make_interval(secs => %s)", (SILENT_STANDBY_SECONDS,)).fetchall()
    except psycopg.Error:
        silent = []
    for name, seconds in silent:
        problems.append(f"pair {pair!r} is degraded: replication stalled: standby {name} has not replied for "
                        f"{seconds:.1f}s (cut off, or frozen)" + ("; commits are waiting" if count else ""))
    return problems


def _pending_warnings(pair: str, nodes: list[NodeStatus], uses_ssh: bool) -> list[str]:
    waiting = [f"{n.name} ({', '.join(n.pending_restart)})" for n in nodes if n.pending_restart]
    if not waiting:
        return []
    how = (f"run `pgaasctl restart {pair} --pending`" if uses_ssh else
           "restart PostgreSQL there: the standby first, but the primary first when a hot-standby parameter "
           "(max_connections, max_worker_processes, max_wal_senders, max_prepared_transactions, "
           "max_locks_per_transaction) is lowered (`pgaasctl plan` says which)")
    return [f"pair {pair!r}: settings wait for a restart on {', '.join(waiting)}; {how}"]


def all_status(desired: DesiredState, store: Store, pairs: list[DesiredPair] | None = None,
               local_dir_source: str | None = None) -> list[PairStatus]:
    chosen = list(desired.pairs.values()) if pairs is None else pairs
    ssh = SshSessions(store)
    try:
        with ThreadPool(max_workers=max(1, min(8, len(chosen)))) as pool:
            return list(pool.map(lambda p: pair_status(p, desired, store, ssh, local_dir_source), chosen))
    finally:
        ssh.close()


# read-write: the primary, whichever node it is. The TCP options make a session on a server that vanished from the
# network (cut off, or its host frozen) fail within about 5 s instead of hanging forever, so the client reconnects
# and the URI finds the new primary; a server that is merely slow still answers keepalives.
CLIENT_OPTIONS = ("target_session_attrs=read-write&connect_timeout=2&keepalives=1&keepalives_idle=2"
                  "&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=5000")


def connection_uri(pair: DesiredPair, desired: DesiredState, store: Store, database: str | None, role: str | None,
                   virtual_ip: bool = False) -> str:
    """A libpq multi-host URI that follows a failover: target_session_attrs=read-write picks the primary. With
    `virtual_ip`, the pair's virtual IP alone (still read-write: a holder that is not a primary is refused)."""
    vip = getattr(pair.doc.spec, "virtual_ip", None)
    if virtual_ip and vip is None:
        raise PgaasError(f"pair {pair.name!r} has no virtual IP",
                         "Declare one (the Pair's spec.virtual_ip) and run `pgaasctl apply`, or use the URI "
                         "without --virtual-ip.")
    inputs = pair_inputs(pair, desired.workspace, store)
    missing = [h.node for h in inputs.hosts if not h.exists]
    if missing:
        raise PgaasError(f"pair {pair.name!r} has no address yet for {', '.join(missing)}", "Run `pgaasctl apply` first.")
    for kind, name, known in (("role", role, pair.roles), ("database", database, pair.databases)):
        if name is not None and name not in known and name not in pair.admin_users() | {"postgres"}:
            raise PgaasError(f"{kind} {name!r} is not declared for pair {pair.name!r}")
    hosts = f"{vip}:{inputs.hosts[0].pg_port}" if virtual_ip else ",".join(f"{h.connect_address}:{h.pg_port}" for h in inputs.hosts)
    user = f"{quote(role, safe='')}@" if role else ""
    path = quote(database or "postgres", safe="")
    return f"postgresql://{user}{hosts}/{path}?{CLIENT_OPTIONS}{_tls_options(pair, desired)}"


def _tls_options(pair: DesiredPair, desired: DesiredState) -> str:
    """A pair with TLS: the client requires it; with verify-full it checks the server's certificate against the
    workspace CA's file and the host name (the URI's addresses are in every node's certificate)."""
    from pgaasctl.tls.workspace_ca import ca_files

    tls = getattr(pair.doc.spec, "tls", None)
    if tls is None or tls.mode == "disable":
        return ""
    if tls.mode == "require":
        return "&sslmode=require"
    return f"&sslmode=verify-full&sslrootcert={quote(str(ca_files(desired.workspace.tls).cert), safe='/')}"


def client_certificate_options(cert_dir: Path, role: str | None) -> str:
    """The URI options naming a role's client certificate files (as `pgaasctl cert issue --out` wrote them)."""
    if role is None:
        raise PgaasError("--cert-dir needs --role: the certificate is the role's")
    files = {"sslcert": cert_dir / f"{role}.crt", "sslkey": cert_dir / f"{role}.key"}  # the CA: as the pair's URI says
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise PgaasError(f"--cert-dir {cert_dir}: no {', '.join(missing)}",
                         f"Issue it first: pgaasctl cert issue {role} --pair PAIR --out {cert_dir}")
    return "".join(f"&{k}={quote(str(v.absolute()), safe='/')}" for k, v in files.items())
