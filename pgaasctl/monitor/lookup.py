"""The lookup: what every pair's nodes are right now (role, up, address, replication, lag, repmgrd, fencing), and
whether the pair is healthy. Written by the agent every round (and by apply from its own discovery);
read by `pgaasctl events`, the API and the console without touching a node.

Between two lookups of a pair, what changed becomes events: a failover or a switchover, a node down or up, the
pair degraded or healthy again, a node fenced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgaasctl.monitor.models import UP_ROLES, Event, EventKind, LookupNode, LookupPair, now

if TYPE_CHECKING:  # status and discovery import the plan, which records into the lookup
    from pgaasctl.live.discovery import PairState
    from pgaasctl.status import PairStatus


def from_status(status: PairStatus, source: str, previous: LookupPair | None = None, at: str | None = None) -> LookupPair:
    """The lookup of one pair from what discovery saw; a node that does not answer keeps when it last did, and a pair
    that could not be read at all keeps its last known nodes (its error and checked_at say how old they are)."""
    at = at or now()
    seen_before = {n.name: n.seen_at for n in previous.nodes} if previous is not None else {}
    nodes = [
        LookupNode(name=n.name, role=n.role, up=n.role in UP_ROLES, address=n.address, replication=n.replication,
                   lag_seconds=n.lag_seconds, lag_bytes=n.lag_bytes, repmgrd=n.repmgrd, fenced=n.fenced,
                   pending_restart=n.pending_restart, seen_at=at if n.role in UP_ROLES else seen_before.get(n.name))
        for n in status.nodes
    ]
    if status.error is not None and previous is not None and not nodes:
        nodes = [n.model_copy() for n in previous.nodes]  # what was last known, with when each node last answered
    error = status.error.splitlines()[0] if status.error else None  # the message, without its advice
    reasons = ([error] if error else []) + list(status.warnings)
    return LookupPair(pair=status.pair, healthy=not status.degraded and error is None, reasons=reasons, error=error,
                      checked_at=at, source=source, replication=status.replication, nodes=nodes,
                      restart_settings=status.restart_settings or (previous.restart_settings if previous else []),
                      checks=previous.checks if previous is not None else [],
                      checks_at=previous.checks_at if previous is not None else None).following(previous)


def from_state(state: PairState, source: str, previous: LookupPair | None = None) -> LookupPair:
    """What plan or apply saw of a pair's nodes (roles and addresses, no health): merged into the last full look,
    whose health and checks stand until the agent looks again."""
    seen = []
    for node in state.nodes:
        up = node.role != "unreachable"
        seen.append(LookupNode(name=node.name, role=node.role if up else "down", up=up,
                               address=f"{node.address.host}:{node.address.port}" if node.address.host else "",
                               replication=node.replication if up else None))
    # apply has just made a new pair whole; the agent grades it
    return merge_seen(state.pair, seen, source, previous, healthy_if_new=True)


def merge_seen(pair: str, seen: list[LookupNode], source: str, previous: LookupPair | None,
               healthy_if_new: bool) -> LookupPair:
    """The last full look at a pair, with the node facts a partial look saw (the fields set in `seen`) laid over
    it; health, checks and the witness stand as they were."""
    at = now()
    earlier = {n.name: n for n in previous.nodes} if previous is not None else {}
    nodes = []
    for node in seen:
        base = earlier.get(node.name) or node
        update = {name: getattr(node, name) for name in node.model_fields_set}
        nodes.append(base.model_copy(update={**update, "seen_at": at if node.up else base.seen_at}))
    nodes += [n for n in (previous.nodes if previous is not None else []) if n.role == "witness"]
    return LookupPair(pair=pair, healthy=previous.healthy if previous is not None else healthy_if_new,
                      reasons=previous.reasons if previous is not None else [], checked_at=at, source=source,
                      replication=previous.replication if previous is not None else "", nodes=nodes,
                      checks=previous.checks if previous is not None else [],
                      checks_at=previous.checks_at if previous is not None else None).following(previous)


def changes(before: LookupPair | None, after: LookupPair, switching_over: bool = False) -> list[Event]:
    """What happened between two lookups of a pair. Nothing for its first lookup: there is no before.
    `switching_over`: a `pgaasctl switchover` of the pair ran meanwhile, so a new primary is a switchover."""
    if before is None:
        return []
    at, pair, events = after.checked_at, after.pair, []
    if after.error is not None:
        if after.error != before.error:
            events.append(Event(at=at, pair=pair, node="", kind="error", detail=after.error))
        if before.healthy:
            events.append(Event(at=at, pair=pair, node="", kind="degraded", detail=after.error))
        if after.nodes == before.nodes:
            return events  # the last known nodes, kept: nothing new to compare
    old, new = before.primary or before.last_primary, after.primary
    if new is not None and new != old:
        kind: EventKind = "switchover" if switching_over else "failover"
        was = f" (was {old})" if old else ""
        events.append(Event(at=at, pair=pair, node=new, kind=kind, detail=f"{new} is the primary{was}"))
    earlier = {n.name: n for n in before.nodes}
    for node in after.nodes:
        prior = earlier.get(node.name)
        if prior is None:
            continue
        if prior.up and not node.up:
            events.append(Event(at=at, pair=pair, node=node.name, kind="node down", detail=f"{node.name} is {node.role}"))
        elif node.up and not prior.up:
            events.append(Event(at=at, pair=pair, node=node.name, kind="node up", detail=f"{node.name} is {node.role}"))
        if node.fenced and node.fenced != prior.fenced:
            events.append(Event(at=at, pair=pair, node=node.name, kind="fenced", detail=node.fenced))
    if before.healthy and not after.healthy and after.error is None:
        events.append(Event(at=at, pair=pair, node="", kind="degraded", detail="; ".join(after.reasons) or "degraded"))
    elif after.healthy and not before.healthy:
        events.append(Event(at=at, pair=pair, node="", kind="healthy", detail="the pair is whole again"))
    return events
