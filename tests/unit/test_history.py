"""Metrics history in the store: raw samples, their hourly rollups, and retention that keeps the store bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pgaasctl.monitor.metrics import Sample
from pgaasctl.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:///state/test.db", base=tmp_path)
    yield s
    s.close()


def _at(hour: int, minute: int) -> str:
    return f"2026-12-01T{hour:02d}:{minute:02d}:00.000+00:00"


def _fill(store: Store) -> None:
    """Two hours of a counter sampled every 10 minutes on node a, and a gauge per database."""
    for hour in (10, 11):
        for minute in range(0, 60, 10):
            n = (hour - 10) * 6 + minute // 10
            store.record_samples("orders", "orders-a", _at(hour, minute), [
                Sample(metric="pg_stat_database_xact_commit", value=1000.0 + 100 * n, database="app"),
                Sample(metric="pg_database_size_bytes", value=float(n), database="app"),
                Sample(metric="pg_stat_activity_count", value=3.0, label="idle"),
            ])


def test_raw_samples_come_back_by_metric_and_time(store: Store) -> None:
    _fill(store)
    commits = store.samples("orders", "pg_stat_database_xact_commit")
    assert len(commits) == 12 and commits[0].value == 1000.0 and commits[-1].value == 2100.0
    assert {(s.node, s.database) for s in commits} == {("orders-a", "app")}
    later = store.samples("orders", "pg_stat_database_xact_commit", since=_at(11, 0))
    assert [s.at for s in later][:1] == [_at(11, 0)] and len(later) == 6
    assert store.samples("orders", "no_such_metric") == [] and store.samples("other", "pg_database_size_bytes") == []
    [idle] = {s.label for s in store.samples("orders", "pg_stat_activity_count")}
    assert idle == "idle"


def test_rollup_folds_old_samples_into_hours_and_deletes_them(store: Store) -> None:
    _fill(store)
    gone = store.roll_up(before=_at(11, 0))
    assert gone == 18  # the 10:xx hour: six samples of three series
    assert len(store.samples("orders", "pg_database_size_bytes")) == 6  # 11:xx stays raw
    [hour] = store.hourly("orders", "pg_database_size_bytes")
    assert (hour.hour, hour.minimum, hour.maximum, hour.average, hour.last, hour.count) == (
        "2026-12-01T10", 0.0, 5.0, 2.5, 5.0, 6)
    [commits] = store.hourly("orders", "pg_stat_database_xact_commit")
    assert commits.last == 1500.0  # a counter's last value: rates between hours come from it


def test_rolling_up_an_hour_twice_merges_and_counts_each_sample_once(store: Store) -> None:
    _fill(store)
    store.roll_up(before=_at(10, 30))
    store.roll_up(before=_at(11, 0))
    [hour] = store.hourly("orders", "pg_database_size_bytes")
    assert (hour.minimum, hour.maximum, hour.average, hour.last, hour.count) == (0.0, 5.0, 2.5, 5.0, 6)


def test_prune_bounds_rollups_and_events(store: Store) -> None:
    _fill(store)
    store.roll_up(before=_at(12, 0))
    assert store.samples("orders", "pg_database_size_bytes") == []
    assert len(store.hourly("orders", "pg_database_size_bytes")) == 2
    store.prune(hourly_before=_at(11, 0), events_before=_at(0, 0))
    assert [h.hour for h in store.hourly("orders", "pg_database_size_bytes")] == ["2026-12-01T11"]


def test_prune_forgets_series_left_with_nothing(store: Store) -> None:
    _fill(store)
    store.roll_up(before=_at(12, 0))
    store.prune(hourly_before=_at(13, 0), events_before=_at(0, 0))
    assert store._exec("SELECT count(*) FROM series") == [(0,)]
    _fill(store)  # the same series again: made anew
    assert len(store.samples("orders", "pg_database_size_bytes")) == 12


def test_a_point_costs_a_few_dozen_bytes(tmp_path: Path) -> None:
    store = open_store("sqlite:///grow.db", base=tmp_path)
    try:
        store.record_samples("orders", "orders-a", _at(0, 0), [Sample(metric=f"m{i}", value=1.0) for i in range(100)])
        store._exec("PRAGMA wal_checkpoint(TRUNCATE)")
        before = (tmp_path / "grow.db").stat().st_size
        for minute in range(1, 60):
            for second in range(0, 60, 15):
                store.record_samples("orders", "orders-a", f"2026-12-01T00:{minute:02d}:{second:02d}.000+00:00",
                                     [Sample(metric=f"m{i}", value=float(minute * i)) for i in range(100)])
        store._exec("PRAGMA wal_checkpoint(TRUNCATE)")
        grown = (tmp_path / "grow.db").stat().st_size - before
    finally:
        store.close()
    assert grown / (59 * 4 * 100) < 30  # bytes per point (a row per sample with its names took about 160)


def test_history_kept_one_row_per_sample_moves_into_series_and_points_on_the_next_write(tmp_path: Path) -> None:
    import sqlite3

    open_store("sqlite:///old.db", base=tmp_path).close()
    with sqlite3.connect(tmp_path / "old.db") as raw:  # what the first version of the agent kept
        raw.execute("CREATE TABLE samples (pair TEXT NOT NULL, node TEXT NOT NULL, dbname TEXT NOT NULL, metric TEXT "
                    "NOT NULL, label TEXT NOT NULL, sampled_at TEXT NOT NULL, value DOUBLE PRECISION NOT NULL)")
        raw.execute("CREATE TABLE samples_hourly (pair TEXT NOT NULL, node TEXT NOT NULL, dbname TEXT NOT NULL, metric "
                    "TEXT NOT NULL, label TEXT NOT NULL, hour TEXT NOT NULL, minimum DOUBLE PRECISION NOT NULL, maximum "
                    "DOUBLE PRECISION NOT NULL, average DOUBLE PRECISION NOT NULL, last DOUBLE PRECISION NOT NULL, "
                    "count INTEGER NOT NULL, PRIMARY KEY (pair, node, dbname, metric, label, hour))")
        raw.execute("INSERT INTO samples VALUES ('orders', 'orders-a', 'app', 'pg_database_size_bytes', '', ?, 42.0)",
                    (_at(10, 0),))
        raw.execute("INSERT INTO samples_hourly VALUES ('orders', 'orders-a', 'app', 'pg_database_size_bytes', '', "
                    "'2026-12-01T09', 1.0, 3.0, 2.0, 3.0, 240)")
    store = open_store("sqlite:///old.db", base=tmp_path, mode="write")
    try:
        [point] = store.samples("orders", "pg_database_size_bytes")
        assert (point.node, point.database, point.at, point.value) == ("orders-a", "app", _at(10, 0), 42.0)
        [hour] = store.hourly("orders", "pg_database_size_bytes")
        assert (hour.hour, hour.average, hour.count) == ("2026-12-01T09", 2.0, 240)
        tables = {r[0] for r in store._exec("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert not tables & {"samples", "samples_hourly", "nodes"}
    finally:
        store.close()
