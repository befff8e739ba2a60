"""`pgaasctl agent` and `pgaasctl events` against a real local pair: the lookup it writes, a failover it follows,
/metrics and /healthz, a clean stop on SIGTERM, a broken pair that does not stop the round, and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgaasctl.store import open_store
from tests.support.browser import create_database, new_tab, wait_done
from tests.support.local_pair import Lab, LocalPair, no_traceback, wait_until
from tests.support.service import serving

PGAASCTL = str(Path(sys.executable).parent / "pgaasctl")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("agent", slot=2) as lab:
        lab.add_pair("ag", replication="synchronous")
        yield lab


@pytest.fixture
def ag(lab: Lab) -> LocalPair:
    pair = lab.pairs["ag"]
    pair.ensure_healthy()
    return pair


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, parsed by prometheus-client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _lookup(pair: LocalPair) -> dict[str, object] | None:
    store = open_store(pair.ws.store_url, mode="read")
    try:
        found = store.lookup(pair.name)
        return found.model_dump() if found else None
    finally:
        store.close()


def test_one_round_records_each_node_and_the_pair(ag: LocalPair) -> None:
    result = ag.ws.run("agent", str(ag.ws.specs), "--once")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["pairs"], report["errors"]) == (1, 0)
    for node in (ag.primary(), ag.other(ag.primary())):  # --once leaves no session behind (the CLI ran in-process)
        assert ag.value(node, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgaasctl'") == 0
    lookup = _lookup(ag)
    assert lookup is not None and lookup["healthy"] is True and lookup["source"] == "agent"
    primary = ag.primary()
    nodes = {n["name"]: n for n in lookup["nodes"]}  # type: ignore[union-attr]
    assert nodes[primary]["role"] == "primary" and nodes[ag.other(primary)]["role"] == "standby"
    assert all(n["up"] and n["repmgrd"] and n["seen_at"] for n in nodes.values())
    assert nodes[primary]["address"] == f"{ag.address(primary)}:5432"
    assert nodes[ag.other(primary)]["replication"] == "streaming, sync"
    store = open_store(ag.ws.store_url, mode="read")
    try:  # the first round samples every node's metrics into the history
        sizes = store.samples("ag", "pg_database_size_bytes")
        max_connections = store.samples("ag", "pg_settings_max_connections")
    finally:
        store.close()
    assert {(s.node, s.database) for s in sizes} >= {(primary, "postgres"), (ag.other(primary), "postgres")}
    assert {s.value for s in max_connections} == {float(ag.value(primary, "SHOW max_connections"))}
    shown = ag.ws.status()  # the worst health check the agent recorded, without touching a node for it
    assert "health: ok (every check, as the agent saw at " in shown.flat, shown.output
    [entry] = ag.ws.status_json()
    assert entry["health"]["status"] == "ok" and entry["health_checked_at"] == lookup["checked_at"]


def test_a_broken_pair_does_not_stop_the_round_for_the_others(ag: LocalPair) -> None:
    ag.ws.write("pair-gone.yaml", "kind: Pair\nmetadata: {name: gone}\nspec:\n  provider: existing\n"
                "  deletion_protection: false\n  nodes:\n    - {name: gone-a, host: 127.0.0.1, port: 9, "
                "admin_user: postgres, admin_password: {env: PGAASCTL_TEST_NOWHERE}, connect_timeout: 2}\n")
    os.environ["PGAASCTL_TEST_NOWHERE"] = "x"
    try:
        result = ag.ws.run("agent", str(ag.ws.specs), "--once")
    finally:
        os.environ.pop("PGAASCTL_TEST_NOWHERE")
        ag.ws.remove("pair-gone.yaml")
    assert result.exit_code == 1, result.output  # a pair could not be read: said by the exit code
    report = json.loads(result.stdout)
    assert (report["pairs"], report["errors"]) == (2, 1)
    store = open_store(ag.ws.store_url, mode="read")
    try:
        gone, good = store.lookup("gone"), store.lookup("ag")
    finally:
        store.close()
    assert gone is not None and not gone.healthy and gone.error
    assert good is not None and good.healthy and good.primary == ag.primary()


def test_the_agent_follows_a_failover_serves_metrics_and_stops_cleanly(ag: LocalPair) -> None:
    old = ag.primary()
    new = ag.other(old)
    listen = f"127.0.0.1:{_free_port()}"
    agent = subprocess.Popen([PGAASCTL, "agent", str(ag.ws.specs), "--interval", "1s", "--listen", listen],
                             env={**os.environ, "PGAASCTL_STORE": ag.ws.store_url}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _get(f"http://{listen}/healthz")[0] == 200, 30, "the agent's first round")
        status, page = _get(f"http://{listen}/metrics")
        assert status == 200
        samples = _samples(page)
        assert samples[("pg_up", (("node", old), ("pair", "ag")))] == 1.0
        assert samples[("pg_up", (("node", new), ("pair", "ag")))] == 1.0
        assert samples[("pgaas_node_role", (("node", old), ("pair", "ag"), ("role", "primary")))] == 1.0
        assert samples[("pgaas_pair_degraded", (("pair", "ag"),))] == 0.0
        assert ("pg_replication_lag_seconds", (("node", new), ("pair", "ag"))) in samples
        assert samples[("pgaas_agent_rounds_total", ())] >= 1
        commits = samples[("pg_stat_database_xact_commit", (("datname", "postgres"), ("node", old), ("pair", "ag")))]
        assert commits > 0
        assert samples[("pg_settings_max_connections", (("node", new), ("pair", "ag")))] > 0
        assert ("pg_replication_lag_bytes", (("application_name", new), ("node", old), ("pair", "ag"))) in samples

        ag.kill_postmaster(old)
        killed = time.monotonic()
        wait_until(lambda: (_lookup(ag) or {}).get("nodes") and
                   {n["name"]: n["role"] for n in _lookup(ag)["nodes"]}.get(new) == "primary",  # type: ignore[index]
                   60, f"the lookup to show {new} as the primary")
        followed = time.monotonic() - killed
        assert followed < 30, f"the lookup followed the failover after {followed:.1f}s"
        events = ag.ws.run("events", str(ag.ws.specs), "--pair", "ag", "--json")
        assert events.exit_code == 0, events.output
        kinds = [(e["kind"], e["node"]) for e in json.loads(events.stdout)]
        assert ("failover", new) in kinds and ("node down", old) in kinds and ("degraded", "") in kinds
        wait_until(lambda: _samples(_get(f"http://{listen}/metrics")[1]).get(
            ("pgaas_failovers_total", (("pair", "ag"),))) == 1.0, 10, "the failover counted in /metrics")
        shown = ag.ws.run("events", "ag")
        assert shown.exit_code == 0 and "failover" in shown.stdout and f"{new} is the primary (was {old})" in shown.flat
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            _, stderr = agent.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            raise
    assert agent.returncode == 0, stderr
    assert "pgaasctl agent: stopped." in stderr and "Traceback" not in stderr
    assert _get(f"http://{listen}/healthz")[0] == 0  # the listener went with it


def test_bad_input_is_named(ag: LocalPair) -> None:
    for args, said in [
        (["agent", str(ag.ws.specs), "--interval", "0s"], "--interval: '0s' is not a duration"),
        (["agent", str(ag.ws.specs), "--interval", "soon"], "--interval: 'soon' is not a duration"),
        (["agent", str(ag.ws.specs), "--listen", "nowhere"], "--listen: 'nowhere' is not ADDR:PORT"),
        (["events", str(ag.ws.specs), "--since", "5 parsecs"], "--since: '5 parsecs' is not a duration"),
        (["events", "nosuchpair"], "pair 'nosuchpair' is not declared"),
    ]:
        result = ag.ws.run(*args)
        assert result.exit_code == 1, (args, result.output)
        no_traceback(result)
        assert said in result.flat, (args, result.output)


def test_a_listen_address_in_use_is_refused(ag: LocalPair) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ag.ws.run("agent", str(ag.ws.specs), "--listen", f"127.0.0.1:{port}")
    assert result.exit_code == 1, result.output
    assert "cannot listen there" in result.flat


def test_no_events_says_who_records_them(tmp_path: Path, ag: LocalPair) -> None:
    result = ag.ws.run("events", str(ag.ws.specs), "--since", "1ms")
    assert result.exit_code == 0, result.output
    assert "No events" in result.stdout and "pgaasctl agent" in result.stdout


def _post(url: str, form: dict[str, str], token: str) -> int:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_pushes_from_the_nodes_move_the_lookup_at_once_and_forged_ones_move_nothing(ag: LocalPair) -> None:
    port = _free_port()
    workspace_doc = ag.ws.specs / "00-workspace.yaml"
    spec = json.loads(workspace_doc.read_text().split("spec: ", 1)[1])
    ag.ws.write("00-workspace.yaml", "kind: Workspace\nspec: " + json.dumps(
        {**spec, "monitoring": {"agent_url": f"http://127.0.0.1:{port}"}}) + "\n")
    plan = ag.ws.plan()
    assert "rewrite repmgr.conf" in plan.flat, plan.output  # the nodes learn where to push
    ag.ws.must_apply()
    old = ag.primary()
    new = ag.other(old)
    conf = (ag.etc(new) / "repmgr.conf").read_text()
    assert "event_notification_command=" in conf and "event.sh" in conf
    header = ag.etc(new) / ".push-header"
    assert header.stat().st_mode & 0o777 == 0o600
    token = header.read_text().split("Bearer ", 1)[1].strip()
    assert token not in conf and token not in (ag.etc(new) / "event.sh").read_text()

    agent = subprocess.Popen([PGAASCTL, "agent", str(ag.ws.specs), "--interval", "10m", "--listen", f"127.0.0.1:{port}"],
                             env={**os.environ, "PGAASCTL_STORE": ag.ws.store_url}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    push_url = f"http://127.0.0.1:{port}/push"
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, "the agent's first round")
        # forged: a wrong token is refused; the right token with a false claim moves nothing
        assert _post(push_url, {"pair": "ag", "node_id": "2", "event": "standby_promote", "successful": "1"},
                     "0" * 64) == 403
        assert _post(push_url, {"pair": "ag", "node_id": "2", "event": "standby_promote", "successful": "1"},
                     token) == 202
        wait_until(lambda: _samples(_get(f"http://127.0.0.1:{port}/metrics")[1]).get(
            ("pgaas_agent_rounds_total", ())) == 2.0, 10, "the round the push asked for")
        assert (_lookup(ag) or {}).get("nodes") and {n["name"]: n["role"] for n in _lookup(ag)["nodes"]}[old] == "primary"  # type: ignore[index]

        ag.kill_postmaster(old)
        ag.wait_primary(new)
        promoted = time.monotonic()
        wait_until(lambda: {n["name"]: n["role"] for n in _lookup(ag)["nodes"]}.get(new) == "primary",  # type: ignore[index]
                   20, "the push to move the lookup (the next round is 10 minutes away)", interval=0.02)
        followed = time.monotonic() - promoted
        assert followed < 5, f"the lookup followed {followed:.2f}s after the promotion"
        pushes = _samples(_get(f"http://127.0.0.1:{port}/metrics")[1])
        assert pushes[("pgaas_agent_pushes_total", (("result", "refused"),))] == 1.0
        assert pushes[("pgaas_agent_pushes_total", (("result", "accepted"),))] >= 2.0
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr
    assert token not in stderr


def test_apply_records_what_it_saw_into_the_lookup_and_plan_does_not(ag: LocalPair) -> None:
    store = open_store(ag.ws.store_url)
    try:
        store.forget_lookup("ag")
    finally:
        store.close()
    assert ag.ws.plan().exit_code == 0 and _lookup(ag) is None  # a reading command keeps nothing
    ag.ws.must_apply()
    lookup = _lookup(ag)
    assert lookup is not None and lookup["source"] == "apply"
    roles = {n["name"]: (n["role"], n["up"]) for n in lookup["nodes"]}  # type: ignore[union-attr]
    assert roles == {ag.primary(): ("primary", True), ag.other(ag.primary()): ("standby", True)}


def test_the_agent_rolls_old_samples_up_and_prunes_what_is_past_retention(ag: LocalPair) -> None:
    import datetime as dt

    from pgaasctl.monitor.metrics import Sample
    from pgaasctl.monitor.models import Event

    now = dt.datetime.now(dt.timezone.utc)
    three_days_ago = (now - dt.timedelta(days=3)).isoformat(timespec="milliseconds")  # raw_retention: 48 h
    half_a_year_ago = (now - dt.timedelta(days=180)).isoformat(timespec="milliseconds")  # rollup_retention: 90 d
    two_years_ago = (now - dt.timedelta(days=730)).isoformat(timespec="milliseconds")  # event_retention: a year
    store = open_store(ag.ws.store_url)
    try:
        for moment in (three_days_ago, half_a_year_ago):
            store.record_samples("ag", "ag-a", moment, [Sample(metric="pg_up", value=1.0)])
        lookup = store.lookup("ag")
        assert lookup is not None
        store.record_lookup(lookup, [Event(at=two_years_ago, pair="ag", node="", kind="healthy", detail="long ago")])
    finally:
        store.close()
    result = ag.ws.run("agent", str(ag.ws.specs), "--once")
    assert result.exit_code == 0, result.output
    store = open_store(ag.ws.store_url, mode="read")
    try:
        assert store.samples("ag", "pg_up", until=(now - dt.timedelta(days=2)).isoformat()) == []  # rolled up
        assert [h.hour for h in store.hourly("ag", "pg_up")] == [three_days_ago[:13]]  # half a year ago: pruned
        assert all(e.detail != "long ago" for e in store.events("ag"))
    finally:
        store.close()


CHART_BLUE = (31, 119, 180)  # matplotlib's first line colour


def test_a_report_in_html_markdown_and_json_with_its_charts_drawn(ag: LocalPair, tmp_path: Path) -> None:
    from PIL import Image

    primary = ag.primary()
    ag.execute(primary, "CREATE TABLE IF NOT EXISTS report_probe (n int)")
    for round_number in range(3):  # three samples apart, with writes between them
        ag.execute(primary, f"INSERT INTO report_probe SELECT g FROM generate_series(1, {1000 * (round_number + 1)}) g")
        result = ag.ws.run("agent", str(ag.ws.specs), "--once")
        assert result.exit_code == 0, result.output
    page = tmp_path / "report.html"
    made = ag.ws.run("report", str(ag.ws.specs), "--format", "html", "--out", str(page))
    assert made.exit_code == 0, made.output
    text = page.read_text()
    assert text.count("<svg") == 5 and "Pair ag" in text and "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)=["']https?:""", text)  # self-contained: nothing fetched from anywhere
    shot = tmp_path / "report.png"
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by make setup"
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,3000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=60, check=True)
    image = Image.open(shot).convert("RGB")
    drawn = sum(1 for pixel in image.get_flattened_data() if all(abs(a - b) < 24 for a, b in zip(pixel, CHART_BLUE)))
    assert drawn > 500, f"only {drawn} pixels of chart lines in the screenshot"

    markdown = ag.ws.run("report", str(ag.ws.specs), "--format", "markdown", "--pair", "ag")
    assert markdown.exit_code == 0 and "## Pair ag: healthy" in markdown.stdout and "| postgres |" in markdown.stdout
    data = json.loads(ag.ws.run("report", str(ag.ws.specs), "--format", "json").stdout)
    [entry] = data["pairs"]
    assert entry["samples"] > 0 and [c["title"] for c in entry["charts"]] == [
        "Sessions", "Transactions per second", "Cache hit ratio", "Database size", "Replication lag"]
    assert any(s["points"] for s in entry["charts"][1]["series"])  # transactions per second between samples


def test_a_report_names_bad_input_and_says_when_there_is_no_history(ag: LocalPair, tmp_path: Path) -> None:
    for args, said in [
        (["--pair", "nosuch"], "pair 'nosuch' is not declared"),
        (["--database", "nosuch"], "database 'nosuch' has no samples"),
        (["--since", "yesterday"], "--since: 'yesterday' is not a duration"),
        (["--format", "pdf"], "--format: 'pdf' is not a report format"),
        (["--out", str(tmp_path / "missing" / "r.html")], "cannot write it"),
    ]:
        result = ag.ws.run("report", str(ag.ws.specs), *args)
        assert result.exit_code == 1, (args, result.output)
        no_traceback(result)
        assert said in result.flat, (args, result.output)
    empty = ag.ws.run("report", str(ag.ws.specs), "--format", "markdown", "--since", "1ms")
    assert empty.exit_code == 0 and "No samples in this period" in empty.stdout


def test_the_agent_keeps_its_sessions_between_rounds_and_still_sees_a_node_go(ag: LocalPair) -> None:
    from pgaasctl.monitor.agent import Agent

    standby = ag.other(ag.primary())
    agent = Agent(path=ag.ws.specs, store_flag=ag.ws.store_url, interval=1.0)
    try:
        assert agent.round().errors == 0
        opened = agent._keeper.opened
        assert agent.round().errors == 0
        assert agent._keeper.opened == opened and agent._keeper.reused >= opened  # no new session on any node
        kept = ag.value(standby, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgaasctl'")
        assert kept >= 1
        ag.stop_postgres(standby)
        agent.round()
        lookup = _lookup(ag)
        assert lookup is not None and not lookup["healthy"]
        assert {n["name"]: n["up"] for n in lookup["nodes"]}[standby] is False  # type: ignore[index, union-attr]
    finally:
        agent.close()
        ag.ensure_healthy()
    assert ag.value(ag.primary(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgaasctl' "
                    "AND pid <> pg_backend_pid()") == 0  # close() ended them


def test_top_statements_are_sampled_and_reported_without_constants_or_secrets(ag: LocalPair, tmp_path: Path) -> None:
    import psycopg

    ag.rewrite_spec(statements=True)
    applied = ag.ws.apply()
    assert applied.exit_code == 0, applied.output
    assert "pg_stat_statements" in applied.output
    restarted = ag.ws.run("restart", "ag", str(ag.ws.specs), "--pending")
    assert restarted.exit_code == 0, restarted.output + "".join(ag.logs(node) for node in ("ag-a", "ag-b"))
    converged = ag.ws.plan("--detailed-exitcode")
    assert converged.exit_code == 0, converged.output
    primary = ag.primary()
    ag.execute(primary, "CREATE ROLE stmt_app LOGIN PASSWORD 'app-password-123'")
    try:
        with psycopg.connect(host=ag.address(primary), port=5432, user="stmt_app", password="app-password-123",
                             dbname="postgres", autocommit=True) as app:
            app.execute("CREATE TEMP TABLE stmt_probe (n int)")

            def workload() -> None:
                for i in range(50):
                    app.execute("INSERT INTO stmt_probe VALUES (%s)", (i,))
                app.execute("SELECT count(*) FROM generate_series(1, 300000) g WHERE g <> 424242")

            workload()
            assert ag.ws.run("agent", str(ag.ws.specs), "--once").exit_code == 0
            workload()
            app.execute("ALTER ROLE stmt_app PASSWORD 'rotated-secret-991'")
            assert ag.ws.run("agent", str(ag.ws.specs), "--once").exit_code == 0
        out = tmp_path / "report.json"
        made = ag.ws.run("report", str(ag.ws.specs), "--pair", "ag", "--format", "json", "--out", str(out))
        assert made.exit_code == 0, made.output
        [pair] = json.loads(out.read_text())["pairs"]
        statements = {s["query"]: s for s in pair["statements"]}
        insert = statements["INSERT INTO stmt_probe VALUES ($1)"]
        assert (insert["database"], insert["calls"], insert["rows"]) == ("postgres", 50.0, 50.0)
        assert "SELECT count(*) FROM generate_series($1, $2) g WHERE g <> $3" in statements
        assert not any("repmgr" in q for q in statements)  # the machinery's own queries are not the owner's
        assert not any("PASSWORD" in q.upper() for q in statements)
        html = tmp_path / "report.html"
        assert ag.ws.run("report", str(ag.ws.specs), "--pair", "ag", "--out", str(html)).exit_code == 0
        assert "Top statements" in html.read_text() and "INSERT INTO stmt_probe VALUES ($1)" in html.read_text()
        stored = b"".join(p.read_bytes() for p in Path(ag.ws.store_url.removeprefix("sqlite:///")).parent.glob("store.db*"))
        assert b"rotated-secret-991" not in stored and b"app-password-123" not in stored and b"424242" not in stored
    finally:
        ag.execute(primary, "DROP ROLE IF EXISTS stmt_app")


def test_an_admin_switches_a_pair_over_through_the_api(ag: LocalPair) -> None:
    old = ag.primary()
    made = ag.ws.run("user", "create", "ada", "--role", "admin", str(ag.ws.specs))
    assert made.exit_code == 0, made.output
    token = ag.ws.run("token", "create", "--user", "ada", str(ag.ws.specs)).stdout.strip()
    listen = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen([PGAASCTL, "serve", str(ag.ws.specs), "--listen", listen],
                              env={**os.environ, "PGAASCTL_STORE": ag.ws.store_url}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _get(f"http://{listen}/healthz")[0] == 200, 30, "the API server")
        request = urllib.request.Request(f"http://{listen}/v1/pairs/ag/switchover", data=b"", method="POST",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            operation = json.loads(response.read())
        assert response.status == 202 and operation["type"] == "SWITCHOVER"
        request = urllib.request.Request(f"http://{listen}/v1/operations/{operation['id']}?wait=60s",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=90) as response:
            ended = json.loads(response.read())
        assert ended["status"] == "DONE", ended
        assert ended["plan"]["switchover"] == {"old_primary": old, "new_primary": ag.other(old)}
        assert ag.primary() == ag.other(old)
        ag.assert_whole()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def _call(listen: str, method: str, path: str, token: str, body: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{listen}{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = response.read()
            return response.status, json.loads(payload) if payload else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _ended(listen: str, token: str, operation: str, seconds: float = 180) -> dict:  # type: ignore[type-arg]
    """The operation once it ended, long-polled (at most 60 s a call)."""
    deadline = time.monotonic() + seconds
    while True:
        status, found = _call(listen, "GET", f"/v1/operations/{operation}?wait=60s", token)
        assert status == 200, found
        if found["status"] in ("DONE", "FAILED") or time.monotonic() > deadline:
            return found


def test_an_admin_creates_changes_and_deletes_a_pair_through_the_api(ag: LocalPair) -> None:
    assert ag.ws.run("user", "create", "pat", "--role", "admin", str(ag.ws.specs)).exit_code == 0
    token = ag.ws.run("token", "create", "--user", "pat", str(ag.ws.specs)).stdout.strip()
    listen = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen([PGAASCTL, "serve", str(ag.ws.specs), "--listen", listen, "--interval", "1s"],
                              env={**os.environ, "PGAASCTL_STORE": ag.ws.store_url}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    document = ag.ws.specs / "api" / "ap" / "pair-ap.yaml"
    try:
        wait_until(lambda: _get(f"http://{listen}/healthz")[0] == 200, 30, "the API server")
        spec = {"provider": "local", "nodes": [{"name": "ap-a"}], "deletion_protection": False}
        status, operation = _call(listen, "POST", "/v1/pairs", token, {"name": "ap", "spec": spec})
        assert status == 202, operation
        status, ended = _call(listen, "GET", f"/v1/operations/{operation['id']}?wait=60s", token)
        assert ended["status"] == "DONE", ended
        assert "kind: Pair" in document.read_text()
        wait_until(lambda: _call(listen, "GET", "/v1/pairs/ap", token)[1].get("primary") == "ap-a", 30,
                   "the agent to see the new pair's primary")

        two = {"nodes": [{"name": "ap-a"}, {"name": "ap-b"}], "replication": "synchronous"}
        status, plan = _call(listen, "PATCH", "/v1/pairs/ap?dry_run=true", token, two)
        assert status == 200, plan
        kinds = {(o["kind"], o["node"]) for p in plan["pairs"] for o in p["operations"]}
        assert ("clone_standby", "ap-b") in kinds, plan
        status, operation = _call(listen, "PATCH", "/v1/pairs/ap", token, two)
        assert status == 202, operation
        ended = _ended(listen, token, operation["id"])
        assert ended["status"] == "DONE", ended
        wait_until(lambda: {(n["name"], n["role"]) for n in _call(listen, "GET", "/v1/pairs/ap", token)[1]["nodes"]}
                   == {("ap-a", "primary"), ("ap-b", "standby")}, 30, "the agent to see the new standby")
        before = document.read_text()
        status, refused = _call(listen, "PATCH", "/v1/pairs/ap?dry_run=true", token, {"nodes": [{"name": "ap-b"}]})
        assert status == 400 and "is the primary, but the spec no longer declares it. Put it back" in \
            refused["error"]["message"], refused
        status, operation = _call(listen, "PATCH", "/v1/pairs/ap", token, {"nodes": [{"name": "ap-b"}]})
        assert status == 202, operation
        failed = _ended(listen, token, operation["id"])
        assert failed["status"] == "FAILED" and "switchover ap --to ap-b" in failed["error"]["message"], failed
        assert document.read_text() == before  # a change the planner refuses is not left in the specs
        assert ag.ws.run("plan", str(ag.ws.specs), "--target", "pair.ap").exit_code == 0
        status, refused = _call(listen, "PATCH", "/v1/pairs/ap", token, {"nodes": [{"name": "ap-a", "bogus": 1}]})
        assert status == 422 and refused["error"]["field"] == "nodes.0.bogus", refused

        status, plan = _call(listen, "PATCH", "/v1/pairs/ap?dry_run=true", token,
                             {"settings": {"work_mem": "8MB", "max_connections": 150}})
        assert status == 200, plan
        notes = {a["name"]: a.get("note") for p in plan["pairs"] for c in p["changes"] for a in c["attributes"]}
        assert notes["work_mem"] == "reload" and notes["max_connections"] == "restart required"
        status, operation = _call(listen, "PATCH", "/v1/pairs/ap", token, {"settings": {"work_mem": "8MB"}})
        assert status == 202, operation
        assert _call(listen, "GET", f"/v1/operations/{operation['id']}?wait=60s", token)[1]["status"] == "DONE"
        address = ag.ws.run("connection", "ap", str(ag.ws.specs)).stdout
        assert "ap" in ag.ws.run("status", str(ag.ws.specs)).stdout and address

        status, operation = _call(listen, "DELETE", "/v1/pairs/ap", token)
        assert status == 202, operation
        status, ended = _call(listen, "GET", f"/v1/operations/{operation['id']}?wait=60s", token)
        assert ended["status"] == "DONE", ended
        assert not document.exists()
        assert _call(listen, "GET", "/v1/pairs/ap", token)[0] == 404
        assert not (ag.lab.local_dir / "ap").exists() or not any((ag.lab.local_dir / "ap").iterdir())  # nodes gone
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
        if document.exists():  # the test failed half-way: take the pair down, or the lab's other tests see it
            text = document.read_text().replace("deletion_protection: true", "deletion_protection: false")
            document.write_text(text)
            ag.ws.run("destroy", str(ag.ws.specs), "--target", "pair.ap", "--auto-approve")
            document.unlink()


def test_an_operation_caught_by_a_failover_finishes_on_the_new_primary(ag: LocalPair) -> None:
    old = ag.primary()
    new = ag.other(old)
    assert ag.ws.run("user", "create", "fay", "--role", "admin", str(ag.ws.specs)).exit_code == 0
    token = ag.ws.run("token", "create", "--user", "fay", str(ag.ws.specs)).stdout.strip()
    listen = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen([PGAASCTL, "serve", str(ag.ws.specs), "--listen", listen],
                              env={**os.environ, "PGAASCTL_STORE": ag.ws.store_url}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    store = open_store(ag.ws.store_url)
    try:
        wait_until(lambda: _get(f"http://{listen}/healthz")[0] == 200, 30, "the API server")
        with store.locked("ag", "apply", timeout=5):  # the operation waits for the pair while its primary fails
            status, operation = _call(listen, "POST", "/v1/pairs/ag/databases", token, {"name": "during_failover"})
            assert status == 202, operation
            wait_until(lambda: _call(listen, "GET", f"/v1/operations/{operation['id']}", token)[1]["status"]
                       == "RUNNING", 10, "the operation to wait for the pair")
            ag.kill_postmaster(old)
            ag.wait_promoted(new)
        status, ended = _call(listen, "GET", f"/v1/operations/{operation['id']}?wait=60s", token)
        assert ended["status"] in ("DONE", "FAILED"), ended
        if ended["status"] == "DONE":  # it planned after the failover: the database is on the new primary
            assert ag.value(new, "SELECT count(*) FROM pg_database WHERE datname = 'during_failover'") == 1
        else:  # or it says why, and nothing is half-done: the next apply makes it
            assert ended["error"]["message"]
            assert ag.ws.apply().exit_code == 0
            assert ag.value(new, "SELECT count(*) FROM pg_database WHERE datname = 'during_failover'") == 1
    finally:
        store.close()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def test_the_console_makes_a_database_on_both_nodes_and_shows_a_failover_without_a_reload(
        ag: LocalPair, browser: Any) -> None:
    ag.ws.write(ag.spec_file, ag.spec_text().replace("metadata: {name: ag}",
                                                     "metadata: {name: ag, labels: {pgaas.members: '*'}}"))
    made = ag.ws.run("user", "create", "mona", "--role", "member", str(ag.ws.specs))
    assert made.exit_code == 0, made.output
    password = made.stdout.strip()
    with serving(ag.ws.specs, "--interval", "1s", env={**os.environ, "PGAASCTL_STORE": ag.ws.store_url}) as console:
        tab = new_tab(browser, console.base)
        try:
            tab.sign_in("mona", password)
            create_database(tab, "ag", "console_db")
            tab.follow(tab.page.get_by_role("button", name="Apply"))
            assert wait_done(tab) == "done"
            primary = ag.primary()
            standby = ag.other(primary)
            exists = "SELECT count(*) FROM pg_database WHERE datname = 'console_db'"
            assert ag.value(primary, exists) == 1
            wait_until(lambda: ag.value(standby, exists) == 1, 10, "the standby to replay the new database")

            tab.open("/pairs/ag/databases/console_db")
            tab.page.get_by_label("Type console_db to confirm").fill("console_db")
            tab.follow(tab.page.get_by_role("button", name="Preview the deletion"))
            tab.follow(tab.page.get_by_role("button", name="Delete console_db now"))
            assert wait_done(tab) == "done"
            assert ag.value(primary, exists) == 0

            tab.open("/pairs/ag")
            assert tab.page.locator("#primary").inner_text() == primary
            ag.kill_postmaster(primary)
            tab.page.locator("#primary").filter(has_text=standby).wait_for(timeout=60_000)  # no reload: htmx polls
            assert tab.errors == [] and tab.foreign_requests() == []
        finally:
            tab.close()
