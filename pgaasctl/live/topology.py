"""Discovery of a pair whose nodes pgaasctl reaches over SSH: what repmgr says on every node, checked
against pg_is_in_recovery(), and the host operations that would make the pair whole again.

Reads like Patroni's loop: probe every node (in parallel), name each node's state, then decide.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from concurrent.futures import Future, TimeoutError
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import psycopg

from pgaasctl.errors import ConnectionFailed, PgaasError, PlanError
from pgaasctl.hosts.bootstrap import REPMGR_DATABASE, alive_from_pid_file, repmgr_env, target_of
from pgaasctl.hosts.guard import fenced_file, guard_pid_file
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.live.connect import NodeAddress, connect
from pgaasctl.live.discovery import NodeState, PairState, probe_node, read_replication
from pgaasctl.live.node_services import NodeServices, read_services
from pgaasctl.live.split_brain import read_primary, settle
from pgaasctl.parallel import ThreadPool
from pgaasctl.plan.model import HostOperation
from providers.base import Host

REPMGR_EXIT_NODE_DOWN = 25  # `repmgr cluster show` when any node is unreachable
REPMGR_EXIT_DB_CONNECTION = 6  # ERR_DB_CONN: repmgr could not open a session to its own node
CONSISTENCY_WAIT = 10.0  # seconds to wait for repmgr's metadata to catch up with a promotion

# `repmgr cluster show` on every node is the costliest part of a look (a process, and a session from it to every
# node), and what it checks (repmgr's conninfo and .pgpass on the node) changes only when those do. Plan, apply and
# status always ask for it; the agent leaves it out of the looks at the pairs it names here (see briefly()).
_without_repmgr_view: ContextVar[frozenset[str]] = ContextVar("pgaasctl_without_repmgr_view", default=frozenset())


@contextmanager
def briefly(pairs: set[str]) -> Iterator[None]:
    """Discovery of these pairs leaves out repmgr's view of the cluster (`cluster show`); every other fact is read
    as always."""
    token = _without_repmgr_view.set(frozenset(pairs))
    try:
        yield
    finally:
        _without_repmgr_view.reset(token)


@dataclass
class Registered:
    """One row of repmgr.nodes: what repmgr's metadata says of a node."""

    node_id: int
    name: str
    role: str  # primary | standby | witness (as registered)
    active: bool


@dataclass
class NodeReport:
    host: Host
    sql: NodeState | None = None  # None: PostgreSQL was not asked (host missing or unreachable)
    ssh_error: str | None = None
    repmgr_installed: bool = True
    cluster_show: list[tuple[int, int, int]] = field(default_factory=list)  # node_id, availability, recovery
    registered: dict[str, Registered] | None = None  # repmgr.nodes as this node (the primary) has it
    has_data: bool | None = None
    standby_signal: bool | None = None
    repmgrd_process: bool | None = None  # from the pid file, where pgaasctl knows the layout
    guard_process: bool | None = None  # the fencing guard; None where pgaasctl did not bootstrap the node
    fenced: str | None = None  # why the guard fenced this node (its `fenced` file), if it did
    files_timeline: int | None = None  # the newest timeline the data directory's pg_wal has a history file of
    repmgr_error: str | None = None  # why `repmgr service status` failed on this node
    connection: psycopg.Connection | None = field(default=None, repr=False)
    probed_in: str | None = None  # the database of `connection`: None for the admin database, else repmgr's

    @property
    def name(self) -> str:
        return self.host.node

    @property
    def role(self) -> str:
        """primary | standby | down | missing | host down"""
        if not self.host.exists:
            return "missing"
        if self.sql is not None and self.sql.role != "unreachable":
            return self.sql.role  # PostgreSQL answers, whatever its SSH does
        if not self.host.running or self.ssh_error:
            return "host down"
        return "down"

    @property
    def ssh_down(self) -> bool:
        return self.host.exists and (not self.host.running or self.ssh_error is not None)


@dataclass
class WitnessReport:
    """The pair's repmgr witness as discovery saw it."""

    name: str
    address: str
    exists: bool = False
    ssh_up: bool = False
    postgres: bool = False
    repmgrd: bool = False
    registered: bool = False

    @property
    def role(self) -> str:
        if not self.exists:
            return "missing"
        if not self.ssh_up:
            return "host down"
        if not self.postgres:
            return "down"
        return "witness" if self.registered else "unregistered"


@dataclass
class Topology:
    pair: str
    nodes: list[NodeReport]
    operations: list[HostOperation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    state: PairState | None = None  # with an open connection to the primary, when there is one
    witness: WitnessReport | None = None

    @property
    def primary(self) -> NodeReport | None:
        return next((n for n in self.nodes if n.role == "primary"), None)

    @property
    def whole_after_operations(self) -> bool:
        """Every declared node streams from the primary once the planned operations ran."""
        fixed = {op.node for op in self.operations}
        return all(n.role in ("primary", "standby") or n.name in fixed for n in self.nodes) and len(self.nodes) > 1


def _probe_script(host: Host, repmgr_view: bool = True) -> str:
    """One SSH round trip per node: repmgr's view of the cluster, and whether repmgrd runs there."""
    conf = shlex.quote(host.repmgr_conf or "/etc/repmgr.conf")
    env = repmgr_env(host)
    repmgr = shlex.quote(f"{host.bin_dir}/repmgr")  # the binary itself: Debian's /usr/bin/repmgr is a Perl wrapper
    lines = [f"test -x {repmgr} || {{ echo '@no-repmgr'; exit 0; }}"]
    if repmgr_view:
        # A session refused for a moment (a node just reloaded, or so busy the connect timeout ran out) is asked
        # again: only a refusal that lasts is reported.
        lines.append(f"for try in 1 2 3; do show=$({env}{repmgr} -f {conf} cluster show --csv 2>&1); rc=$?; "
                     f"[ $rc = {REPMGR_EXIT_DB_CONNECTION} ] || break; sleep 0.5; done; "
                     "echo '@show'; printf '%s\\n' \"$show\"; echo \"@exit=$rc\"")
    if host.layout:
        data = shlex.quote(host.layout.data_dir)
        lines.append(f"if {alive_from_pid_file(host.layout.socket_dir + '/repmgrd.pid')}; then rd=repmgrd; else rd=; fi")
        lines.append(f"if {alive_from_pid_file(guard_pid_file(host.layout))}; then gd=guard; else gd=; fi")
        lines.append(f"echo \"@files $(test -f {data}/PG_VERSION && echo data) $(test -f {data}/standby.signal && echo signal)"
                     f" $rd $gd\"")
        lines.append(f"echo \"@fenced $(tail -n 1 {shlex.quote(fenced_file(host.layout))} 2>/dev/null)\"")
        lines.append(f"echo \"@timeline $({history_listing(host.layout.data_dir)})\"")
    else:
        pattern = shlex.quote(f"repmgrd.*{re.escape(host.repmgr_conf or 'repmgr.conf')}")
        lines.append(f"echo \"@files $(pgrep -f -- {pattern} >/dev/null && echo repmgrd)\"")
    return "\n".join(lines)


def timeline_of_history(name: str, has_data: bool | None) -> int | None:
    """00000003.history -> 3: a node holds the history file of every timeline it reached. None: no data."""
    if name:
        return int(name[:8], 16)
    return 1 if has_data else None


def _parse_probe(report: NodeReport, text: str) -> None:
    if "@no-repmgr" in text:
        report.repmgr_installed = False
        return
    section = ""
    problems: list[str] = []
    for line in text.splitlines():
        if line.startswith("@timeline"):
            report.files_timeline = timeline_of_history(line.split()[1] if len(line.split()) > 1 else "",
                                                        report.has_data)
        elif line.startswith("@files"):
            words = line.split()[1:]
            if report.host.layout is not None:
                report.has_data, report.standby_signal = "data" in words, "signal" in words
            report.repmgrd_process = "repmgrd" in words
            if report.host.layout is not None:
                report.guard_process = "guard" in words
        elif line.startswith("@fenced"):
            report.fenced = line.removeprefix("@fenced").strip() or None
        elif line.startswith("@exit="):
            code = int(line.removeprefix("@exit="))
            if code not in (0, REPMGR_EXIT_NODE_DOWN):
                report.repmgr_error = "; ".join(problems[:4]) or f"repmgr cluster show exited {code}"
        elif line.startswith("@"):
            section = line[1:]
        elif section == "show" and re.fullmatch(r"-?\d+,-?\d+,-?\d+", line.strip()):
            node_id, availability, recovery = (int(x) for x in line.split(","))
            report.cluster_show.append((node_id, availability, recovery))
        elif section == "show" and line.strip() and not line.strip().startswith("DETAIL: attempted to connect"):
            # libpq's own reason ("connection to server at ... failed: ...") and the conninfo tried say most
            problems.append(re.sub(r"password=\S+", "password=(sensitive)", line.strip()))


def _sql_probe(host: Host, address: NodeAddress, with_services: bool, database: str | None = None
               ) -> tuple[NodeState, psycopg.Connection | None, NodeServices | None]:
    state, conn = probe_node(address, database)
    if database is not None and conn is None and "does not exist" in (state.error or ""):
        state, conn = probe_node(address)  # no repmgr database there (yet): the node says what it is all the same
    services = None
    if with_services and conn is not None and state.role in ("primary", "standby"):
        services = read_services(conn, host)
    return state, conn, services


def _take_services(report: NodeReport, services: NodeServices) -> None:
    """The report the SSH probe would have made of a healthy node, but for repmgr's own view (`cluster show`)."""
    report.has_data, report.standby_signal = True, services.standby_signal
    report.repmgrd_process = "repmgrd" in services.running
    report.guard_process = "guard" in services.running
    report.fenced = services.fenced
    report.files_timeline = timeline_of_history(services.newest_history, True)


REGISTRATION_SQL = "SELECT node_id, node_name, type, active FROM repmgr.nodes"


def read_registration(address: NodeAddress) -> dict[str, Registered] | None:
    """repmgr.nodes on the primary, over a session on its repmgr database; None when there is none."""
    try:
        with connect(address, REPMGR_DATABASE) as conn:
            return _registration_on(conn)
    except ConnectionFailed:
        return None


def _registration_on(conn: psycopg.Connection) -> dict[str, Registered] | None:
    """repmgr.nodes on a session in a repmgr database; None when it cannot be read there."""
    try:
        rows = conn.execute(REGISTRATION_SQL).fetchall()
    except psycopg.Error:
        return None
    return {r[1]: Registered(node_id=r[0], name=r[1], role=r[2], active=r[3]) for r in rows}


def _probe_database(host: Host, ssh_when_needed: bool, expected_primary: str | None) -> str | None:
    """Where to open a node's probe session. A plan keeps the primary's session, in the admin database; a standby's
    serves the probe alone, so where the last apply saw a standby it is opened in repmgr's database, whose
    replicated repmgr.nodes then stands for the primary's and spares the primary a session (_registration)."""
    if ssh_when_needed and host.layout is not None and expected_primary is not None and host.node != expected_primary:
        return REPMGR_DATABASE
    return None


def _registration(primary: NodeReport, reports: list[NodeReport], address: NodeAddress) -> dict[str, Registered] | None:
    """repmgr.nodes as the primary has it: read on a standby's probe session when that standby streams from the
    primary (its copy is the primary's, replayed), else on a session of the primary's own."""
    for report in reports:
        if (report.role == "standby" and report.probed_in == REPMGR_DATABASE and report.connection is not None
                and report.sql is not None and report.sql.receiving_from == (primary.host.address, primary.host.pg_port)):
            registered = _registration_on(report.connection)
            if registered is not None:
                return registered
    return read_registration(address)


def _in_admin_database(report: NodeReport, address: NodeAddress) -> None:
    """A primary probed in repmgr's database (the last apply saw a standby there): its registration is read on
    that session, then the plan gets its session in the admin database instead."""
    assert report.connection is not None
    report.registered = _registration_on(report.connection)
    report.connection.close()
    report.sql, report.connection = probe_node(address)
    report.probed_in = None


def _probe_node(host: Host, address: NodeAddress | None, ssh: SshSessions, repmgr_view: bool = True,
                ssh_when_needed: bool = False, database: str | None = None) -> NodeReport:
    """With `ssh_when_needed` (plan and apply), a node whose session shows it healthy (primary or standby, repmgrd
    and the guard running, not fenced) is not asked over SSH: what it would say is read over SQL, all but repmgr's
    own view of the cluster, which `status` and the agent still ask for."""
    report = NodeReport(host=host)
    if not host.exists:
        return report
    with_services = ssh_when_needed and host.layout is not None and host.running
    with ThreadPool(max_workers=1) as sql_side:
        # PostgreSQL is asked at the same time as repmgr; a primary stays a primary when only its SSH is down
        sql = sql_side.submit(_sql_probe, host, address, with_services, database) if address is not None else None
        try:
            if with_services and sql is not None and _healthy_soon(sql):
                _take_services(report, sql.result()[2])  # type: ignore[arg-type]
            elif host.running:
                try:
                    result = ssh.run(target_of(host), _probe_script(host, repmgr_view), timeout=30)
                    _parse_probe(report, result.stdout)
                except ConnectionFailed as exc:
                    if "host key" in exc.message or "refused the key" in exc.message:
                        raise
                    report.ssh_error = exc.message
        finally:
            if sql is not None:
                report.sql, report.connection, _ = sql.result()
                if database is not None and report.connection is not None and report.connection.info.dbname == database:
                    report.probed_in = database  # not after a fallback to the admin database (_sql_probe)
    return report


SQL_FIRST_WAIT = 1.0  # seconds the SQL probe has to show a node healthy before SSH is asked as well


def _healthy_soon(sql: Future[tuple[NodeState, psycopg.Connection | None, NodeServices | None]]) -> bool:
    """The node's session showed it healthy within SQL_FIRST_WAIT; a slower or unhealthy one is asked over SSH
    too, as always (a frozen server costs the plan at most that second more)."""
    try:
        _, _, services = sql.result(timeout=SQL_FIRST_WAIT)
    except TimeoutError:
        return False
    return services is not None and services.healthy


def probe_pair(pair: str, hosts: list[Host], addresses: dict[str, NodeAddress], ssh: SshSessions,
               ssh_when_needed: bool = False, expected_primary: str | None = None) -> list[NodeReport]:
    """`expected_primary`: the primary the last apply saw, if any (see _probe_database)."""
    with ThreadPool(max_workers=max(1, len(hosts))) as pool:
        repmgr_view = pair not in _without_repmgr_view.get()
        reports = list(pool.map(lambda h: _probe_node(h, addresses.get(h.node), ssh, repmgr_view, ssh_when_needed,
                                                      _probe_database(h, ssh_when_needed, expected_primary)), hosts))
    for report in reports:
        if report.role == "primary" and report.probed_in == REPMGR_DATABASE:
            _in_admin_database(report, addresses[report.name])
        elif report.role == "primary":
            report.registered = _registration(report, reports, addresses[report.name])
    return reports


def discover_topology(pair: str, hosts: list[Host], addresses: dict[str, NodeAddress], ssh: SshSessions,
                      synchronous: bool, can_create: bool, undeclared: list[Host] | None = None,
                      recorded_ids: dict[str, int] | None = None, witness: Host | None = None,
                      ssh_when_needed: bool = False, expected_primary: str | None = None) -> Topology:
    """Probe every node; wait briefly when repmgr has not yet recorded a promotion PostgreSQL already shows.
    `undeclared`: hosts of nodes the spec no longer declares, asked over SQL whether they are primary.
    `ssh_when_needed`: SSH only to nodes SQL does not show healthy (_probe_node)."""
    deadline = time.monotonic() + CONSISTENCY_WAIT
    while True:
        reports = probe_pair(pair, hosts, addresses, ssh, ssh_when_needed, expected_primary)
        lagging = _metadata_lags(reports)
        if not lagging or time.monotonic() > deadline:
            break
        _close(reports)
        time.sleep(0.2)  # polling repmgr's metadata after a promotion
    try:
        _refuse_undeclared_primary(pair, reports, undeclared or [], addresses)
        _refuse_starting_without_undeclared(pair, reports, undeclared or [])
        topology = _decide(pair, reports, synchronous, can_create)
        topology.operations += _removals(pair, topology, [h.node for h in hosts], undeclared or [])
        if witness is not None:
            _plan_witness(topology, witness, ssh)
        registered = topology.primary.registered if topology.primary is not None else None
        declared = [h.node for h in hosts] + ([witness.node] if witness is not None else [])
        ids = assign_node_ids(declared, {**(recorded_ids or {}),
                                         **{n: r.node_id for n, r in (registered or {}).items()}})
        for op in topology.operations:
            if op.kind in NEEDS_NODE_ID:
                op.node_id = ids[op.node]
        return topology
    except BaseException:
        _close(reports)
        raise


NEEDS_NODE_ID = ("init_primary", "clone_standby", "reconfigure_repmgr", "rejoin", "recover_node", "init_witness")  # may write repmgr.conf


def assign_node_ids(declared: list[str], known: dict[str, int]) -> dict[str, int]:
    """repmgr node ids of the declared nodes: the one repmgr registered or the store recorded, else a new one
    above every id known (so a renamed node never takes the id of the node it replaces). A pair with no id
    known (new, or made before ids were recorded) numbers its nodes by position, as pgaasctl always did."""
    if not known:
        return {node: i + 1 for i, node in enumerate(declared)}
    out = {node: known[node] for node in declared if node in known}
    next_id = max(known.values()) + 1
    for node in declared:
        if node not in out:
            out[node] = next_id
            next_id += 1
    return out


def _refuse_undeclared_primary(pair: str, reports: list[NodeReport], undeclared: list[Host],
                               addresses: dict[str, NodeAddress]) -> None:
    """A node removed from the spec that is still the primary cannot be removed: the pair would lose it. (A
    witness runs a PostgreSQL that is not in recovery too: the running primary's records say it is a witness.)"""
    registered = next((r.registered for r in reports if r.role == "primary" and r.registered), None) or {}
    for host in undeclared:
        address = addresses.get(host.node)
        if not host.exists or address is None:
            continue
        if host.node in registered and registered[host.node].role == "witness":
            continue
        state, conn = probe_node(address)
        if conn is not None:
            conn.close()
        if state.role != "primary":
            continue
        standbys = [r.name for r in reports if r.role == "standby"]
        raise PlanError(
            f"pair {pair!r}: node {host.label} is the primary, but the spec no longer declares it",
            f"Put it back in the spec, run `pgaasctl switchover {pair} --to {standbys[0]}`, then remove it again."
            if standbys else "Declare it again (its new standby is made first), switch over to the standby, then "
            "remove it.",
        )


def _refuse_starting_without_undeclared(pair: str, reports: list[NodeReport], undeclared: list[Host]) -> None:
    """No node runs as primary, and a node the spec dropped still exists: it may hold the primary's data (a stopped
    pair), so neither it may be removed nor a declared standby be started as if the pair were whole."""
    if any(r.role == "primary" for r in reports):
        return
    kept = [h for h in undeclared if h.exists]
    if kept:
        raise PlanError(
            f"pair {pair!r}: no node runs as primary, and {', '.join(h.label for h in kept)}, which the spec no longer "
            "declares, still exists: it may be the primary",
            "Put it back in the spec until the pair runs again (apply starts it), switch over if you want, then "
            "remove it.",
        )


def _removals(pair: str, topology: Topology, declared: list[str], undeclared: list[Host]) -> list[HostOperation]:
    """Nodes registered in repmgr, or made by the provider, that the spec no longer declares: removed."""
    primary = topology.primary
    if primary is None:
        return []
    registered = primary.registered or {}
    hosts = {h.node: h for h in undeclared}
    names = sorted(({n for n, r in registered.items() if r.role != "witness"} | set(hosts)) - set(declared))
    out = []
    for name in names:
        host = hosts.get(name)
        node_id = registered[name].node_id if name in registered else None
        steps = ["stop it"] if host is not None and host.exists else []
        steps += ["unregister it from repmgr", "drop its replication slot"] if node_id is not None else []
        steps += ["remove its host"] if host is not None else ["its server keeps running"]
        topology.warnings.append(f"pair {pair!r}: node {name} is no longer in the spec; apply removes it from the pair")
        out.append(HostOperation(kind="remove_node", node=name, peer=primary.name, node_id=node_id,
                                 detail="no longer in the spec: " + ", ".join(steps)))
    return out


def _metadata_lags(reports: list[NodeReport]) -> bool:
    """PostgreSQL shows a promotion that repmgr.nodes does not record yet."""
    for report in reports:
        if report.role == "primary" and report.registered is not None:
            registered = report.registered.get(report.name)
            if registered is not None and registered.role != "primary":
                return True
    return False


def _close(reports: list[NodeReport]) -> None:
    for report in reports:
        if report.connection is not None:
            report.connection.close()


def _describe(report: NodeReport) -> str:
    timeline = report.sql.timeline if report.sql is not None and report.sql.timeline is not None else None
    return f"{report.host.label} {report.role}" + (f" on timeline {timeline}" if timeline is not None else "")


def _decide(pair: str, reports: list[NodeReport], synchronous: bool, can_create: bool) -> Topology:
    topo = Topology(pair=pair, nodes=reports)
    for report in reports:
        if not report.repmgr_installed:
            raise PgaasError(f"node {report.name} of pair {pair} ({report.host.address or 'not created yet'}): repmgr is not installed there",
                             "Install the postgresql-15-repmgr package on it.")
    primaries = [r for r in reports if r.role == "primary"]
    claims = "; ".join(_describe(r) for r in reports)
    settled: set[str] = set()
    if len(primaries) > 1:
        verdict = settle(pair, [read_primary(r.name, r.host.label, r.sql.timeline if r.sql else None, r.connection)
                                for r in primaries])
        stale = next(r for r in primaries if r.name == verdict.stale.name)
        keep = next(r for r in primaries if r.name == verdict.keep.name)
        topo.operations += [
            HostOperation(kind="fence_node", node=stale.name, peer=keep.name,
                          detail=f"fence it: stop PostgreSQL ({verdict.explanation()})"),
            HostOperation(kind="rejoin", node=stale.name, peer=keep.name,
                          detail=f"rejoin as a standby of {keep.name} (repmgr node rejoin --force-rewind)"),
        ]
        topo.warnings.append(f"pair {pair!r} is degraded: split brain settled by evidence: {verdict.explanation()}")
        settled.add(stale.name)
        primaries = [keep]
    for report in reports:
        if report.role in ("primary", "standby") and report.repmgr_error and not report.ssh_down:
            raise PlanError(
                f"pair {pair!r}: repmgr on node {report.host.label} cannot read the cluster: "
                f"{report.repmgr_error}",
                "Check repmgr.conf's conninfo and the repmgr user's password (.pgpass) on that node.",
            )
    registered = primaries[0].registered if primaries else None
    if primaries and registered is None:
        raise PlanError(
            f"pair {pair!r}: the primary {primaries[0].host.label} has no repmgr metadata "
            "(no repmgr database or repmgr.nodes)",
            "Register it with `repmgr primary register`, or remove ssh settings to manage it without repmgr.",
        )
    if primaries and registered is not None:
        for report in reports:
            if report.role in ("primary", "standby") and report.name not in registered:
                raise PlanError(
                    f"pair {pair!r}: node {report.host.label} is not part of the repmgr cluster "
                    f"(registered: {', '.join(sorted(registered)) or 'none'})",
                    "Register it with repmgr (primary/standby register), or remove it from the Pair spec.",
                )
    if not primaries:
        return _without_primary(topo, claims, can_create)

    primary = primaries[0]
    newer_down = _newer_down(reports, primary)
    if newer_down is not None:
        return _start_newer(topo, newer_down, primary)
    for report in reports:
        if report is primary or report.name in settled:
            continue
        if report.role == "missing":
            _require(can_create, pair, report, "is missing")
            topo.operations += [
                HostOperation(kind="create_host", node=report.name, detail="create the host"),
                HostOperation(kind="clone_standby", node=report.name, peer=primary.name,
                              detail=f"clone a standby from {primary.name} (repmgr standby clone)"),
            ]
        elif report.role == "host down":
            _require(can_create, pair, report, f"does not answer SSH ({report.ssh_error or 'sshd is not running'})")
            topo.operations += [
                HostOperation(kind="start_host", node=report.name, detail="start the host"),
                HostOperation(kind="recover_node", node=report.name, peer=primary.name,
                              detail=f"start PostgreSQL, or rejoin it to {primary.name}"),
            ]
        elif report.role == "down":
            _refuse_rewinding_newer(pair, report, primary)
            # `node rejoin` also restarts a stopped standby that needs no rewind, and checks it attaches
            if report.has_data is False:
                topo.operations.append(HostOperation(kind="clone_standby", node=report.name, peer=primary.name,
                                                     detail=f"re-clone a standby from {primary.name}"))
            elif _standby_on_primary_timeline(report, primary):
                # already a standby on the primary's timeline (rewound before, or simply stopped): it only needs
                # starting. Rewinding it again would run pg_rewind's crash recovery on it, which writes WAL of its
                # own: a fork no later rewind can mend.
                topo.operations.append(HostOperation(kind="start_postgres", node=report.name,
                                                     detail=f"start PostgreSQL (a standby of {primary.name} already)"))
            else:
                topo.operations.append(HostOperation(
                    kind="rejoin", node=report.name, peer=primary.name,
                    detail=f"rejoin as a standby of {primary.name} (repmgr node rejoin --force-rewind; re-clone if rewind cannot work)",
                ))
        elif report.role == "standby" and (report.sql is None or report.sql.receiving_from != (
                primary.host.address, primary.host.pg_port)):
            _refuse_rewinding_newer(pair, report, primary)
            topo.operations.append(HostOperation(
                kind="rejoin", node=report.name, peer=primary.name,
                detail=f"it does not stream from {primary.name}: rejoin it (pg_rewind; re-clone if rewind cannot work)",
            ))
    for report in reports:
        if report.role in ("primary", "standby") and report.ssh_down:
            why = report.ssh_error or f"node {report.host.label}: sshd is not running"
            if not (can_create and not report.host.running):
                raise PlanError(f"pair {pair!r}: {why}",
                                "pgaasctl needs SSH to every node to see and repair repmgr; fix SSH, then plan again.")
            topo.operations.append(HostOperation(kind="start_host", node=report.name, detail="start the host (sshd)"))
            topo.warnings.append(f"pair {pair!r} is degraded: {why}")
            continue
        fixed = any(op.node == report.name for op in topo.operations)
        services_down = not _repmgrd_runs(report, registered) or report.guard_process is False
        if report.role in ("primary", "standby") and not fixed and services_down:
            topo.operations.append(HostOperation(kind="start_repmgrd", node=report.name, detail=_services_detail(report)))
        elif fixed:
            topo.operations.append(HostOperation(kind="start_repmgrd", node=report.name, detail=_services_detail(report)))
    topo.operations += _virtual_ip_operations(reports)

    for report in reports:
        if report.connection is not None and report is not primary:
            report.connection.close()
    assert primary.connection is not None and primary.sql is not None
    nodes = [r.sql if r.sql is not None else NodeState(_unreachable_address(r), "unreachable", error=f"{r.name} is {r.role}")
             for r in reports]
    state = PairState(pair=pair, nodes=nodes, primary=primary.sql, connection=primary.connection)
    if len(reports) == 1:
        state.warnings.append(f"pair {pair!r} has one node: it is not fault tolerant")
    for report in reports:
        if report.role not in ("primary", "standby"):
            state.warnings.append(f"pair {pair!r} is degraded: node {report.host.label} is {report.role}")
    read_replication(state, synchronous)
    topo.state = state
    topo.warnings = state.warnings + topo.warnings
    return topo


def _newer_down(reports: list[NodeReport], primary: NodeReport) -> NodeReport | None:
    """A stopped node (its host up) on a newer timeline than the running primary: it was promoted after it."""
    running = primary.sql.timeline if primary.sql is not None else None
    for report in reports:
        if (report is not primary and report.role == "down" and running is not None
                and report.files_timeline is not None and report.files_timeline > running and not report.standby_signal):
            return report
    return None


def _start_newer(topo: Topology, newer: NodeReport, stale: NodeReport) -> Topology:
    """The node promoted last is down and a stale primary runs: rewinding the newer node onto it (the routine
    rejoin) would discard acknowledged commits. Fence the stale one, start the newer one, and rejoin the stale one
    to it. The objects are planned once the pair has its rightful primary again."""
    running = stale.sql.timeline if stale.sql is not None else None
    why = (f"a stale primary on timeline {running}; {newer.name} was promoted later (timeline {newer.files_timeline}) "
           "and holds the latest commits")
    topo.operations += [
        HostOperation(kind="fence_node", node=stale.name, peer=newer.name, detail=f"fence it: stop PostgreSQL ({why})"),
        HostOperation(kind="start_postgres", node=newer.name, detail="start PostgreSQL (the rightful primary)"),
        HostOperation(kind="rejoin", node=stale.name, peer=newer.name,
                      detail=f"rejoin as a standby of {newer.name} (repmgr node rejoin --force-rewind; its WAL "
                             "after the fork is discarded)"),
        HostOperation(kind="start_repmgrd", node=newer.name, detail="start repmgrd"),
    ]
    topo.warnings.append(f"pair {topo.pair!r} is degraded: split brain settled by evidence: {stale.name} is {why}")
    for report in topo.nodes:
        if report.connection is not None:
            report.connection.close()
    return topo


def _standby_on_primary_timeline(report: NodeReport, primary: NodeReport) -> bool:
    running = primary.sql.timeline if primary.sql is not None else None
    return bool(report.standby_signal) and running is not None and report.files_timeline == running


def _refuse_rewinding_newer(pair: str, report: NodeReport, primary: NodeReport) -> None:
    """A node on a newer timeline than the running primary was promoted after it: the running one is a stale
    primary, and rewinding the newer node onto it would throw away commits clients were told were made."""
    newer, running = report.files_timeline, primary.sql.timeline if primary.sql is not None else None
    if newer is not None and running is not None and newer > running:
        raise rewinding_newer(pair, report.host, newer, primary.host, running)


def rewinding_newer(pair: str, node: Host, newer: int, primary: Host, running: int) -> PlanError:
    return PlanError(
        f"pair {pair!r}: split brain: node {node.label} is down on timeline {newer}, newer than the running "
        f"primary {primary.label} on timeline {running}: {node.node} was promoted after {primary.node}, so "
        f"{primary.node} is a stale primary and {node.node} holds the latest commits",
        f"pgaasctl will not rewind {node.node} onto the stale primary. Run `pgaasctl plan` again: now that it "
        f"sees {node.node}, it fences {primary.node}, starts {node.node} and rejoins {primary.node} to it.",
    )


def history_listing(data_dir: str) -> str:
    """Shell: the name of the newest timeline history file in a data directory's pg_wal (empty when none)."""
    return (f"ls {shlex.quote(data_dir)}/pg_wal 2>/dev/null | grep -E '^[0-9A-F]{{8}}[.]history$' | sort | tail -1")


def _witness_probe(host: Host) -> str:
    assert host.layout is not None
    return (f"{_pg_ctl_status(host)} >/dev/null && echo @postgres; "
            f"if {alive_from_pid_file(host.layout.socket_dir + '/repmgrd.pid')}; then echo @repmgrd; fi")


def _pg_ctl_status(host: Host) -> str:
    assert host.layout is not None
    return f"{shlex.quote(host.bin_dir + '/pg_ctl')} -D {shlex.quote(host.layout.config_dir)} status"


def _plan_witness(topo: Topology, witness: Host, ssh: SshSessions) -> None:
    """The witness's host operations: made and registered with the pair's primary, PostgreSQL and repmgrd
    running. A witness that is down degrades the pair; it never stops the pair's own plan."""
    report = WitnessReport(name=witness.node, address=witness.address, exists=witness.exists)
    topo.witness = report
    creating = next((op.node for op in topo.operations if op.kind == "init_primary"), None)
    primary = topo.primary.name if topo.primary is not None else creating
    if primary is None:
        return  # no primary to register with: planned again once the pair has one
    if not witness.exists:
        topo.operations += [
            HostOperation(kind="create_host", node=witness.node, detail="create the witness host"),
            HostOperation(kind="init_witness", node=witness.node, peer=primary,
                          detail=f"initdb, start PostgreSQL, repmgr witness register with {primary}"),
            HostOperation(kind="start_repmgrd", node=witness.node, detail="start repmgrd"),
        ]
        return
    if witness.running:
        try:
            words = ssh.run(target_of(witness), _witness_probe(witness), timeout=10).stdout.split()
            report.ssh_up, report.postgres, report.repmgrd = True, "@postgres" in words, "@repmgrd" in words
        except PgaasError:  # unreachable (ConnectionFailed) or cut off mid-command: the witness is down, not the pair
            pass
    registered = topo.primary.registered if topo.primary is not None else None
    report.registered = bool(registered and witness.node in registered and registered[witness.node].role == "witness")
    if report.role != "witness":
        topo.warnings.append(f"pair {topo.pair!r} is degraded: its witness {witness.label} is {report.role}: a partition "
                             "between the nodes could promote a standby cut off from a running primary")
    if not report.ssh_up:
        topo.operations.append(HostOperation(kind="start_host", node=witness.node, detail="start the witness host"))
    if not report.postgres:
        topo.operations.append(HostOperation(kind="start_postgres", node=witness.node, detail="start PostgreSQL"))
    if not report.registered:
        topo.operations.append(HostOperation(kind="register_witness", node=witness.node, peer=primary,
                                             detail=f"repmgr witness register with {primary}"))
    if not report.repmgrd or not report.postgres:
        topo.operations.append(HostOperation(kind="start_repmgrd", node=witness.node, detail="start repmgrd"))


def _virtual_ip_operations(reports: list[NodeReport]) -> list[HostOperation]:
    """keepalived where the pair's virtual IP needs it started, restarted or stopped."""
    on_loopback = [r.host.label for r in reports if r.host.virtual_ip_state == "loopback"]
    if on_loopback:
        raise PlanError(f"pair {reports[0].host.pair!r}: a virtual IP needs the namespace network, and "
                        f"{', '.join(on_loopback)} is on a loopback address, where a virtual IP steers nothing",
                        "Remove virtual_ip from the Pair, or recreate the pair with pgaasctl run as root "
                        "(Workspace spec.network: namespaces).")
    details = {"stopped": "start keepalived (the virtual IP)",
               "stale": "restart keepalived with the virtual IP the spec declares",
               "unwanted": "stop keepalived (the spec declares no virtual IP)"}
    balanced = {"stopped": "start the load balancer's health check (the virtual IP)",
                "unwanted": "stop the load balancer's health check (the spec declares no virtual IP)"}
    return [HostOperation(kind="stop_keepalived" if r.host.virtual_ip_state == "unwanted" else "start_keepalived",
                          node=r.name, detail=(balanced if r.host.cloud == "gcp" else details)[r.host.virtual_ip_state])
            for r in reports if r.host.virtual_ip_state in (balanced if r.host.cloud == "gcp" else details)]


def _services_detail(report: NodeReport) -> str:
    """What a start_repmgrd operation starts: repmgrd and the fencing guard beside it, where each is not running."""
    if report.guard_process is not False:
        return "start repmgrd"
    if report.repmgrd_process is not False:
        return "start the fencing guard"
    return "start repmgrd and the fencing guard"


def _repmgrd_runs(report: NodeReport, registered: dict[str, Registered] | None) -> bool:
    """Whether repmgrd runs on the node, from its pid file (or the process list on servers pgaasctl did not set up)."""
    return report.repmgrd_process is not False


def _require(can_create: bool, pair: str, report: NodeReport, what: str) -> None:
    if not can_create:
        raise PlanError(f"pair {pair!r}: node {report.host.label} {what}",
                        "Provider existing cannot recreate it: repair the host, then plan again.")


def _without_primary(topo: Topology, claims: str, can_create: bool) -> Topology:
    reports = topo.nodes
    # No node holds a data directory: the pair is new, or an earlier apply stopped before its primary's initdb
    never_initialised = all(r.role == "missing" or (r.role == "down" and r.has_data is False) for r in reports)
    if never_initialised and can_create:
        first, rest = reports[0], reports[1:]
        if first.role == "missing":
            topo.operations.append(HostOperation(kind="create_host", node=first.name, detail="create the host"))
        topo.operations.append(HostOperation(kind="init_primary", node=first.name,
                                             detail="initdb, start PostgreSQL, repmgr primary register"))
        for report in rest:
            if report.role == "missing":
                topo.operations.append(HostOperation(kind="create_host", node=report.name, detail="create the host"))
            topo.operations.append(HostOperation(kind="clone_standby", node=report.name, peer=first.name,
                                                 detail=f"clone a standby from {first.name} (repmgr standby clone)"))
        if any(r.role != "missing" for r in reports):
            topo.warnings.append(f"pair {topo.pair!r} holds no data yet (an earlier apply stopped before its "
                                 "primary was made): apply makes it now")
        for report in reports:
            topo.operations.append(HostOperation(kind="start_repmgrd", node=report.name, detail="start repmgrd"))
        topo.operations += _virtual_ip_operations(reports)
        return topo
    # Everything stopped (a reboot): the node without standby.signal was the primary.
    stopped = all(r.role in ("down", "host down") for r in reports)
    if stopped and can_create:
        for report in reports:
            if report.role == "host down":
                topo.operations.append(HostOperation(kind="start_host", node=report.name, detail="start the host"))
        ordered = sorted(reports, key=lambda r: bool(r.standby_signal))
        for report in ordered:
            topo.operations.append(HostOperation(kind="start_postgres", node=report.name, detail="start PostgreSQL"))
        for report in reports:
            topo.operations.append(HostOperation(kind="start_repmgrd", node=report.name, detail="start repmgrd"))
        topo.operations += _virtual_ip_operations(reports)
        topo.warnings.append(f"pair {topo.pair!r} is stopped: apply starts it, then plans its objects")
        return topo
    standby = next((r.name for r in reports if r.role == "standby"), "NODE")
    raise PlanError(f"pair {topo.pair!r}: no node is primary: {claims}",
                    "If the primary just failed, repmgrd is promoting the standby: wait a few seconds and run "
                    "`pgaasctl status` again. If repmgrd has not promoted it after its failover timeout (monitor "
                    "interval + reconnect attempts × interval), run `pgaasctl promote "
                    f"{topo.pair} {standby}`. Do not promote with repmgr by hand (that skips pgaasctl's promote hook, "
                    "and the new primary would wait for its lost standby on every commit), and do not start the old "
                    "primary while a standby may have been promoted (two primaries).")


def _unreachable_address(report: NodeReport) -> NodeAddress:
    host = report.host
    return NodeAddress(pair=host.pair, name=host.node, host=host.address, port=host.pg_port, user="postgres",
                       password=None, admin_database="postgres", sslmode="prefer", connect_timeout=2)
