"""The lookup's records: what every pair's nodes are right now, whether the pair is healthy, and the events
between two looks. Plain models: the store keeps them, the agent, plan and apply write them, the API and the
console read them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

UP_ROLES = ("primary", "standby", "witness")
EventKind = Literal["failover", "switchover", "node down", "node up", "degraded", "healthy", "fenced", "error"]


class LookupNode(BaseModel):
    name: str
    role: str  # primary | standby | witness | down | missing | host down | unreachable
    up: bool
    address: str  # host:port; empty before the node's host exists
    replication: str | None = None  # a standby's: streaming, sync / async...
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    repmgrd: bool | None = None
    fenced: str | None = None  # why and when the guard fenced it
    seen_at: str | None = None  # the last time it answered (UTC, ISO 8601)


class LookupPair(BaseModel):
    pair: str
    healthy: bool
    reasons: list[str] = []  # why not healthy
    error: str | None = None  # the pair's state could not be established (unreachable, no primary, split brain)
    checked_at: str
    source: str  # who looked: agent, plan, apply, push
    nodes: list[LookupNode] = []

    @property
    def primary(self) -> str | None:
        return next((n.name for n in self.nodes if n.role == "primary"), None)


class Event(BaseModel):
    at: str
    pair: str
    node: str  # empty for an event of the whole pair
    kind: EventKind
    detail: str


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class StoredSample(BaseModel):
    """A raw metric sample as the store keeps it."""

    node: str
    database: str
    label: str
    at: str
    value: float


class HourlySample(BaseModel):
    """An hour of one metric's samples, rolled up."""

    node: str
    database: str
    label: str
    hour: str  # 2026-12-01T10 (UTC)
    minimum: float
    maximum: float
    average: float
    last: float
    count: int
