"""Two primaries in one pair: which one holds the commits clients were told were made, by evidence.

A promotion starts a new timeline, so of two primaries the one on the newer timeline was promoted later, while
the other ran on cut off (frozen, partitioned, or started by hand). Its history file names the timeline it left
and the WAL position where it left it (the fork). The evidence is clear when the timelines differ and the newer
node's history descends from the stale node's timeline; then the stale node's WAL past the fork is what a rewind
discards. Under synchronous replication none of it was acknowledged: its commits waited for a standby that had
become the other primary.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgaasctl.errors import PlanError


@dataclass
class Primary:
    """What one running primary says about itself."""

    name: str
    label: str  # "a (10.213.0.2)"
    timeline: int | None
    lsn: str | None = None
    synchronous_standby_names: str | None = None
    history: str | None = None  # its timeline history file (None: timeline 1, or unreadable)
    connection: psycopg.Connection | None = None


@dataclass
class Verdict:
    keep: Primary
    stale: Primary
    fork_lsn: str | None
    discarded_bytes: int | None

    def explanation(self) -> str:
        k, s = self.keep, self.stale
        text = (f"{s.name} is a stale primary on timeline {s.timeline}; {k.name} was promoted later (timeline "
                f"{k.timeline}, forked from timeline {s.timeline}"
                + (f" at {self.fork_lsn}" if self.fork_lsn else "") + ") and holds the latest commits")
        if self.discarded_bytes is not None:
            text += f"; the rewind discards {self.discarded_bytes} bytes of WAL {s.name} wrote after the fork"
            if self.discarded_bytes and s.synchronous_standby_names:
                text += (" (it ran synchronous replication, so none of those commits was acknowledged to a "
                         "client)")
            elif self.discarded_bytes:
                text += (" (asynchronous replication: commits acknowledged on it after the fork are lost; "
                         "copy them from it first if they matter)")
        return text


def read_primary(name: str, label: str, timeline: int | None, conn: psycopg.Connection | None) -> Primary:
    primary = Primary(name=name, label=label, timeline=timeline, connection=conn)
    if conn is None:
        return primary
    try:
        primary.lsn, primary.synchronous_standby_names = conn.execute(
            "SELECT pg_current_wal_lsn()::text, current_setting('synchronous_standby_names')").fetchone()  # type: ignore[misc]
    except psycopg.Error:
        return primary
    if timeline and timeline > 1:
        try:
            primary.history = conn.execute(
                "SELECT pg_read_file('pg_wal/' || lpad(upper(to_hex(%s::int)), 8, '0') || '.history')", (timeline,)
            ).fetchone()[0]  # type: ignore[index]
        except psycopg.Error:
            primary.history = None  # not a superuser, or the file is gone: the timelines alone speak
    return primary


def fork_point(history: str, timeline: int) -> str | None:
    """The WAL position where the history left `timeline`, or None when it never passed through it."""
    for line in history.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) == timeline:
            return fields[1]
    return None


def lsn_bytes(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def settle(pair: str, primaries: list[Primary]) -> Verdict:
    """The primary to keep and the stale one, or PlanError printing the evidence when it is not clear."""
    evidence = "; ".join(f"{p.label} primary on timeline {p.timeline if p.timeline is not None else '?'}"
                         + (f" at {p.lsn}" if p.lsn else "") for p in primaries)
    unclear = (f"pair {pair!r}: split brain, more than one node claims to be primary: {evidence}",
               "The evidence does not tell which holds the acknowledged commits, so pgaasctl changes neither. "
               "Compare their data, stop PostgreSQL on the one to discard, then run `pgaasctl apply` to rejoin it.")
    timelines = [p.timeline for p in primaries]
    if len(primaries) != 2 or None in timelines or len(set(timelines)) != 2:
        raise PlanError(*unclear)
    keep, stale = sorted(primaries, key=lambda p: p.timeline or 0, reverse=True)
    assert stale.timeline is not None
    fork = fork_point(keep.history, stale.timeline) if keep.history else None
    if keep.history and fork is None:
        raise PlanError(unclear[0] + f"; {keep.name}'s timeline history does not pass through timeline "
                        f"{stale.timeline}", unclear[1])
    discarded = None
    if fork and stale.lsn:
        discarded = max(0, lsn_bytes(stale.lsn) - lsn_bytes(fork))
    return Verdict(keep=keep, stale=stale, fork_lsn=fork, discarded_bytes=discarded)
