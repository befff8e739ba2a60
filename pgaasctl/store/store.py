"""One Store class over two SQL backends (sqlite3 and psycopg); the SQL is shared, only placeholders differ."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import re
import secrets
import socket
import sqlite3
import threading
import urllib.parse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import BaseModel

from pgaasctl.errors import LockHeld, PgaasError
from pgaasctl.monitor.metrics import Sample
from pgaasctl.monitor.models import Event, HourlySample, LookupPair, StoredSample


class StoreMissing(PgaasError):
    """A command that needs an existing state store found none."""

SCHEMA_VERSION = "3"  # 2: origins and intents; 3: node ids and where local pairs were made
DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS pairs (
        name TEXT PRIMARY KEY, provider TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS nodes (
        pair TEXT NOT NULL, name TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL,
        role TEXT NOT NULL, reachable INTEGER NOT NULL, seen_at TEXT NOT NULL,
        PRIMARY KEY (pair, name))""",
    """CREATE TABLE IF NOT EXISTS objects (
        address TEXT PRIMARY KEY, pair TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
        attributes TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        origin TEXT NOT NULL DEFAULT 'unknown', origin_by TEXT NOT NULL DEFAULT '',
        pending INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS history (
        id TEXT PRIMARY KEY, pair TEXT NOT NULL, operation TEXT NOT NULL, actor TEXT NOT NULL,
        started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL, summary TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS host_keys (
        endpoint TEXT PRIMARY KEY, key TEXT NOT NULL, pinned_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS local_addresses (
        address TEXT PRIMARY KEY, pair TEXT NOT NULL, node TEXT NOT NULL, ssh_port INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS node_ids (
        pair TEXT NOT NULL, node TEXT NOT NULL, node_id INTEGER NOT NULL, PRIMARY KEY (pair, node))""",
    """CREATE TABLE IF NOT EXISTS local_dirs (pair TEXT PRIMARY KEY, root TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS locks (
        pair TEXT PRIMARY KEY, holder TEXT NOT NULL, operation TEXT NOT NULL, acquired_at TEXT NOT NULL)""",
    # the lookup: one row per pair, its nodes inside (pgaasctl/monitor/models.py LookupPair)
    """CREATE TABLE IF NOT EXISTS lookup (
        pair TEXT PRIMARY KEY, checked_at TEXT NOT NULL, healthy INTEGER NOT NULL, data TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY, happened_at TEXT NOT NULL, pair TEXT NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_pair ON events (pair, happened_at)",
    # metrics history: raw samples for a while, then hourly rollups (pgaasctl/monitor/history.py)
    """CREATE TABLE IF NOT EXISTS samples (
        pair TEXT NOT NULL, node TEXT NOT NULL, dbname TEXT NOT NULL, metric TEXT NOT NULL, label TEXT NOT NULL,
        sampled_at TEXT NOT NULL, value DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS samples_by_metric ON samples (pair, metric, sampled_at)",
    """CREATE TABLE IF NOT EXISTS samples_hourly (
        pair TEXT NOT NULL, node TEXT NOT NULL, dbname TEXT NOT NULL, metric TEXT NOT NULL, label TEXT NOT NULL,
        hour TEXT NOT NULL, minimum DOUBLE PRECISION NOT NULL, maximum DOUBLE PRECISION NOT NULL,
        average DOUBLE PRECISION NOT NULL, last DOUBLE PRECISION NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (pair, node, dbname, metric, label, hour))""",
]
# Columns added after schema version 1; a store made by an older pgaasctl gets them on its first write.
ADDED_COLUMNS = {
    "objects": [("origin", "TEXT NOT NULL DEFAULT 'unknown'"), ("origin_by", "TEXT NOT NULL DEFAULT ''"),
                ("pending", "INTEGER NOT NULL DEFAULT 0")],
}
Origin = Literal["created", "adopted", "imported", "unknown"]
OpenMode = Literal["read", "write", "create"]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def actor() -> str:
    """Who is acting, as shown to a second caller: user@host pid N."""
    user = pwd.getpwuid(os.getuid()).pw_name
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class ManagedObject(BaseModel):
    """An address pgaasctl manages, how it came to (created, adopted or imported, when and by whom), and
    whether a change of it was begun but never confirmed (pending: the process died, or the change failed
    after the object was made)."""

    address: str
    pair: str
    kind: str
    name: str
    attributes: dict[str, Any]
    created_at: str
    updated_at: str
    origin: str = "unknown"
    origin_by: str = ""
    pending: bool = False


class NodeRecord(BaseModel):
    pair: str
    name: str
    host: str
    port: int
    role: str
    reachable: bool
    seen_at: str


class LockInfo(BaseModel):
    pair: str
    holder: str
    operation: str
    acquired_at: str


class HistoryEntry(BaseModel):
    id: str
    pair: str
    operation: str
    actor: str
    started_at: str
    finished_at: str | None
    status: str
    summary: dict[str, Any]


class Store:
    """The state store. Never holds a secret: callers pass attributes with secrets already removed."""

    def __init__(self, url: str, conn: Any, placeholder: str, read_only: bool = False, where: str = "",
                 must_exist: bool = False) -> None:
        self.url = url
        self.where = where or url  # how messages name the store (a path, or the URL without its password)
        self.read_only = read_only
        self._conn = conn
        self._placeholder = placeholder
        self._lock = threading.RLock()  # re-entered by a transaction's statements
        self._pinned_in_memory: dict[str, str] = {}  # host keys met by a reading command: trusted for it alone
        self.notices: list[str] = []  # things the caller should tell the user (a lock taken over...)
        self._has_monitoring: bool | None = None
        version = self._schema_version()
        if (read_only or must_exist) and version is None:
            raise StoreMissing(f"{self.where} holds no pgaasctl state",
                               "Check the store URL; a new workspace gets its store from its first `pgaasctl apply`.")
        if read_only:
            if version is not None and int(version) < int(SCHEMA_VERSION):  # a reading command may not upgrade it
                raise PgaasError(f"the state store {self.where} was written by an older pgaasctl",
                                 "Run `pgaasctl init` once: it adds what this version keeps and changes nothing else.")
            return
        for statement in DDL:
            self._exec(statement)
        self._add_missing_columns()
        self._exec(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", ("schema_version", SCHEMA_VERSION)
        )
        self._exec("UPDATE meta SET value = ? WHERE key = 'schema_version' AND value < ?", (SCHEMA_VERSION, SCHEMA_VERSION))
        # keys saved plans' checksums and secret fingerprints: not a user's secret, and useless without the plan
        self._exec("INSERT INTO meta (key, value) VALUES ('plan_key', ?) ON CONFLICT (key) DO NOTHING",
                   (secrets.token_hex(32),))

    def plan_key(self) -> bytes | None:
        rows = self._exec("SELECT value FROM meta WHERE key = 'plan_key'")
        return bytes.fromhex(rows[0][0]) if rows else None

    def _schema_version(self) -> str | None:
        try:
            rows = self._exec("SELECT value FROM meta WHERE key = 'schema_version'")
        except PgaasError:
            return None  # no meta table: not a pgaasctl store (yet)
        return rows[0][0] if rows else None

    def _columns(self, table: str) -> set[str]:
        with self._lock:
            cur = self._conn.execute(f"SELECT * FROM {table} LIMIT 0")
            names = {d[0] for d in cur.description}
            cur.close()
        return names

    def _add_missing_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            have = self._columns(table)
            for name, definition in columns:
                if name not in have:
                    self._exec(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")

    def _writing(self) -> None:
        if self.read_only:
            raise PgaasError(f"internal error: a reading command tried to change the state store {self.where}")

    # -- plumbing
    def _exec(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._placeholder != "?":
            query = query.replace("?", self._placeholder)
        with self._lock, self._errors():  # apply records from several threads
            cur = self._conn.execute(query, params)
            try:
                rows = cur.fetchall() if cur.description else []
            finally:
                cur.close()
        return [tuple(r) for r in rows]

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A failing store is reported as such, never as a traceback."""
        try:
            yield
        except (sqlite3.Error, psycopg.Error) as exc:
            raise PgaasError(f"the state store {self.where} failed: {_first_line(exc)}") from None

    def _count(self, query: str, params: tuple[Any, ...]) -> int:
        if self._placeholder != "?":
            query = query.replace("?", self._placeholder)
        with self._lock, self._errors():
            cur = self._conn.execute(query, params)
            n = cur.rowcount
            cur.close()
        return n

    def close(self) -> None:
        self._conn.close()

    # -- managed objects
    _OBJECT_COLUMNS = "address, pair, kind, name, attributes, created_at, updated_at, origin, origin_by, pending"

    def managed(self, pair: str | None = None) -> dict[str, ManagedObject]:
        cols = self._OBJECT_COLUMNS
        if pair is None:
            rows = self._exec(f"SELECT {cols} FROM objects ORDER BY address")
        else:
            rows = self._exec(f"SELECT {cols} FROM objects WHERE pair = ? ORDER BY address", (pair,))
        return {
            r[0]: ManagedObject(
                address=r[0], pair=r[1], kind=r[2], name=r[3], attributes=json.loads(r[4]), created_at=r[5],
                updated_at=r[6], origin=r[7], origin_by=r[8], pending=bool(r[9]),
            )
            for r in rows
        }

    def record(self, address: str, pair: str, kind: str, name: str, attributes: dict[str, Any],
               origin: Origin = "created") -> None:
        """The change of `address` succeeded: keep its attributes. `origin` counts for a new address only."""
        self._writing()
        now = _now()
        self._exec(
            """INSERT INTO objects (address, pair, kind, name, attributes, created_at, updated_at, origin, origin_by, pending)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
               ON CONFLICT (address) DO UPDATE SET attributes = excluded.attributes, updated_at = excluded.updated_at,
                                                   pending = 0""",
            (address, pair, kind, name, json.dumps(attributes, sort_keys=True), now, now, origin, actor()),
        )

    def record_intent(self, address: str, pair: str, kind: str, name: str, attributes: dict[str, Any],
                      origin: Origin = "created") -> None:
        """Before a change that makes `address` runs: whatever kills the process next, the store knows pgaasctl
        may have made it. A managed address keeps its record; record() confirms a new one."""
        self._writing()
        now = _now()
        self._exec(
            """INSERT INTO objects (address, pair, kind, name, attributes, created_at, updated_at, origin, origin_by, pending)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (address) DO NOTHING""",
            (address, pair, kind, name, json.dumps(attributes, sort_keys=True), now, now, origin, actor()),
        )

    def forget(self, address: str) -> bool:
        self._writing()
        return self._count("DELETE FROM objects WHERE address = ?", (address,)) > 0

    # -- pairs and the node lookup
    def record_pair(self, name: str, provider: str) -> None:
        if self.read_only:
            return  # what a reading command saw is not kept
        self._exec(
            """INSERT INTO pairs (name, provider, updated_at) VALUES (?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET provider = excluded.provider, updated_at = excluded.updated_at""",
            (name, provider, _now()),
        )

    def record_nodes(self, pair: str, nodes: list[tuple[str, str, int, str, bool]]) -> None:
        """Replace the node lookup of a pair: (name, host, port, role, reachable) per node."""
        if self.read_only:
            return
        now = _now()
        self._exec("DELETE FROM nodes WHERE pair = ?", (pair,))
        for name, host, port, role, reachable in nodes:
            self._exec(
                "INSERT INTO nodes (pair, name, host, port, role, reachable, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (pair, name, host, port, role, int(reachable), now),
            )

    def nodes(self, pair: str) -> list[NodeRecord]:
        rows = self._exec(
            "SELECT pair, name, host, port, role, reachable, seen_at FROM nodes WHERE pair = ? ORDER BY name", (pair,)
        )
        return [
            NodeRecord(pair=r[0], name=r[1], host=r[2], port=r[3], role=r[4], reachable=bool(r[5]), seen_at=r[6])
            for r in rows
        ]

    def pairs(self) -> list[str]:
        return [r[0] for r in self._exec("SELECT name FROM pairs ORDER BY name")]

    def forget_pair(self, name: str) -> None:
        self._writing()
        self._exec("DELETE FROM node_ids WHERE pair = ?", (name,))
        self._exec("DELETE FROM nodes WHERE pair = ?", (name,))
        self._exec("DELETE FROM lookup WHERE pair = ?", (name,))
        self._exec("DELETE FROM pairs WHERE name = ?", (name,))

    # -- SSH host keys, pinned on first contact
    def host_key(self, endpoint: str) -> str | None:
        rows = self._exec("SELECT key FROM host_keys WHERE endpoint = ?", (endpoint,))
        return rows[0][0] if rows else self._pinned_in_memory.get(endpoint)

    def pin_host_key(self, endpoint: str, key: str) -> None:
        if self.read_only:
            self._pinned_in_memory.setdefault(endpoint, key)  # pinned in the store by the next apply
            return
        self._exec(
            "INSERT INTO host_keys (endpoint, key, pinned_at) VALUES (?, ?, ?) ON CONFLICT (endpoint) DO NOTHING",
            (endpoint, key, _now()),
        )

    def forget_host_key(self, endpoint: str) -> bool:
        self._writing()
        return self._count("DELETE FROM host_keys WHERE endpoint = ?", (endpoint,)) > 0

    # -- loopback addresses of provider local
    def local_addresses(self, pair: str | None = None) -> dict[str, tuple[str, str, int]]:
        """address -> (pair, node, ssh_port)."""
        if pair is None:
            rows = self._exec("SELECT address, pair, node, ssh_port FROM local_addresses")
        else:
            rows = self._exec("SELECT address, pair, node, ssh_port FROM local_addresses WHERE pair = ?", (pair,))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def claim_local_address(self, address: str, pair: str, node: str, ssh_port: int) -> bool:
        self._writing()
        return self._count(
            "INSERT INTO local_addresses (address, pair, node, ssh_port) VALUES (?, ?, ?, ?) ON CONFLICT (address) DO NOTHING",
            (address, pair, node, ssh_port),
        ) == 1

    def local_root(self, pair: str) -> str | None:
        """The local_dir provider local made the pair's nodes under (whatever local_dir says now)."""
        rows = self._exec("SELECT root FROM local_dirs WHERE pair = ?", (pair,))
        return rows[0][0] if rows else None

    def record_local_root(self, pair: str, root: str) -> None:
        self._writing()
        self._exec("INSERT INTO local_dirs (pair, root) VALUES (?, ?) ON CONFLICT (pair) DO NOTHING", (pair, root))

    def forget_local_root(self, pair: str) -> None:
        self._writing()
        self._exec("DELETE FROM local_dirs WHERE pair = ?", (pair,))

    def release_local_address(self, address: str) -> None:
        self._writing()
        self._exec("DELETE FROM local_addresses WHERE address = ?", (address,))

    # -- repmgr node ids: recorded once, so renaming or reordering nodes in the spec never reuses an id
    def node_ids(self, pair: str) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._exec("SELECT node, node_id FROM node_ids WHERE pair = ?", (pair,))}

    def record_node_id(self, pair: str, node: str, node_id: int) -> None:
        self._writing()
        self._exec("INSERT INTO node_ids (pair, node, node_id) VALUES (?, ?, ?) ON CONFLICT (pair, node) DO NOTHING",
                   (pair, node, node_id))

    def forget_node_id(self, pair: str, node: str) -> None:
        self._writing()
        self._exec("DELETE FROM node_ids WHERE pair = ? AND node = ?", (pair, node))

    # -- history
    def begin(self, pair: str, operation: str) -> str:
        self._writing()
        entry_id = f"{time.time_ns():x}-{os.getpid()}"
        self._exec(
            "INSERT INTO history (id, pair, operation, actor, started_at, status, summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry_id, pair, operation, actor(), _now(), "running", "{}"),
        )
        return entry_id

    def finish(self, entry_id: str, status: str, summary: dict[str, Any]) -> None:
        self._writing()
        self._exec(
            "UPDATE history SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
            (_now(), status, json.dumps(summary, sort_keys=True), entry_id),
        )

    def save_progress(self, entry_id: str, summary: dict[str, Any]) -> None:
        """What a running entry has done so far: kept even if the process is killed before finish()."""
        self._writing()
        self._exec("UPDATE history SET summary = ? WHERE id = ? AND status = 'running'",
                   (json.dumps(summary, sort_keys=True), entry_id))

    def history(self, pair: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        """Recent entries, newest first. An entry still `running` whose process on this host is gone was
        killed: it shows (and, in a writable store, is recorded) as `interrupted`."""
        cols = "id, pair, operation, actor, started_at, finished_at, status, summary"
        if pair:
            rows = self._exec(f"SELECT {cols} FROM history WHERE pair = ? ORDER BY id DESC LIMIT ?", (pair, limit))
        else:
            rows = self._exec(f"SELECT {cols} FROM history ORDER BY id DESC LIMIT ?", (limit,))
        entries = [
            HistoryEntry(
                id=r[0], pair=r[1], operation=r[2], actor=r[3], started_at=r[4], finished_at=r[5], status=r[6],
                summary=json.loads(r[7]),
            )
            for r in rows
        ]
        for entry in entries:
            if entry.status == "running" and holder_is_dead(entry.actor):
                entry.status = "interrupted"
                entry.summary = {**entry.summary, "error": "the process was killed before it finished"}
                if not self.read_only:
                    self._exec("UPDATE history SET status = ?, summary = ? WHERE id = ? AND status = 'running'",
                               (entry.status, json.dumps(entry.summary, sort_keys=True), entry.id))
        return entries

    # -- the lookup and its events
    def record_lookup(self, lookup: LookupPair, events: list[Event]) -> None:
        """Replace a pair's lookup and add the events since the previous one."""
        self._writing()
        self._exec(
            """INSERT INTO lookup (pair, checked_at, healthy, data) VALUES (?, ?, ?, ?)
               ON CONFLICT (pair) DO UPDATE SET checked_at = excluded.checked_at, healthy = excluded.healthy,
               data = excluded.data""",
            (lookup.pair, lookup.checked_at, int(lookup.healthy), lookup.model_dump_json()),
        )
        for number, event in enumerate(events):
            self._exec("INSERT INTO events (id, happened_at, pair, node, kind, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       (f"{time.time_ns():x}-{os.getpid()}-{number}", event.at, event.pair, event.node, event.kind,
                        event.detail))

    def _monitored(self) -> bool:
        """Whether the store has the monitoring tables: a store last written by a pgaasctl from before them has
        none until its next write (reading commands never change a store), and then reads as empty."""
        if self._has_monitoring is None:
            try:
                self._exec("SELECT 1 FROM lookup WHERE 1 = 0")
                self._has_monitoring = True
            except PgaasError:
                self._has_monitoring = False
        return self._has_monitoring

    def lookup(self, pair: str) -> LookupPair | None:
        if not self._monitored():
            return None
        rows = self._exec("SELECT data FROM lookup WHERE pair = ?", (pair,))
        return LookupPair.model_validate_json(rows[0][0]) if rows else None

    def lookups(self) -> list[LookupPair]:
        if not self._monitored():
            return []
        return [LookupPair.model_validate_json(r[0]) for r in self._exec("SELECT data FROM lookup ORDER BY pair")]

    def forget_lookup(self, pair: str) -> None:
        """A pair no longer declared: its lookup goes (its events stay, as history)."""
        self._writing()
        self._exec("DELETE FROM lookup WHERE pair = ?", (pair,))

    def events(self, pair: str | None = None, since: str | None = None, limit: int = 100) -> list[Event]:
        """The newest `limit` events (of one pair, after `since`), oldest first."""
        if not self._monitored():
            return []
        where, params = [], []
        if pair:
            where.append("pair = ?")
            params.append(pair)
        if since:
            where.append("happened_at >= ?")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._exec(f"SELECT happened_at, pair, node, kind, detail FROM events {clause} ORDER BY happened_at DESC, id DESC "
                          "LIMIT ?",
                          (*params, limit))
        return [Event(at=r[0], pair=r[1], node=r[2], kind=r[3], detail=r[4]) for r in reversed(rows)]

    # -- metrics history
    def record_samples(self, pair: str, node: str, sampled_at: str, samples: list[Sample]) -> None:
        self._writing()
        rows = [(pair, node, x.database, x.metric, x.label, sampled_at, x.value) for x in samples]
        self._exec_many("INSERT INTO samples (pair, node, dbname, metric, label, sampled_at, value) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def samples(self, pair: str, metric: str, since: str = "", until: str = "~") -> list[StoredSample]:
        """Raw samples of one metric of a pair, oldest first."""
        if not self._monitored():
            return []
        rows = self._exec("SELECT node, dbname, label, sampled_at, value FROM samples WHERE pair = ? AND metric = ? "
                          "AND sampled_at >= ? AND sampled_at < ? ORDER BY sampled_at",
                          (pair, metric, since, until))
        return [StoredSample(node=r[0], database=r[1], label=r[2], at=r[3], value=r[4]) for r in rows]

    def hourly(self, pair: str, metric: str, since: str = "", until: str = "~") -> list[HourlySample]:
        if not self._monitored():
            return []
        rows = self._exec("SELECT node, dbname, label, hour, minimum, maximum, average, last, count FROM samples_hourly "
                          "WHERE pair = ? AND metric = ? AND hour >= ? AND hour < ? ORDER BY hour",
                          (pair, metric, since[:13], until[:13] if until != "~" else until))
        return [HourlySample(node=r[0], database=r[1], label=r[2], hour=r[3], minimum=r[4], maximum=r[5], average=r[6],
                             last=r[7], count=r[8]) for r in rows]

    def roll_up(self, before: str) -> int:
        """Fold raw samples older than `before` into hourly rows (merged with any already there), then delete them.
        Returns how many raw samples went."""
        self._writing()
        with self._transaction():
            return self._roll_up(before)

    def _roll_up(self, before: str) -> int:
        rows = self._exec("SELECT pair, node, dbname, metric, label, sampled_at, value FROM samples "
                          "WHERE sampled_at < ? ORDER BY sampled_at", (before,))
        groups: dict[tuple[str, ...], list[float]] = {}
        for pair, node, database, metric, label, sampled_at, value in rows:
            groups.setdefault((pair, node, database, metric, label, sampled_at[:13]), []).append(value)
        for key, values in groups.items():
            existing = self._exec("SELECT minimum, maximum, average, count FROM samples_hourly WHERE pair = ? AND "
                                  "node = ? AND dbname = ? AND metric = ? AND label = ? AND hour = ?", key)
            low, high, total, count = min(values), max(values), sum(values), len(values)
            if existing:
                old_low, old_high, old_average, old_count = existing[0]
                low, high = min(low, old_low), max(high, old_high)
                total, count = total + old_average * old_count, count + old_count
            self._exec("DELETE FROM samples_hourly WHERE pair = ? AND node = ? AND dbname = ? AND metric = ? AND "
                       "label = ? AND hour = ?", key)
            self._exec("INSERT INTO samples_hourly (pair, node, dbname, metric, label, hour, minimum, maximum, "
                       "average, last, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*key, low, high, total / count, values[-1], count))
        return self._count("DELETE FROM samples WHERE sampled_at < ?", (before,))

    def prune(self, hourly_before: str, events_before: str) -> None:
        self._writing()
        self._exec("DELETE FROM samples_hourly WHERE hour < ?", (hourly_before[:13],))
        self._exec("DELETE FROM events WHERE happened_at < ?", (events_before,))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """The block's statements commit together or not at all; other threads wait for it."""
        with self._lock:
            self._exec("BEGIN")
            try:
                yield
            except BaseException:
                self._exec("ROLLBACK")
                raise
            self._exec("COMMIT")

    def _exec_many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        if self._placeholder != "?":
            query = query.replace("?", self._placeholder)
        with self._lock, self._errors():
            cur = self._conn.cursor()
            try:
                cur.executemany(query, rows)
            finally:
                cur.close()

    # -- locks
    def lock_info(self, pair: str) -> LockInfo | None:
        rows = self._exec("SELECT pair, holder, operation, acquired_at FROM locks WHERE pair = ?", (pair,))
        return LockInfo(pair=rows[0][0], holder=rows[0][1], operation=rows[0][2], acquired_at=rows[0][3]) if rows else None

    def try_lock(self, pair: str, operation: str, holder: str) -> bool:
        self._writing()
        inserted = self._count(
            "INSERT INTO locks (pair, holder, operation, acquired_at) VALUES (?, ?, ?, ?) ON CONFLICT (pair) DO NOTHING",
            (pair, holder, operation, _now()),
        )
        return inserted == 1

    def unlock(self, pair: str, holder: str) -> None:
        self._writing()
        self._exec("DELETE FROM locks WHERE pair = ? AND holder = ?", (pair, holder))

    def force_unlock(self, pair: str) -> LockInfo | None:
        self._writing()
        info = self.lock_info(pair)
        self._exec("DELETE FROM locks WHERE pair = ?", (pair,))
        return info

    def _take_over_dead_lock(self, pair: str) -> bool:
        """A lock held by a process of this host that is gone (killed -9, a crash) is released, with a notice."""
        info = self.lock_info(pair)
        if info is None or not holder_is_dead(info.holder):
            return False
        if self._count("DELETE FROM locks WHERE pair = ? AND holder = ?", (pair, info.holder)) == 1:
            self.notices.append(f"pair {pair!r}: took over the lock of {info.holder} ({info.operation} since "
                                f"{info.acquired_at}): that process is gone")
        return True

    @contextmanager
    def locked(self, pair: str, operation: str, timeout: float) -> Iterator[str]:
        """Hold the pair's lock; wait up to `timeout` seconds, then fail naming the holder."""
        holder = actor()
        deadline = time.monotonic() + timeout
        while not self.try_lock(pair, operation, holder):
            if self._take_over_dead_lock(pair):
                continue
            if time.monotonic() >= deadline:
                info = self.lock_info(pair)
                who = f"{info.holder} ({info.operation} since {info.acquired_at})" if info else "another process"
                raise LockHeld(
                    f"pair {pair!r} is locked by {who}; waited {timeout:g}s",
                    f"Wait for it to finish. If that process is gone, run: pgaasctl force-unlock {pair}",
                )
            time.sleep(0.1)  # polling the lock row; nothing to wait on instead
        try:
            yield holder
        finally:
            self.unlock(pair, holder)


_ACTOR = re.compile(r"^(?P<user>[^@]*)@(?P<host>.*) pid (?P<pid>\d+)$")


def holder_is_dead(holder: str) -> bool:
    """Whether `holder` (an actor() string) names a process of this host that no longer runs."""
    match = _ACTOR.match(holder)
    if match is None or match["host"] != socket.gethostname():
        return False  # another host's process: only its host can tell
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has finished
    except (OSError, IndexError):
        return True


def open_store(url: str, base: Path | None = None, mode: OpenMode = "create") -> Store:
    """Open the store at `url`. mode "create" makes it if needed (the first apply); "write" needs it to exist;
    "read" needs it to exist and never changes it. Relative SQLite paths are relative to `base` or the cwd."""
    if url.startswith("sqlite:///"):
        raw = url.removeprefix("sqlite:///")
        path = Path(raw) if raw.startswith("/") else (base or Path.cwd()) / raw
        if mode != "create" and not path.is_file():
            raise StoreMissing(
                f"there is no state store at {path}",
                "Check the Workspace document's `store` (relative paths are relative to the workspace root), "
                "$PGAASCTL_STORE and --store; a new workspace gets its store from its first `pgaasctl apply`.",
            )
        try:
            if mode == "create":
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(_sqlite_target(path, mode), timeout=30, isolation_level=None,
                                   check_same_thread=False, uri=True)
            if mode != "read":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable across crashes of pgaasctl; one fsync per checkpoint
        except (OSError, sqlite3.Error) as exc:
            raise PgaasError(f"cannot open the state store {path}: {exc}") from None
        return Store(url, conn, "?", read_only=mode == "read", where=str(path), must_exist=mode != "create")
    if url.startswith(("postgresql://", "postgres://")):
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            reason = _redact_url(_first_line(exc))  # libpq may quote the URL back
            secret = _password_in(url)
            if secret:
                reason = reason.replace(secret, "***")
            raise PgaasError(f"cannot open the state store {_redact_url(url)}: {reason}") from None
        return Store(_redact_url(url), conn, "%s", read_only=mode == "read", must_exist=mode != "create")
    raise PgaasError(
        f"state store URL {_redact_url(url)!r} is not understood",
        "Use sqlite:///state/pgaasctl.db (relative), sqlite:////abs/path.db or postgresql://user@host/db",
    )


def _sqlite_target(path: Path, mode: OpenMode) -> str:
    """The SQLite URI to open. A reading command on a store no writer has open (no -wal file) reads it as
    immutable, so it creates no -wal/-shm file beside it; with a writer about, SQLite's own read-only locking."""
    uri = "file:" + urllib.parse.quote(str(path))
    if mode != "read":
        return uri
    return uri + ("?mode=ro" if Path(f"{path}-wal").exists() else "?mode=ro&immutable=1")


def _redact_url(url: str) -> str:
    """Drop passwords from a URL or conninfo string before it is shown anywhere."""
    url = re.sub(r"(?i)(password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", url)
    return re.sub(r"^([a-z]+://[^:/@]*):[^@]*@", r"\1@", url)


def _password_in(url: str) -> str | None:
    match = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", url) or re.search(r"(?i)password\s*=\s*([^&\s]+)", url)
    return match.group(1) if match and match.group(1) else None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
