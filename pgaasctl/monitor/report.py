"""`pgaasctl report`: what a database owner forwards. For each pair, over a period: the health checks with their
remedies, charts (sessions, transactions per second, cache hit ratio, database sizes, replication lag), the
databases by size and growth, and the failovers and other events. Built from the store alone (the agent's
history), rendered as a self-contained HTML page (charts drawn by matplotlib as inline SVG), Markdown or JSON."""

from __future__ import annotations

import datetime as dt
import html
import io
from collections import defaultdict

from pydantic import BaseModel

from pgaasctl.errors import PgaasError
from pgaasctl.monitor.models import CheckResult, Event, now
from pgaasctl.monitor.rates import Point, increase
from pgaasctl.store import Store

COUNTERS_FOR_TPS = ("pg_stat_database_xact_commit", "pg_stat_database_xact_rollback")
TOP_STATEMENTS = 10  # rows of the report's statements table


class Series(BaseModel):
    label: str
    points: list[tuple[str, float]]  # (ISO time, value), oldest first


class Chart(BaseModel):
    title: str
    unit: str
    series: list[Series] = []


class DatabaseRow(BaseModel):
    database: str
    size_bytes: float
    growth_bytes: float  # over the period (negative: it shrank)


class StatementRow(BaseModel):
    database: str
    queryid: str
    query: str
    calls: float  # over the period, every node's
    seconds: float
    rows: float

    @property
    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.calls if self.calls else 0.0


class PairReport(BaseModel):
    pair: str
    healthy: bool | None  # None: the agent never looked at it
    checked_at: str | None
    checks: list[CheckResult] = []
    charts: list[Chart] = []
    databases: list[DatabaseRow] = []
    statements: list[StatementRow] = []  # the top statements by time over the period (pg_stat_statements)
    events: list[Event] = []
    samples: int = 0  # how many samples the period holds: 0 means no history (no agent ran)


class Report(BaseModel):
    generated_at: str
    since: str
    until: str
    pairs: list[PairReport]


# ---------------------------------------------------------------- gathering

def build_report(store: Store, pairs: list[str], database: str | None, seconds: float) -> Report:
    until = dt.datetime.now(dt.timezone.utc)
    since = (until - dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    reports = [_pair_report(store, pair, database, since) for pair in pairs]
    if database is not None and not any(r.databases for r in reports):
        raise PgaasError(f"database {database!r} has no samples in {', '.join(pairs)} since {since[:16]}",
                         "Check its name (`pgaasctl status` lists the pairs; the agent samples every database).")
    return Report(generated_at=now(), since=since, until=until.isoformat(timespec="milliseconds"), pairs=reports)


def _points(store: Store, pair: str, metric: str, since: str, database: str | None) -> list[tuple[str, str, str, float]]:
    """(node, database, at, value) of a metric over the period: hourly rollups for what is older than the raw
    samples kept, raw samples after."""
    raw = store.samples(pair, metric, since=since)
    first_raw = raw[0].at if raw else "~"
    counter = metric.startswith("pg_stat_database_") or metric == "pgaas_wal_position_bytes"
    rows = [(h.node, h.database, f"{h.hour}:30:00+00:00", h.last if counter else h.average)
            for h in store.hourly(pair, metric, since=since) if f"{h.hour}:59:59" < first_raw]
    rows += [(s.node, s.database, s.at, s.value) for s in raw]
    return [r for r in rows if database is None or r[1] in (database, "")]


def _pair_report(store: Store, pair: str, database: str | None, since: str) -> PairReport:
    lookup = store.lookup(pair)
    report = PairReport(pair=pair, healthy=lookup.healthy if lookup else None,
                        checked_at=lookup.checked_at if lookup else None,
                        checks=[c for c in (lookup.checks if lookup else []) if c.status != "ok"]
                        + [c for c in (lookup.checks if lookup else []) if c.status == "ok"],
                        events=store.events(pair, since=since, limit=1000))
    sessions = _points(store, pair, "pg_stat_activity_count", since, None)
    report.samples = len(sessions)
    if database is None:
        report.charts.append(Chart(title="Sessions", unit="sessions", series=_summed(sessions)))
    else:  # the database's own sessions
        connected = [r for r in _points(store, pair, "pg_stat_database_numbackends", since, database) if r[1]]
        report.charts.append(Chart(title="Sessions", unit="sessions", series=_summed(connected)))
    report.charts.append(Chart(title="Transactions per second", unit="per second", series=_tps(store, pair, since, database)))
    report.charts.append(Chart(title="Cache hit ratio", unit="%", series=_cache_hit(store, pair, since, database)))
    sizes = _points(store, pair, "pg_database_size_bytes", since, database)
    report.charts.append(Chart(title="Database size", unit="MiB", series=_by_database(sizes, 1 / 1024 ** 2)))
    report.charts.append(Chart(title="Replication lag", unit="seconds",
                               series=_summed(_points(store, pair, "pg_replication_lag_seconds", since, None))))
    report.databases = _databases(sizes)
    report.statements = _top_statements(store, pair, since, database)
    return report


def _top_statements(store: Store, pair: str, since: str, database: str | None, top: int = TOP_STATEMENTS) -> list[StatementRow]:
    """Each statement's calls, time and rows over the period (increases of its counters, per node, then added up),
    the most time first."""
    totals: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for metric, field in (("pg_stat_statements_seconds_total", "seconds"), ("pg_stat_statements_calls_total", "calls"),
                          ("pg_stat_statements_rows_total", "rows")):
        series: dict[tuple[str, str, str], list[Point]] = defaultdict(list)
        raw = store.samples(pair, metric, since=since)
        first_raw = raw[0].at if raw else "~"
        for h in store.hourly(pair, metric, since=since):
            if f"{h.hour}:59:59" < first_raw:
                series[(h.node, h.database, h.label)].append(Point(at=f"{h.hour}:30:00+00:00", value=h.last))
        for s in raw:
            series[(s.node, s.database, s.label)].append(Point(at=s.at, value=s.value))
        for (_, db, queryid), points in series.items():
            if database is None or db == database:
                totals[(db, queryid)][field] += increase(points).total
    texts = store.statements(pair)
    rows = [StatementRow(database=db, queryid=queryid, query=texts.get((db, queryid), "(text not kept)"),
                         calls=v["calls"], seconds=v["seconds"], rows=v["rows"])
            for (db, queryid), v in totals.items() if v["calls"] > 0]
    return sorted(rows, key=lambda r: (-r.seconds, r.database, r.queryid))[:top]


def _summed(rows: list[tuple[str, str, str, float]]) -> list[Series]:
    """One series per node: the values of each moment added up (sessions of every state, say)."""
    by_node: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for node, _, at, value in rows:
        by_node[node][at] += value
    return [Series(label=node, points=sorted(moments.items())) for node, moments in sorted(by_node.items())]


def _by_database(rows: list[tuple[str, str, str, float]], scale: float) -> list[Series]:
    """One series per database, from the node that has most of its samples (both nodes hold the same data)."""
    chosen: dict[str, dict[str, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for node, database, at, value in rows:
        chosen[database][node].append((at, value * scale))
    return [Series(label=database, points=max(nodes.values(), key=len)) for database, nodes in sorted(chosen.items())]


def _rates(rows: list[tuple[str, str, str, float]]) -> dict[str, list[tuple[str, float]]]:
    """node -> (time, per second) between consecutive samples of counters summed over databases; a reset counts
    from zero."""
    summed = _summed(rows)
    found: dict[str, list[tuple[str, float]]] = {}
    for series in summed:
        points = [Point(at=at, value=value) for at, value in series.points]
        found[series.label] = [(b.at, increase([a, b]).per_second or 0.0) for a, b in zip(points, points[1:])]
    return found


def _tps(store: Store, pair: str, since: str, database: str | None) -> list[Series]:
    rows = [r for metric in COUNTERS_FOR_TPS for r in _points(store, pair, metric, since, database)]
    return [Series(label=node, points=points) for node, points in sorted(_rates(rows).items()) if points]


def _cache_hit(store: Store, pair: str, since: str, database: str | None) -> list[Series]:
    hits = _rates(_points(store, pair, "pg_stat_database_blks_hit", since, database))
    reads = _rates(_points(store, pair, "pg_stat_database_blks_read", since, database))
    found = []
    for node, points in sorted(hits.items()):
        read = dict(reads.get(node, []))
        ratio = [(at, 100.0 * hit / (hit + read.get(at, 0.0))) for at, hit in points if hit + read.get(at, 0.0) > 0]
        if ratio:
            found.append(Series(label=node, points=ratio))
    return found


def _databases(sizes: list[tuple[str, str, str, float]]) -> list[DatabaseRow]:
    rows = []
    for series in _by_database(sizes, 1.0):
        first, last = series.points[0][1], series.points[-1][1]
        rows.append(DatabaseRow(database=series.label, size_bytes=last, growth_bytes=last - first))
    return sorted(rows, key=lambda r: (-r.size_bytes, r.database))


# ---------------------------------------------------------------- rendering

def render_json(report: Report) -> str:
    return report.model_dump_json(indent=2) + "\n"


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _short(query: str, limit: int = 160) -> str:
    return query if len(query) <= limit else query[:limit - 1] + "…"


def _markdown_code(text: str) -> str:
    """Text as inline code inside a table cell: backticks and pipes would end the span or the cell."""
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(report: Report) -> str:
    lines = [f"# PostgreSQL report, {report.since[:16]} to {report.until[:16]} UTC", ""]
    for pair in report.pairs:
        state = "healthy" if pair.healthy else "not looked at by the agent yet" if pair.healthy is None else "degraded"
        lines += [f"## Pair {pair.pair}: {state}", ""]
        if pair.checks:
            lines += ["| check | status | where | measured | remedy |", "|---|---|---|---|---|"]
            lines += [f"| {c.name} | {c.status} | {' '.join(x for x in (c.node, c.database) if x)} | {c.value} | "
                      f"{c.remedy} |" for c in pair.checks]
            lines.append("")
        if not pair.samples:
            lines += ["No samples in this period: is `pgaasctl agent` running?", ""]
        for chart in pair.charts:
            summary = "; ".join(f"{s.label}: last {s.points[-1][1]:.1f}, max {max(v for _, v in s.points):.1f}"
                                for s in chart.series if s.points)
            lines.append(f"- {chart.title} ({chart.unit}): {summary or 'no data'}")
        lines.append("")
        if pair.databases:
            lines += ["| database | size | growth over the period |", "|---|---|---|"]
            lines += [f"| {d.database} | {_size(d.size_bytes)} | {_size(d.growth_bytes)} |" for d in pair.databases]
            lines.append("")
        if pair.statements:
            lines += ["| statement | database | calls | total time | mean |", "|---|---|---|---|---|"]
            lines += [f"| {_markdown_code(_short(s.query))} | {s.database} | {s.calls:.0f} | {s.seconds:.2f} s | "
                      f"{s.mean_ms:.2f} ms |" for s in pair.statements]
            lines.append("")
        lines += ["Events:", ""] + ([f"- {e.at[:19]} {e.kind}{' ' + e.node if e.node else ''}: {e.detail}"
                                    for e in pair.events] or ["- none in this period"]) + [""]
    return "\n".join(lines)


def _chart_svg(chart: Chart) -> str:
    """The chart as inline SVG, drawn by matplotlib (text kept as text, so it scales and prints)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    figure, axes = plt.subplots(figsize=(8, 2.6), dpi=100)
    for series in chart.series:
        if series.points:
            moments = [dt.datetime.fromisoformat(at) for at, _ in series.points]
            axes.plot(moments, [v for _, v in series.points], label=series.label, linewidth=1.6)
    axes.set_title(chart.title, loc="left", fontsize=11)
    axes.set_ylabel(chart.unit, fontsize=9)
    axes.grid(True, alpha=0.3)
    if any(s.points for s in chart.series):
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
        axes.legend(fontsize=8, loc="upper left", frameon=False)
    else:  # no dates on the axis: a date formatter there fails when the figure is laid out
        axes.text(0.5, 0.5, "no data in this period", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2327; margin: 0 auto; padding: 1rem; max-width: 960px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ccd; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
.ok { color: #1a7f37; } .warn { color: #9a6700; font-weight: 600; } .critical { color: #cf222e; font-weight: 700; }
figure { margin: .5rem 0 1rem; } figure svg { width: 100%; height: auto; }
.note { color: #57606a; }
@media (max-width: 600px) { body { font-size: 14px; padding: .5rem; } td, th { padding: .2rem; } }
@media print { body { max-width: none; } h2 { break-before: auto; } figure, table { break-inside: avoid; } }
"""


def render_html(report: Report) -> str:
    e = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>PostgreSQL report {e(report.since[:10])} to {e(report.until[:10])}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>PostgreSQL report, {e(report.since[:16])} to {e(report.until[:16])} UTC</h1>",
             f'<p class="note">Made by pgaasctl at {e(report.generated_at[:19])} UTC from the agent\'s history.</p>']
    for pair in report.pairs:
        state = ("healthy", "ok") if pair.healthy else ("not looked at by the agent yet", "warn") \
            if pair.healthy is None else ("degraded", "critical")
        parts.append(f'<h2>Pair {e(pair.pair)}: <span class="{state[1]}">{state[0]}</span></h2>')
        if pair.checks:
            parts.append("<table><tr><th>check</th><th>status</th><th>where</th><th>measured</th><th>remedy</th></tr>")
            parts += [f'<tr><td>{e(c.name)}</td><td class="{c.status}">{c.status}</td>'
                      f"<td>{e(' '.join(x for x in (c.node, c.database) if x))}</td><td>{e(c.value)}</td>"
                      f"<td>{e(c.remedy)}</td></tr>" for c in pair.checks]
            parts.append("</table>")
        if not pair.samples:
            parts.append('<p class="note">No samples in this period: is <code>pgaasctl agent</code> running?</p>')
        parts += [f"<figure>{_chart_svg(chart)}</figure>" for chart in pair.charts]
        if pair.databases:
            parts.append("<table><tr><th>database</th><th>size</th><th>growth over the period</th></tr>")
            parts += [f"<tr><td>{e(d.database)}</td><td>{_size(d.size_bytes)}</td><td>{_size(d.growth_bytes)}</td></tr>"
                      for d in pair.databases]
            parts.append("</table>")
        if pair.statements:
            parts.append("<h3>Top statements</h3>")
            parts.append("<table><tr><th>statement</th><th>database</th><th>calls</th><th>total time</th><th>mean</th></tr>")
            parts += [f"<tr><td><code>{e(_short(s.query))}</code></td><td>{e(s.database)}</td><td>{s.calls:.0f}</td>"
                      f"<td>{s.seconds:.2f} s</td><td>{s.mean_ms:.2f} ms</td></tr>" for s in pair.statements]
            parts.append("</table>")
        parts.append("<h3>Events</h3>")
        if pair.events:
            parts.append("<table><tr><th>at (UTC)</th><th>event</th><th>node</th><th>detail</th></tr>")
            parts += [f"<tr><td>{e(v.at[:19])}</td><td>{e(v.kind)}</td><td>{e(v.node)}</td><td>{e(v.detail)}</td></tr>"
                      for v in pair.events]
            parts.append("</table>")
        else:
            parts.append('<p class="note">None in this period.</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
