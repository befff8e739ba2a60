"""Which node of a pair is the primary? Ask every node in parallel, refuse to guess."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import psycopg

from pgaasctl.errors import ConnectionFailed, PlanError
from pgaasctl.live.connect import NodeAddress, connect
from pgaasctl.parallel import ThreadPool

NodeRole = Literal["primary", "standby", "unreachable"]


@dataclass
class NodeState:
    address: NodeAddress
    role: NodeRole
    error: str | None = None
    replication: str | None = None  # e.g. "streaming, sync"
    receiving_from: tuple[str, int] | None = None  # a standby's WAL sender (host, port), when streaming
    timeline: int | None = None  # a primary's current timeline (a promotion starts a new one)

    @property
    def name(self) -> str:
        return self.address.name


@dataclass
class PairState:
    """The discovered shape of a pair, with an open admin connection to its primary."""

    pair: str
    nodes: list[NodeState]
    primary: NodeState
    connection: psycopg.Connection = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def standbys(self) -> list[NodeState]:
        return [n for n in self.nodes if n.role == "standby"]

    def close(self) -> None:
        self.connection.close()


def probe_node(node: NodeAddress, database: str | None = None) -> tuple[NodeState, psycopg.Connection | None]:
    """The node's role on a session to `database` (default: the admin database), kept open when it answers."""
    try:
        conn = connect(node, database)
    except ConnectionFailed as exc:
        return NodeState(node, "unreachable", error=exc.message), None
    try:
        in_recovery, walfile = conn.execute(
            "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN pg_walfile_name(pg_current_wal_lsn()) END"
        ).fetchone()  # type: ignore[misc]
        if not in_recovery:
            return NodeState(node, "primary", timeline=timeline_of_walfile(walfile)), conn
        receiver = conn.execute("SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver").fetchone()
    except psycopg.Error as exc:
        conn.close()
        return NodeState(node, "unreachable", error=f"{node.label}: {exc}"), None
    state = NodeState(node, "standby")
    state.receiving_from = (receiver[1], receiver[2]) if receiver and receiver[0] == "streaming" else None
    return state, conn


def discover(pair: str, nodes: list[NodeAddress], synchronous: bool) -> PairState:
    """Find the one primary of `pair`. Raises PlanError on split brain or when no node is primary."""
    with ThreadPool(max_workers=max(1, len(nodes))) as pool:
        probes = list(pool.map(probe_node, nodes))
    states = [state for state, _ in probes]
    primaries = [(state, conn) for state, conn in probes if state.role == "primary"]
    for state, conn in probes:
        if state.role != "primary" and conn is not None:
            conn.close()

    claims = "; ".join(f"{s.address.name} ({s.address.host}:{s.address.port}) {_claim(s)}" for s in states)
    if len(primaries) > 1:
        for _, conn in primaries:
            conn.close()  # type: ignore[union-attr]
        raise PlanError(
            f"pair {pair!r}: split brain, more than one node claims to be primary: {claims}",
            "pgaasctl will not write to either. Stop or demote the wrong one, then plan again.",
        )
    if not primaries:
        if len(states) == 1 and states[0].error:
            raise ConnectionFailed(states[0].error)
        unreachable = [s for s in states if s.role == "unreachable"]
        if unreachable:  # not "no primary": pgaasctl cannot see; a promotion now could make two
            raise ConnectionFailed(
                f"pair {pair!r}: pgaasctl cannot tell which node is primary: "
                + "; ".join(s.error or f"{s.address.label} is unreachable" for s in unreachable),
                "Fix what stops pgaasctl from connecting (above); never promote a node while another may be primary.",
            )
        raise PlanError(f"pair {pair!r}: no node is primary: {claims}",
                        "Every node is a standby: promote the one that has the latest data, on the server.")

    primary, conn = primaries[0]
    assert conn is not None
    state = PairState(pair=pair, nodes=states, primary=primary, connection=conn)
    if len(nodes) == 1:
        state.warnings.append(f"pair {pair!r} has one node: it is not fault tolerant")
    for node in states:
        if node.role == "unreachable":
            state.warnings.append(f"pair {pair!r} is degraded: {node.error}")
    read_replication(state, synchronous)
    return state


def timeline_of_walfile(name: str) -> int:
    """000000030000000000000005 -> 3: a WAL file's name starts with its timeline."""
    return int(name[:8], 16)


def primary_timeline(conn: psycopg.Connection) -> int:
    return timeline_of_walfile(conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]


def _claim(state: NodeState) -> str:
    if state.role == "unreachable":
        return "is unreachable"
    if state.role == "primary":
        return "claims primary" + (f" on timeline {state.timeline}" if state.timeline is not None else "")
    return "is a standby"


def read_replication(state: PairState, synchronous: bool) -> None:
    """Each standby must stream from this primary; the primary says whether it is synchronous."""
    rows = state.connection.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()
    primary = state.primary.address
    for node in state.standbys:
        if node.receiving_from is None or node.receiving_from != (primary.host, primary.port):
            source = f"{node.receiving_from[0]}:{node.receiving_from[1]}" if node.receiving_from else "nowhere"
            node.replication = f"not replicating from the primary (streaming from {source})"
            state.warnings.append(f"pair {state.pair!r} is degraded: standby {node.name} is not streaming from {primary.name}")
            continue
        # walsenders are named by the standby's application_name; with a single standby there is no doubt
        match = next((r for r in rows if r[0] == node.name), rows[0] if len(rows) == 1 else None)
        sync_state = match[2] if match else "unknown"
        node.replication = f"streaming, {sync_state}"
        if synchronous and sync_state not in ("sync", "quorum"):
            state.warnings.append(f"pair {state.pair!r} is degraded: standby {node.name} is {sync_state}, not synchronous")
