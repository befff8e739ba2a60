"""`pgaasctl restart`: restart a pair's PostgreSQL in the order PostgreSQL allows, and measure what it cost.

A hot standby may not run max_connections, max_worker_processes, max_wal_senders, max_prepared_transactions or
max_locks_per_transaction below its primary. So:

- by default the standby restarts first (taking new values is safe there), then the primary by switchover: the
  standby, already running the new values, takes over and the old primary restarts as its standby. Writes
  pause only for the switchover;
- when one of those parameters is being lowered, the primary must run the lower value first: it restarts in
  place (writes pause while it is down), then the standby, once it has replayed the primary's new values.

The write pause is measured as a client sees it: from the moment the primary is told to stop until a new
connection to the (new) primary commits a transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

import psycopg
from pydantic import BaseModel

from pgaasctl.apply.switchover import switchover, then
from pgaasctl.errors import PgaasError
from pgaasctl.hosts.bootstrap import Bootstrap
from pgaasctl.live.connect import NodeAddress, connect
from pgaasctl.live.topology import Topology
from pgaasctl.plan.settings import HOT_STANDBY_PARAMETERS, lowered
from providers.base import Host

WAIT_TIMEOUT = 60.0  # seconds a node may take to accept writes or stream again
POLL = 0.02  # seconds between probes while waiting

# PostgreSQL flags pending_restart when a reload finds a new value; a hot-standby parameter that a standby's start
# raised on the command line (see bootstrap.start_script) differs from its configuration from the start.
PENDING_SQL = """
SELECT s.name, s.setting, coalesce(f.setting, s.boot_val)
FROM pg_settings s
LEFT JOIN (SELECT DISTINCT ON (name) name, setting FROM pg_file_settings ORDER BY name, seqno DESC) f
       ON f.name = s.name
WHERE s.pending_restart
   OR (s.source = 'command line' AND s.name = ANY(%s) AND f.setting IS DISTINCT FROM s.setting)
ORDER BY s.name
"""

# A commit on a synchronous primary waits for its standby: only try one when it would return.
COMMIT_WOULD_RETURN_SQL = """
SELECT NOT pg_is_in_recovery()
   AND (current_setting('synchronous_standby_names') = ''
        OR EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')))
"""


class PendingSetting(BaseModel):
    """A parameter whose configuration differs from what the node runs: it waits for a restart."""

    name: str
    running: str
    configured: str


class NodeRestart(BaseModel):
    node: str
    role: str  # before the restart: primary | standby
    how: Literal["restarted", "restarted in place", "restarted by switchover"]
    seconds: float  # from its stop until it runs again (a standby: streams again)
    pending: list[str]  # the parameters that waited for it


class RestartReport(BaseModel):
    pair: str
    pending: dict[str, list[PendingSetting]]  # node -> what waited for a restart, before it
    order: Literal["switchover", "in place", "standby only"] | None = None  # None: nothing was restarted
    lowered: list[PendingSetting] = []  # hot-standby parameters lowered on the primary: why it restarts in place
    nodes: list[NodeRestart] = []
    write_pause: float | None = None  # seconds from the primary's stop to the (new) primary committing
    standby_wait: float | None = None  # synchronous pairs: seconds commits waited while the standby restarted
    primary: str = ""  # after the restart

    def summary(self) -> dict[str, object]:
        """What the history records."""
        return {"operations": [f"{n.node} ({n.role}): {n.how}" for n in self.nodes],
                "write_pause": self.write_pause, "standby_wait": self.standby_wait}


def pending_on(conn: psycopg.Connection) -> list[PendingSetting]:
    """The parameters that wait for a restart of the node `conn` is on (its configuration differs from what it runs)."""
    rows = conn.execute(PENDING_SQL, (list(HOT_STANDBY_PARAMETERS),))
    return [PendingSetting(name=r[0], running=r[1], configured=r[2]) for r in rows]


def read_pending(address: NodeAddress) -> list[PendingSetting]:
    with connect(address) as conn:
        return pending_on(conn)


class PairRestart:
    """One pair's restart: decide which nodes and in which order (prepare), then do it (run)."""

    def __init__(self, topology: Topology, hosts: dict[str, Host], addresses: dict[str, NodeAddress],
                 bootstrap: Bootstrap, synchronous: bool) -> None:
        self.topology = topology
        self.hosts = hosts
        self.addresses = addresses
        self.bootstrap = bootstrap
        self.synchronous = synchronous

    @property
    def pair(self) -> str:
        return self.topology.pair

    def prepare(self, pending_only: bool) -> RestartReport:
        """Which nodes restart, in which order, and why; nothing restarts yet."""
        primary = self._require_whole()
        standby = next((r.name for r in self.topology.nodes if r.role == "standby"), None)
        names = [n for n in (standby, primary) if n is not None]
        report = RestartReport(pair=self.pair, primary=primary,
                               pending={n: read_pending(self.addresses[n]) for n in names})
        chosen = [n for n in names if report.pending[n] or not pending_only]
        if not chosen:
            return report
        report.lowered = [p for p in report.pending[primary] if lowered(p.name, p.running, p.configured)]
        raised = [p for p in report.pending[primary]
                  if p.name.lower() in HOT_STANDBY_PARAMETERS and p not in report.lowered]
        if report.lowered and raised:
            # a lowered one needs the primary first, a raised one the standby first: no single order works, and
            # the wrong one pauses the standby's replay until a person restarts it again
            raise PgaasError(
                f"pair {self.pair!r}: {', '.join(p.name for p in report.lowered)} go down while "
                f"{', '.join(p.name for p in raised)} go up: PostgreSQL needs the standby restarted first for one and "
                "the primary first for the other",
                "Change them in two steps: apply and restart the raised ones first, then the lowered ones.",
            )
        if primary not in chosen:
            report.order = "standby only"
        elif report.lowered or standby is None:
            report.order = "in place"
        else:
            report.order = "switchover"
        in_order = sorted(chosen, key=lambda n: (n == primary) != (report.order == "in place"))  # as they restart
        report.nodes = [NodeRestart(node=n, role="primary" if n == primary else "standby", how="restarted", seconds=0,
                                    pending=[p.name for p in report.pending[n]]) for n in in_order]
        return report

    def _require_whole(self) -> str:
        topology = self.topology
        if topology.state is not None:
            topology.state.close()  # the primary is about to restart; every step opens what it needs
        if topology.primary is None:
            raise PgaasError(f"pair {self.pair!r} has no primary to restart")
        if topology.operations:
            needs = "; ".join(f"node {op.node}: {op.detail}" for op in topology.operations)
            raise PgaasError(f"pair {self.pair!r} is not whole ({needs})", "Run `pgaasctl apply` first, then restart.")
        return topology.primary.name

    def run(self, report: RestartReport) -> RestartReport:
        """Restart the nodes `prepare` chose, in its order; fills in what each cost."""
        by_name = {n.node: n for n in report.nodes}
        primary = by_name.get(report.primary)
        standby = next((n for n in report.nodes if n.role == "standby"), None)
        if report.order == "in place":
            assert primary is not None
            self._paused(lambda: self._in_place(report, primary, standby))
        else:
            if standby is not None:
                self._paused(lambda: self._restart_standby(report, standby, report.primary))
            if primary is not None:
                self._by_switchover(report, primary)
        return report

    def _paused(self, action: Callable[[], None]) -> None:
        """repmgrd paused throughout, so that it takes no planned stop for a failure."""
        assert self.topology.primary is not None
        primary = self.hosts[self.topology.primary.name]
        self.bootstrap.pause_repmgrd(primary)
        with then(lambda: self.bootstrap.unpause_repmgrd(primary), "unpausing repmgrd"):
            action()

    def _in_place(self, report: RestartReport, primary: NodeRestart, standby: NodeRestart | None) -> None:
        host = self.hosts[primary.node]
        started = time.monotonic()
        self.bootstrap.stop_postgres(host)
        self.bootstrap.start_postgres(host)
        primary.how = "restarted in place"
        primary.seconds = time.monotonic() - started
        report.write_pause = first_commit(self.addresses[primary.node], started)
        if standby is not None:
            # its pg_control must hold the primary's new values before it may start with them
            wait_replayed(self.addresses[standby.node], self.addresses[primary.node])
            self._restart_standby(report, standby, primary.node)

    def _restart_standby(self, report: RestartReport, standby: NodeRestart, primary: str) -> None:
        host = self.hosts[standby.node]
        started = time.monotonic()
        self.bootstrap.stop_postgres(host)
        self.bootstrap.start_postgres(host)
        wait_streaming(self.addresses[primary], standby.node, self.synchronous)
        # repmgrd there still holds its session to the PostgreSQL that stopped, and notices only when it next
        # uses it: if that is to ask whether it is paused, as the primary stops for a switchover, the failed
        # query counts as "not paused" and it promotes the standby itself, racing the switchover (seen in CI)
        self.bootstrap.restart_repmgrd(host)
        standby.seconds = time.monotonic() - started
        if self.synchronous:
            report.standby_wait = standby.seconds

    def _by_switchover(self, report: RestartReport, primary: NodeRestart) -> None:
        candidate = next(r.name for r in self.topology.nodes if r.role == "standby")
        probe = WriteProbe(self.addresses[candidate])
        try:
            _, new = switchover(self.topology, self.hosts, self.addresses, self.bootstrap, candidate, self.synchronous,
                                on_primary_stop=probe.start)
        except BaseException:
            probe.cancel()
            raise
        report.write_pause = probe.result()
        primary.how = "restarted by switchover"
        primary.seconds = time.monotonic() - probe.started
        report.primary = new


class WriteProbe:
    """From start() (just before the primary stops), polls `address` on a thread until it commits a write."""

    def __init__(self, address: NodeAddress) -> None:
        self.address = address
        self.started = 0.0
        self._pause: float | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def _poll(self) -> None:
        try:
            self._pause = first_commit(self.address, self.started, cancelled=self._cancelled)
        except PgaasError:
            self._pause = None

    def cancel(self) -> None:
        self._cancelled.set()

    def result(self) -> float | None:
        """Seconds writes paused; None if the new primary took no write in time (it is not waited for again)."""
        if self.started:
            self._thread.join(WAIT_TIMEOUT)
        return self._pause


def first_commit(address: NodeAddress, started: float, timeout: float = WAIT_TIMEOUT,
                 cancelled: threading.Event | None = None) -> float:
    """Seconds from `started` until a new connection to `address` commits a transaction, as a client's would.

    A commit is sent only once it would return (the node is a primary, and its synchronous standby streams),
    so this never hangs on a commit; the result is within POLL seconds of the first commit possible."""
    deadline = started + timeout
    going = cancelled or threading.Event()
    while time.monotonic() < deadline and not going.is_set():
        try:
            with connect(address) as conn:
                while time.monotonic() < deadline and not going.is_set():
                    if conn.execute(COMMIT_WOULD_RETURN_SQL).fetchone()[0]:  # type: ignore[index]
                        conn.execute("SELECT txid_current()")  # assigns a transaction id: its commit writes WAL
                        return time.monotonic() - started
                    time.sleep(POLL)  # polling the promotion or the standby's return
        except (PgaasError, psycopg.Error):
            time.sleep(POLL)  # polling the restart
    raise PgaasError(f"{address.label} accepted no write within {timeout:g}s of the restart",
                     "Look at `pgaasctl status` and the node's PostgreSQL log.")


def wait_streaming(primary: NodeAddress, standby: str, synchronous: bool) -> None:
    """Wait until `standby` streams from `primary` again (as its synchronous standby, on a synchronous pair)."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    with connect(primary) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s",
                               (standby,)).fetchone()
            if row is not None and row[0] == "streaming" and (not synchronous or row[1] in ("sync", "quorum")):
                return
            time.sleep(POLL)  # polling the standby's return
    raise PgaasError(f"pair {primary.pair!r}: standby {standby} did not stream again within {WAIT_TIMEOUT:g}s",
                     "Look at `pgaasctl status` and the standby's PostgreSQL log.")


def wait_replayed(standby: NodeAddress, primary: NodeAddress) -> None:
    """Wait until `standby` has replayed everything `primary` has written so far."""
    with connect(primary) as conn:
        target = str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])  # type: ignore[index]
    deadline = time.monotonic() + WAIT_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with connect(standby) as conn:
                while time.monotonic() < deadline:
                    replayed = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
                    if replayed and replayed[0]:
                        return
                    time.sleep(POLL)  # polling the replay position
        except (PgaasError, psycopg.Error):
            time.sleep(POLL)
    raise PgaasError(f"{standby.label} did not replay the primary's restart within {WAIT_TIMEOUT:g}s",
                     "Look at `pgaasctl status` and the standby's PostgreSQL log.")
