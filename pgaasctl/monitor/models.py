"""The lookup's records: what every pair's nodes are right now, whether the pair is healthy, and the events
between two looks. Plain models: the store keeps them, the agent, plan and apply write them, the API and the
console read them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

UP_ROLES = ("primary", "standby", "witness")
EventKind = Literal["failover", "switchover", "node down", "node up", "degraded", "healthy", "fenced", "error"]


CheckStatus = Literal["ok", "warn", "critical"]
SEVERITY = {"ok": 0, "warn": 1, "critical": 2}


class CheckResult(BaseModel):
    """One health check of a pair (or of one of its nodes or databases), how it stands, and what to do."""

    name: str
    status: CheckStatus
    value: str  # what was measured, for people: "87% of max_connections"
    remedy: str = ""  # one line, empty when ok
    node: str = ""
    database: str = ""


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
    pending_restart: list[str] = []  # parameters waiting for a restart
    seen_at: str | None = None  # the last time it answered (UTC, ISO 8601)


class LookupPair(BaseModel):
    pair: str
    healthy: bool
    reasons: list[str] = []  # why not healthy
    error: str | None = None  # the pair's state could not be established (unreachable, no primary, split brain)
    checked_at: str
    source: str  # who looked: agent, plan, apply, push
    replication: str = ""  # what the spec asks: synchronous or asynchronous
    nodes: list[LookupNode] = []
    checks: list[CheckResult] = []  # the health checks of the agent's last evaluation
    checks_at: str | None = None  # when the agent evaluated them (apply and pushes carry them over, not this)
    last_primary: str | None = None  # the primary, or while there is none the last one seen
    restart_settings: list[str] = []  # the spec's settings that take effect only at a restart

    @property
    def primary(self) -> str | None:
        return next((n.name for n in self.nodes if n.role == "primary"), None)

    def following(self, previous: LookupPair | None) -> LookupPair:
        """This lookup, remembering the last primary seen across looks that found none."""
        self.last_primary = self.primary or (previous.last_primary or previous.primary if previous else None)
        return self

    @property
    def worst_check(self) -> CheckResult | None:
        """The most severe check that is not ok (the first of equals), or None."""
        failing = [c for c in self.checks if c.status != "ok"]
        return max(failing, key=lambda c: SEVERITY[c.status]) if failing else None


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
