"""Rates from a counter's samples. PostgreSQL's counters only grow until their statistics are reset (a crash, a
restart after an immediate stop, pg_stat_reset(), a failover onto a node with its own counters): a value lower than
the one before means a reset, and the increase across it is the new value itself, never a negative delta."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pydantic import BaseModel


class Point(BaseModel):
    at: str  # ISO 8601
    value: float


class Increase(BaseModel):
    total: float  # how much the counter grew over the points
    seconds: float  # between the first and the last point
    resets: int  # how many times it went back

    @property
    def per_second(self) -> float | None:
        return self.total / self.seconds if self.seconds > 0 else None


def increase(points: Sequence[Point]) -> Increase:
    """The counter's growth over `points` (oldest first); none over fewer than two."""
    total, resets = 0.0, 0
    for before, after in zip(points, points[1:]):
        if after.value >= before.value:
            total += after.value - before.value
        else:
            resets += 1
            total += after.value
    seconds = (_parse(points[-1].at) - _parse(points[0].at)).total_seconds() if len(points) > 1 else 0.0
    return Increase(total=total, seconds=seconds, resets=resets)


def _parse(at: str) -> dt.datetime:
    return dt.datetime.fromisoformat(at)
