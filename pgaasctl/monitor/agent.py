"""`pgaasctl agent`: keeps the lookup current. Every round it loads the workspace afresh (a pair added to or removed
from the specs is picked up), discovers every pair in parallel with the same discovery as `status` and `plan`,
writes each pair's lookup and the events since its last one. A pair that fails to be read is recorded as such and
never stops the round for the others. Every `monitoring.metrics_interval` it also samples each node's metrics into
the store's history, and once an hour rolls old samples up and prunes what is past its retention."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pydantic import BaseModel

from pgaasctl import workspace
from pgaasctl.errors import PgaasError
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.live.connect import connect
from pgaasctl.live.discovery import PairState, probe_node
from pgaasctl.live.kept import ConnectionKeeper, keeping
from pgaasctl.live.topology import briefly
from pgaasctl.monitor.lookup import changes, from_status, merge_seen
from pgaasctl.monitor.metrics import Sample, StatementText, sample_node, sample_statements
from pgaasctl.monitor.models import UP_ROLES, Event, LookupNode, LookupPair, now
from pgaasctl.monitor.push import Push
from pgaasctl.parallel import ThreadPool
from pgaasctl.spec.desired import DesiredPair, DesiredState
from pgaasctl.monitor.health import WINDOW_SECONDS, evaluate
from pgaasctl.spec.models import HealthThresholds, MonitoringSettings
from pgaasctl.plan.build import pair_inputs
from pgaasctl.status import NodeStatus, PairStatus, pair_status
from pgaasctl.store import Store
from pgaasctl.tls.certificates import expiry_checks

log = logging.getLogger("pgaasctl.agent")
MAX_PARALLEL = 16
PLANNED = ("switchover", "restart")  # history operations whose change of primary is planned
PRUNE_EVERY = 3600.0  # seconds between two roll-ups and prunes of the store's history
REPMGR_VIEW_EVERY = 30.0  # seconds a healthy pair's looks may go without repmgr's view (topology.briefly)
NodeSamples = dict[str, list[Sample]]  # node -> its samples of one round


class RoundReport(BaseModel):
    at: str
    seconds: float
    pairs: int
    errors: int  # pairs that could not be read
    events: list[Event] = []


class Snapshot(BaseModel):
    """What the agent knows now, for /metrics: read under its lock, never from a node."""

    lookups: list[LookupPair] = []
    samples: dict[str, NodeSamples] = {}  # pair -> the latest samples of each node
    failovers: dict[str, int] = {}
    rounds: int = 0
    failed_rounds: int = 0
    pair_errors: int = 0
    last_seconds: float = 0.0
    pushes: dict[str, int] = {}  # accepted / refused -> how many


@dataclass
class Agent:
    path: Path
    store_flag: str | None = None
    interval: float = 5.0
    _state: Snapshot = field(default_factory=Snapshot)
    _succeeded_at: float | None = None  # time.monotonic() of the last round that ran
    _sampled_at: dict[str, float] = field(default_factory=dict)  # pair -> time.monotonic() of its last samples
    _repmgr_viewed_at: dict[str, float] = field(default_factory=dict)  # pair -> its last look with repmgr's view
    _pruned_at: float | None = None
    _key: bytes | None = None  # the store's key: pushes' tokens derive from it
    _book: _RoundStore = field(default_factory=lambda: _RoundStore())
    _sessions: SshSessions | None = None  # SSH connections kept from round to round
    _keeper: ConnectionKeeper = field(default_factory=ConnectionKeeper)  # SQL sessions kept from round to round
    _desired: DesiredState | None = None  # the workspace as the last round loaded it
    _urgent: set[str] = field(default_factory=set)  # pairs a push asked to look at now
    _wake: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> bytes | None:
        with self._lock:
            return self._key

    def pushed(self, push: Push | None) -> None:
        """A node's push (None: one refused): look at its pair now. What it claims is not believed; the round's
        own discovery says what is."""
        with self._lock:
            outcome = "accepted" if push is not None else "refused"
            self._state.pushes[outcome] = self._state.pushes.get(outcome, 0) + 1
            if push is not None:
                self._urgent.add(push.pair)
        if push is not None:
            log.info("push from pair %s: %s on node %d; looking now", push.pair, push.event, push.node_id)
            threading.Thread(target=self._quick_look, args=(push.pair,), name="agent-push", daemon=True).start()
            self._wake.set()

    def _quick_look(self, pair_name: str) -> None:
        """Which node of the pushed pair is primary, asked of each node over SQL alone (tens of milliseconds), into
        the lookup at once; the full round the push also asked for follows with everything else."""
        desired = self._desired
        pair = desired.pairs.get(pair_name) if desired is not None else None
        if desired is None or pair is None:
            return
        try:
            store = open_store_like(self.path, self.store_flag)
            try:
                nodes = probe_roles(pair, desired, store)
                if nodes:
                    previous = store.lookup(pair_name)
                    after = quick_lookup(pair_name, nodes, previous)
                    found = changes(previous, after)
                    store.record_lookup(after, found)
                    with self._lock:
                        self._state.lookups = [after if x.pair == pair_name else x for x in self._state.lookups]
                    for event in found:
                        log.warning("%s %s%s: %s", event.pair, event.kind, f" ({event.node})" if event.node else "",
                                    event.detail)
            finally:
                store.close()
        except PgaasError as exc:
            log.warning("quick look at pair %s after its push failed: %s", pair_name, exc)

    def wake(self) -> None:
        self._wake.set()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._state.model_copy(deep=True)

    def latest_samples(self, pair: str) -> NodeSamples | None:
        """The pair's newest samples, node by node (None before the agent sampled it). The same object until the
        next samples of the pair replace it, so a caller may keep what it derived from it while `is` holds."""
        with self._lock:
            return self._state.samples.get(pair)

    def rounds(self) -> int:
        with self._lock:
            return self._state.rounds

    def seconds_since_success(self) -> float | None:
        with self._lock:
            return None if self._succeeded_at is None else time.monotonic() - self._succeeded_at

    def round(self, only: set[str] | None = None) -> RoundReport:
        """One look at every pair in scope (or at the pairs named in `only`); raises PgaasError only when nothing
        could be looked at."""
        started = time.monotonic()
        try:
            loaded = workspace.load(self.path)
            store = loaded.open_store(self.store_flag, "write")
        except PgaasError:
            with self._lock:
                self._state.failed_rounds += 1
            raise
        settings = loaded.desired.workspace.monitoring
        looked_at = now()
        self._book.store = store
        if self._sessions is None:
            self._sessions = SshSessions(self._book)
        with self._lock:
            self._key = store.plan_key()
            self._desired = loaded.desired
        pairs = [p for p in loaded.pairs_in_scope() if only is None or p.name in only]
        due = {p.name for p in pairs if time.monotonic() - self._sampled_at.get(p.name, -1e9) >= settings.metrics_interval}
        sampled: dict[str, NodeSamples] = {}
        brief = self._brief(pairs) if only is None else set()  # a push: the whole look
        try:
            with keeping(self._keeper), briefly(brief):
                statuses = discover(loaded.desired, store, pairs, sampled, due, self._sessions)
            self._repmgr_viewed_at.update({p.name: started for p in pairs if p.name not in brief})
            if only is None:
                self._keeper.sweep()
            at = now()
            for pair, nodes in sampled.items():
                self._sampled_at[pair] = time.monotonic()
                for node, samples in nodes.items():
                    store.record_samples(pair, node, at, samples)
            with self._lock:
                latest = {**self._state.samples, **sampled}
            recorded = [record(store, status, "agent", latest.get(status.pair, {}), settings.checks, looked_at,
                               loaded.desired.workspace.tls.warn_days)
                        for status in statuses]
            if self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY:
                prune(store, settings)
                self._pruned_at = time.monotonic()
        finally:
            self._book.store = None
            store.close()
        events = [e for _, found in recorded for e in found]
        report = RoundReport(at=recorded[0][0].checked_at if recorded else "", seconds=time.monotonic() - started,
                             pairs=len(statuses), errors=sum(1 for s in statuses if s.error), events=events)
        with self._lock:
            state = self._state
            looked = {lookup.pair: lookup for lookup, _ in recorded}
            if only is None:  # a full round: pairs no longer in scope drop out
                state.lookups = list(looked.values())
                state.samples = {p: s for p, s in state.samples.items() if p in looked}
            else:
                state.lookups = [looked.get(x.pair, x) for x in state.lookups] + [
                    x for x in looked.values() if x.pair not in {y.pair for y in state.lookups}]
            state.samples = {**state.samples, **sampled}
            state.rounds += 1
            state.pair_errors += report.errors
            state.last_seconds = report.seconds
            for event in events:
                if event.kind == "failover":
                    state.failovers[event.pair] = state.failovers.get(event.pair, 0) + 1
            self._succeeded_at = time.monotonic()
        return report

    def _brief(self, pairs: list[DesiredPair]) -> set[str]:
        """The pairs whose look this round may leave out repmgr's view. A pair with any problem at its last look gets
        the whole look every round; of the healthy ones, the longest without repmgr's view get it, enough of them
        each round that every pair has it about every REPMGR_VIEW_EVERY seconds (spread over the rounds)."""
        with self._lock:
            healthy = {x.pair for x in self._state.lookups if x.healthy and x.error is None}
        candidates = sorted((p.name for p in pairs if p.name in healthy),
                            key=lambda name: self._repmgr_viewed_at.get(name, -1e9))
        share = math.ceil(len(candidates) * max(self.interval, 0.1) / REPMGR_VIEW_EVERY)
        return set(candidates[share:])

    def close(self) -> None:
        """The SSH connections and SQL sessions kept between rounds."""
        self._keeper.close()
        if self._sessions is not None:
            self._sessions.close()
            self._sessions = None

    def run(self, stop: threading.Event) -> None:
        """Round after round until `stop` is set (set it, then call wake()); a round starts `interval` seconds after
        the previous one did, and a push starts a round of its pair at once."""
        next_round = time.monotonic()
        try:
            self._rounds(stop, next_round)
        finally:
            self.close()

    def _rounds(self, stop: threading.Event, next_round: float) -> None:
        while not stop.is_set():
            with self._lock:
                urgent, self._urgent = self._urgent, set()
            if urgent or time.monotonic() >= next_round:
                full = time.monotonic() >= next_round
                if full:
                    next_round = time.monotonic() + self.interval
                self._run_round(None if full else urgent)
            self._wake.wait(max(0.0, next_round - time.monotonic()))
            self._wake.clear()

    def _run_round(self, only: set[str] | None) -> None:
        try:
            report = self.round(only)
        except PgaasError as exc:
            log.error("round failed: %s", exc)
            return
        for event in report.events:
            log.warning("%s %s%s: %s", event.pair, event.kind, f" ({event.node})" if event.node else "", event.detail)
        log.info("round%s: %d pair(s) in %.2f s, %d with errors", "" if only is None else " (pushed)", report.pairs,
                 report.seconds, report.errors)


def discover(desired: DesiredState, store: Store, pairs: list[DesiredPair], sampled: dict[str, NodeSamples] | None = None,
             sample: set[str] | None = None, sessions: SshSessions | None = None) -> list[PairStatus]:
    """Every pair's status, in parallel; an unexpected failure of one pair is that pair's error. The pairs named in
    `sample` have their nodes' metrics sampled too, into `sampled`. `sessions`: SSH connections kept from round to
    round (the agent's); without, this call opens its own and closes them."""
    ssh = sessions or SshSessions(store)

    def one(pair: DesiredPair) -> PairStatus:
        def on_state(state: PairState) -> None:
            if sampled is not None and sample is not None and pair.name in sample:
                sampled[pair.name], texts = sample_pair(state, statements=pair.doc.spec.statements)
                if texts:
                    store.record_statements(pair.name, texts)

        try:
            status = pair_status(pair, desired, store, ssh, on_state=on_state)
            if status.error is not None and not status.nodes:
                status.nodes = probe_roles(pair, desired, store)
            return status
        except Exception as exc:  # noqa: BLE001 - one pair's bug must not stop the round for the others
            log.exception("pair %s: discovery failed", pair.name)
            return PairStatus(pair=pair.name, provider=pair.doc.spec.provider, replication=pair.doc.spec.replication,
                              degraded=True, error=f"discovery failed: {type(exc).__name__}: {exc}")

    try:
        with ThreadPool(max_workers=max(1, min(MAX_PARALLEL, len(pairs)))) as pool:
            return list(pool.map(one, pairs))
    finally:
        if sessions is None:
            ssh.close()


def record(store: Store, status: PairStatus, source: str, latest: NodeSamples | None = None,
           thresholds: HealthThresholds | None = None, looked_at: str = "",
           certificate_days: int | None = None) -> tuple[LookupPair, list[Event]]:
    """Write a pair's lookup (with its health checks, when `thresholds` are given) and the events since its previous
    one. A look that began (`looked_at`) before the lookup was last written, by a push's quick look, is older than
    what is there: it is not written over it."""
    previous = store.lookup(status.pair)
    if previous is not None and looked_at and previous.checked_at > looked_at:
        return previous, []
    after = from_status(status, source, previous)
    if thresholds is not None:
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=WINDOW_SECONDS)).isoformat(timespec="milliseconds")
        after.checks = evaluate(after, latest or {}, lambda metric: store.samples(status.pair, metric, since=since),
                                thresholds)
        if certificate_days is not None:
            after.checks += expiry_checks(store, status.pair, certificate_days)
        after.checks_at = after.checked_at
    planned = previous is not None and any(
        entry.operation in PLANNED and (entry.finished_at is None or entry.finished_at >= previous.checked_at[:19])
        for entry in store.history(status.pair, limit=5))
    events = changes(previous, after, switching_over=planned)
    store.record_lookup(after, events)
    return after, events


def probe_roles(pair: DesiredPair, desired: DesiredState, store: Store) -> list[NodeStatus]:
    """When discovery refuses to settle (no primary during a failover, two primaries), what each node says it is,
    so the lookup shows the nodes as they are, beside the pair's error."""
    try:
        addresses = pair_inputs(pair, desired.workspace, store).addresses
    except PgaasError:
        return []
    with ThreadPool(max_workers=max(1, len(addresses))) as pool:
        probed = list(pool.map(probe_node, addresses.values()))
    found = []
    for state, conn in probed:
        if conn is not None:
            conn.close()
        found.append(NodeStatus(name=state.name, address=f"{state.address.host}:{state.address.port}",
                                role=state.role if state.role != "unreachable" else "down"))
    return found


def sample_pair(state: PairState, statements: bool = False) -> tuple[NodeSamples, list[StatementText]]:
    """Each node's metrics over its own short connection (a node that does not answer is pg_up 0); with
    `statements`, each node's top statements too, and their texts."""
    found: NodeSamples = {}
    texts: dict[tuple[str, str], StatementText] = {}
    for node in state.nodes:
        if node.role == "unreachable":
            found[node.name] = [Sample(metric="pg_up", value=0.0)]
            continue
        try:
            with connect(node.address) as conn:
                found[node.name] = sample_node(conn)
                if statements:
                    top, seen = sample_statements(conn)
                    found[node.name] += top
                    texts.update({(t.database, t.queryid): t for t in seen})
        except (PgaasError, psycopg.Error) as exc:
            log.warning("%s: metrics not sampled: %s", node.address.label, str(exc).splitlines()[0])
            found[node.name] = [Sample(metric="pg_up", value=0.0)]
    return found, list(texts.values())


def prune(store: Store, settings: MonitoringSettings) -> None:
    """Keep the history bounded: raw samples older than raw_retention become hourly rollups, rollups and events
    older than theirs go."""
    moment = dt.datetime.now(dt.timezone.utc)

    def ago(seconds: float) -> str:
        return (moment - dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")

    rolled = store.roll_up(before=ago(settings.raw_retention))
    store.prune(hourly_before=ago(settings.rollup_retention), events_before=ago(settings.event_retention))
    if rolled:
        log.info("history: %d raw sample(s) rolled up into hours", rolled)


class _RoundStore:
    """The host key book of the SSH connections the agent keeps: the store of the round under way (a host key met
    between rounds, by a quick look, is not looked up: quick looks use SQL alone)."""

    def __init__(self) -> None:
        self.store: Store | None = None

    def host_key(self, endpoint: str) -> str | None:
        if self.store is None:
            raise PgaasError("internal error: an SSH connection opened between two agent rounds")
        return self.store.host_key(endpoint)

    def pin_host_key(self, endpoint: str, key: str) -> None:
        if self.store is None:
            raise PgaasError("internal error: an SSH connection opened between two agent rounds")
        self.store.pin_host_key(endpoint, key)


def open_store_like(path: Path, store_flag: str | None) -> Store:
    return workspace.load(path).open_store(store_flag, "write")


def quick_lookup(pair: str, nodes: list[NodeStatus], previous: LookupPair | None) -> LookupPair:
    """A pair's lookup with the roles a quick look saw; health, checks and the rest as the last full look left
    them."""
    seen = [LookupNode(name=n.name, role=n.role, up=n.role in UP_ROLES, address=n.address) for n in nodes]
    return merge_seen(pair, seen, "push", previous, healthy_if_new=False)
