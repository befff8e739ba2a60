"""`pgaasctl serve` as a real process (uvicorn on loopback) over a workspace with a pair on the test server:
OpenAPI and Swagger UI, 401 without credentials, tokens that stop at once when revoked or their user disabled, the
pairs read from the lookup the in-process agent keeps, one error shape, /metrics, a clean stop on SIGTERM."""

from __future__ import annotations

import http.client as http_client
import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.local_pair import wait_until
from tests.support.service import Reply, Server, serving
from tests.support.workspace import Workspace

def _secret(ws: Workspace, *args: str) -> str:
    result = ws.run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.fixture
def tokens(ws: Workspace) -> dict[str, str]:
    pair = ws.specs / "pair-main.yaml"
    pair.write_text(pair.read_text().replace("metadata: {name: main}", "metadata: {name: main, labels: {pgaas.members: max}}"))
    applied = ws.run("apply", str(ws.specs), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    made = {}
    for name, role in (("ada", "admin"), ("max", "member"), ("vic", "viewer")):
        _secret(ws, "user", "create", name, "--role", role, str(ws.specs))
        made[role] = _secret(ws, "token", "create", "--user", name, str(ws.specs))
    return made


@pytest.fixture
def server(ws: Workspace, tokens: dict[str, str]) -> Iterator[Server]:
    with serving(ws.specs, "--interval", "1s") as running:
        yield running


def _error(reply: Reply, status: int, reason: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert (error["code"], error["reason"]) == (status, reason) and error["message"]
    return error  # type: ignore[no-any-return]


def test_openapi_and_swagger_ui_are_served(server: Server) -> None:
    spec = server.get("/openapi.json")
    assert spec.status == 200 and "/v1/pairs" in spec.json()["paths"]
    docs = server.get("/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()


def test_the_api_refuses_callers_without_a_usable_token(server: Server, tokens: dict[str, str]) -> None:
    refused = server.get("/v1/pairs")
    _error(refused, 401, "unauthenticated")
    assert refused.headers.get("www-authenticate", refused.headers.get("WWW-Authenticate")) == "Bearer"
    for token in ("nonsense", tokens["admin"][:-2] + "xx", "pgaas_" + "0" * 16 + "_" + "a" * 43):
        _error(server.get("/v1/pairs", token), 401, "unauthenticated")


def test_every_role_reads_the_pairs_from_the_lookup(server: Server, tokens: dict[str, str]) -> None:
    for role in ("admin", "member", "viewer"):
        reply = server.get("/v1/pairs", tokens[role])
        assert reply.status == 200, reply.body
        assert [p["name"] for p in reply.json()["items"]] == ["main"]
    wait_until(lambda: server.get("/v1/pairs/main", tokens["viewer"]).json()["checked_at"] is not None, 30,
               "the agent's first look at the pair")
    pair = server.get("/v1/pairs/main", tokens["viewer"])
    assert pair.status == 200 and pair.headers.get("etag", pair.headers.get("ETag"))
    detail = pair.json()
    assert detail["provider"] == "existing" and detail["primary"] == "main-a"
    assert [(n["name"], n["role"], n["up"]) for n in detail["nodes"]] == [("main-a", "primary", True)]
    connection = server.get("/v1/pairs/main/connection", tokens["member"]).json()
    assert connection["uri"].startswith("postgresql://") and "password" not in connection["uri"].lower()


def test_one_error_shape_for_what_is_not_there_or_not_valid(server: Server, tokens: dict[str, str]) -> None:
    _error(server.get("/v1/pairs/nope", tokens["admin"]), 404, "not_found")
    _error(server.get("/v1/no/such/path", tokens["admin"]), 404, "not_found")
    invalid = _error(server.get("/v1/pairs?page_size=0", tokens["admin"]), 422, "invalid")
    assert invalid["field"] == "page_size"
    _error(server.get("/v1/pairs?page_token=zzz", tokens["admin"]), 422, "invalid")


def test_a_revoked_token_and_a_disabled_user_stop_at_once(ws: Workspace, server: Server,
                                                         tokens: dict[str, str]) -> None:
    listed = ws.run("token", "list", str(ws.specs), "--json")
    viewer_token = next(t["id"] for t in json.loads(listed.stdout) if t["user"] == "vic")
    assert ws.run("token", "revoke", viewer_token, str(ws.specs)).exit_code == 0
    _error(server.get("/v1/pairs", tokens["viewer"]), 401, "unauthenticated")
    assert server.get("/v1/pairs", tokens["member"]).status == 200
    assert ws.run("user", "disable", "max", str(ws.specs)).exit_code == 0
    _error(server.get("/v1/pairs", tokens["member"]), 401, "unauthenticated")


def test_metrics_and_a_clean_stop_with_no_secret_in_the_output(server: Server, tokens: dict[str, str]) -> None:
    wait_until(lambda: b"pg_up{" in server.get("/metrics").body, 30, "the agent's samples in /metrics")
    server.process.send_signal(signal.SIGTERM)
    stdout, stderr = server.process.communicate(timeout=30)
    assert server.process.returncode == 0, stderr
    assert "pgaasctl serve: stopped." in stderr and "Traceback" not in stderr
    for token in tokens.values():
        assert token not in stdout + stderr


def test_a_port_in_use_is_refused_clearly(ws: Workspace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ws.run("serve", str(ws.specs), "--listen", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.output


def _done(server: Server, token: str, operation: dict[str, Any]) -> dict[str, Any]:
    reply = server.get(f"/v1/operations/{operation['id']}?wait=30s", token)
    assert reply.status == 200, reply.body
    ended = reply.json()
    assert ended["status"] in ("DONE", "FAILED"), ended
    return ended  # type: ignore[no-any-return]


def test_a_member_creates_a_database_on_an_open_pair_and_deletes_it(ws: Workspace, server: Server,
                                                                   tokens: dict[str, str]) -> None:
    member, admin, viewer = tokens["member"], tokens["admin"], tokens["viewer"]
    dry = server.call("POST", "/v1/pairs/main/databases?dry_run=true", member, {"name": "shop", "connection_limit": 5})
    assert dry.status == 200, dry.body
    assert [c["address"] for p in dry.json()["pairs"] for c in p["changes"]] == ["database.main.shop"]
    assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'") == []  # a dry run changes nothing
    assert not (ws.specs / "api").exists()

    started = server.call("POST", "/v1/pairs/main/databases", member, {"name": "shop", "connection_limit": 5})
    assert started.status == 202, started.body
    assert started.json()["status"] in ("PENDING", "RUNNING", "DONE") and started.json()["user"] == "max"
    ended = _done(server, member, started.json())
    assert ended["status"] == "DONE", ended
    assert ws.server.execute("SELECT datconnlimit FROM pg_database WHERE datname = 'shop'") == [(5,)]
    document = ws.specs / "api" / "main" / "database-shop.yaml"
    assert "pgaas.owner: max" in document.read_text()
    assert ws.run("plan", str(ws.specs), "--detailed-exitcode").exit_code == 0  # the specs say what the server has

    mine = server.get("/v1/pairs/main/databases", member).json()["items"]
    assert [(d["name"], d["owner_user"], d["managed_by"]) for d in mine] == [("shop", "max", "api")]
    assert server.get("/v1/pairs/main/databases/shop", viewer).status == 200
    _error(server.call("DELETE", "/v1/pairs/main/databases/shop", viewer), 403, "forbidden")
    _error(server.call("POST", "/v1/pairs/main/databases", viewer, {"name": "nope"}), 403, "forbidden")
    _error(server.call("POST", "/v1/pairs/main/databases", member, {"name": "shop"}), 409, "already_exists")

    gone = server.call("DELETE", "/v1/pairs/main/databases/shop", member)
    assert gone.status == 202, gone.body
    assert _done(server, member, gone.json())["status"] == "DONE"
    assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'") == []
    assert not document.exists()
    assert server.call("DELETE", "/v1/pairs/main/databases/shop", member).status == 204  # already gone: fine
    assert [op["type"] for op in server.get("/v1/operations", admin).json()["items"]] == [
        "DELETE_DATABASE", "CREATE_DATABASE"]


def test_bad_database_requests_are_named_and_change_nothing(ws: Workspace, server: Server,
                                                            tokens: dict[str, str]) -> None:
    admin = tokens["admin"]
    for body, field in ([{"name": "Bad Name!"}, "name"], [{"name": "x", "colour": "red"}, "colour"],
                        [{"name": "x", "connection_limit": -5}, "connection_limit"], [{}, "name"]):
        refused = _error(server.call("POST", "/v1/pairs/main/databases", admin, body), 422, "invalid")
        assert refused["field"] == field, refused
    missing_owner = server.call("POST", "/v1/pairs/main/databases", admin, {"name": "x", "owner": "nobody"})
    assert _error(missing_owner, 422, "invalid")["message"]
    _error(server.call("POST", "/v1/pairs/nope/databases", admin, {"name": "x"}), 404, "not_found")
    _error(server.call("POST", "/v1/pairs/main/databases", admin, {"name": "x", "adopt": True, "owner": "ghost"}),
           422, "invalid")
    assert not (ws.specs / "api").exists()


def test_a_database_declared_by_hand_is_not_the_apis_to_delete(ws: Workspace, server: Server,
                                                               tokens: dict[str, str]) -> None:
    ws.write("db.yaml", "kind: Database\nmetadata: {name: ledger, pair: main}\n")
    refused = _error(server.call("DELETE", "/v1/pairs/main/databases/ledger", tokens["admin"]), 409, "declared_by_hand")
    assert "db.yaml:1" in refused["message"]
    view = server.get("/v1/pairs/main/databases/ledger", tokens["admin"]).json()
    assert view["managed_by"] == "specs" and view["declared_in"].endswith("db.yaml:1")
    _error(server.get("/v1/pairs/main/databases/ledger", tokens["member"]), 403, "forbidden")


def _git(where: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, check=True).stdout


def test_applied_changes_are_git_commits_and_a_hand_edit_shows_through_the_api(ws: Workspace, server: Server,
                                                                              tokens: dict[str, str]) -> None:
    _git(ws.specs, "init", "-q")
    _git(ws.specs, "-c", "user.name=dba", "-c", "user.email=dba@example.com", "add", "-A")
    _git(ws.specs, "-c", "user.name=dba", "-c", "user.email=dba@example.com", "commit", "-q", "-m", "the pair")
    started = server.call("POST", "/v1/pairs/main/databases", tokens["member"], {"name": "audit"}).json()
    assert _done(server, tokens["member"], started)["status"] == "DONE"
    author, subject = _git(ws.specs, "log", "-1", "--format=%an <%ae>%n%s").splitlines()
    assert author == "max <max@pgaasctl>" and started["id"] in subject and "database.main.audit" in subject
    assert _git(ws.specs, "status", "--porcelain") == ""  # the document is committed, nothing else is left over
    document = ws.specs / "api" / "main" / "database-audit.yaml"
    document.write_text(document.read_text() + "  connection_limit: 7\n" if "spec: {}" not in document.read_text()
                        else document.read_text().replace("spec: {}", "spec:\n  connection_limit: 7"))
    assert server.get("/v1/pairs/main/databases/audit", tokens["admin"]).json()["spec"]["connection_limit"] == 7


def test_access_is_asked_approved_fetched_once_used_and_revoked(ws: Workspace, server: Server,
                                                                tokens: dict[str, str]) -> None:
    import psycopg

    owner, admin = tokens["member"], tokens["admin"]
    _secret(ws, "user", "create", "mia", "--role", "member", str(ws.specs))
    mia = _secret(ws, "token", "create", "--user", "mia", str(ws.specs))
    made = server.call("POST", "/v1/pairs/main/databases", owner, {"name": "sales"}).json()
    assert _done(server, owner, made)["status"] == "DONE"
    ws.server.execute("CREATE TABLE figures (n int)", dbname="sales")
    ws.server.execute("INSERT INTO figures VALUES (42)", dbname="sales")

    _error(server.get("/v1/pairs/main/databases/sales", mia), 403, "forbidden")  # not hers
    asked = server.call("POST", "/v1/access-requests", mia,
                        {"pair": "main", "database": "sales", "access": "read-only", "reason": "quarterly report"})
    assert asked.status == 201, asked.body
    request_id = asked.json()["id"]
    assert [r["id"] for r in server.get("/v1/access-requests", owner).json()["items"]] == [request_id]  # the owner's
    assert server.get("/v1/access-requests?status=DENIED", owner).json() == {"items": [], "next_page_token": None}
    _error(server.call("POST", f"/v1/access-requests/{request_id}/approve", mia, {"reason": "me"}), 403, "forbidden")
    _error(server.get(f"/v1/access-requests/{request_id}/credentials", mia), 409, "not_granted")

    approved = server.call("POST", f"/v1/access-requests/{request_id}/approve", owner, {"reason": "ok for Q3"})
    assert approved.status == 202, approved.body
    assert _done(server, owner, approved.json())["status"] == "DONE"
    _error(server.get(f"/v1/access-requests/{request_id}/credentials", owner), 403, "forbidden")  # hers alone
    given = server.get(f"/v1/access-requests/{request_id}/credentials", mia)
    assert given.status == 200, given.body
    credentials = given.json()
    _error(server.get(f"/v1/access-requests/{request_id}/credentials", mia), 410, "gone")  # once
    role = credentials["role"]
    with psycopg.connect(host=ws.server.host, port=ws.server.port, user=role, password=credentials["password"],
                         dbname="sales", autocommit=True) as conn:
        assert conn.execute("SELECT n FROM figures").fetchall() == [(42,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO figures VALUES (1)")
    for path in [*ws.specs.rglob("*.yaml"), *ws.specs.rglob("*.yml")]:
        assert credentials["password"] not in path.read_text()  # the specs point at it, never hold it
    _error(server.call("POST", f"/v1/access-requests/{request_id}/approve", admin, {}), 409, "decided")

    revoked = server.call("POST", f"/v1/access-requests/{request_id}/revoke", owner)
    assert revoked.status == 202, revoked.body
    assert _done(server, owner, revoked.json())["status"] == "DONE", server.get(
        f"/v1/operations/{revoked.json()['id']}", admin).body
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=ws.server.host, port=ws.server.port, user=role, password=credentials["password"],
                        dbname="sales", connect_timeout=3).close()
    assert server.get(f"/v1/access-requests/{request_id}", mia).json()["status"] == "REVOKED"


def test_a_database_changes_with_if_match_and_a_stale_etag_is_refused(ws: Workspace, server: Server,
                                                                      tokens: dict[str, str]) -> None:
    member = tokens["member"]
    made = server.call("POST", "/v1/pairs/main/databases", member, {"name": "crm"}).json()
    assert _done(server, member, made)["status"] == "DONE"
    read = server.get("/v1/pairs/main/databases/crm", member)
    tag = read.headers.get("etag") or read.headers.get("ETag")
    request = urllib.request.Request(server.base + "/v1/pairs/main/databases/crm", method="PATCH",
                                     data=json.dumps({"connection_limit": 9, "settings": {"work_mem": "8MB"}}).encode())
    for name, value in (("Authorization", f"Bearer {member}"), ("Content-Type", "application/json"), ("If-Match", tag)):
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=10) as response:
        changed = json.loads(response.read())
    assert _done(server, member, changed)["status"] == "DONE"
    assert ws.server.execute("SELECT datconnlimit FROM pg_database WHERE datname = 'crm'") == [(9,)]
    assert ws.server.execute("SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                             "WHERE d.datname = 'crm'") == [(["work_mem=8MB"],)]
    try:
        urllib.request.urlopen(request, timeout=10)  # the same If-Match again: the database changed since
        raise AssertionError("a stale If-Match was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 412 and json.loads(exc.read())["error"]["reason"] == "precondition_failed"
    bad = server.call("PATCH", "/v1/pairs/main/databases/crm", member, {"connection_limit": -7})
    assert _error(bad, 422, "invalid")["field"] == "connection_limit"
    _error(server.call("PATCH", "/v1/pairs/main/databases/crm", member, {"encoding": "LATIN1"}), 422, "invalid")
    _error(server.call("PATCH", "/v1/pairs/main/databases/crm", tokens["viewer"], {"connection_limit": 1}), 403,
           "forbidden")


def test_one_operation_per_pair_and_one_cut_short_by_a_restart_is_finished_by_the_next_plan(
        ws: Workspace, server: Server, tokens: dict[str, str]) -> None:
    from pgaasctl.store import open_store

    admin = tokens["admin"]
    store = open_store(ws.store_url)
    try:
        with store.locked("main", "apply", timeout=5):  # an apply from the CLI holds the pair
            first = server.call("POST", "/v1/pairs/main/databases", admin, {"name": "first"})
            assert first.status == 202, first.body
            wait_until(lambda: server.get(f"/v1/operations/{first.json()['id']}", admin).json()["status"] == "RUNNING",
                       10, "the operation to run (and wait for the pair's lock)")
            second = _error(server.call("POST", "/v1/pairs/main/databases", admin, {"name": "second"}), 409,
                            "operation_in_progress")
            assert second["retryable"] is True and first.json()["id"] in second["message"]
            server.process.kill()  # the server dies in the middle of the operation
            server.process.communicate(timeout=30)
    finally:
        store.close()
    with serving(ws.specs, "--interval", "1s") as again:
        cut = again.get(f"/v1/operations/{first.json()['id']}", admin).json()
        assert cut["status"] == "FAILED" and cut["error"]["reason"] == "interrupted"
        assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'first'") == []
        assert (ws.specs / "api" / "main" / "database-first.yaml").exists()  # what was asked for is in the specs
        finished = ws.run("apply", str(ws.specs), "--auto-approve")
        assert finished.exit_code == 0, finished.output
        assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'first'") == [(1,)]
        assert not (ws.specs / "api" / "main" / "database-second.yaml").exists()  # the refused one wrote nothing


MATRIX_CALLERS = ("admin", "owner", "other", "viewer", "none", "disabled")


@pytest.mark.parametrize("method, path, body, expected", [
    ("GET", "/v1/pairs", None, (200, 200, 200, 200, 401, 401)),
    ("GET", "/v1/pairs/main", None, (200, 200, 200, 200, 401, 401)),
    ("GET", "/v1/pairs/main/connection", None, (200, 200, 200, 200, 401, 401)),
    ("GET", "/v1/pairs/main/databases", None, (200, 200, 200, 200, 401, 401)),
    ("GET", "/v1/pairs/main/databases/owned", None, (200, 200, 403, 200, 401, 401)),
    ("POST", "/v1/pairs/main/databases?dry_run=true", {"name": "probe"}, (200, 200, 403, 403, 401, 401)),
    ("PATCH", "/v1/pairs/main/databases/owned?dry_run=true", {"connection_limit": 3}, (200, 200, 403, 403, 401, 401)),
    ("DELETE", "/v1/pairs/main/databases/owned?dry_run=true", None, (200, 200, 403, 403, 401, 401)),
    ("GET", "/v1/operations", None, (200, 200, 200, 200, 401, 401)),
    ("GET", "/v1/pairs/main/roles", None, (200, 200, 200, 200, 401, 401)),
    ("POST", "/v1/pairs/main/roles?dry_run=true", {"name": "probe_r", "login": True}, (200, 200, 403, 403, 401, 401)),
    ("GET", "/v1/pairs/main/grants", None, (200, 200, 200, 200, 401, 401)),
    ("POST", "/v1/pairs/main/grants?dry_run=true", {"role": "probe_g", "database": "owned", "privileges": ["CONNECT"]},
     (422, 422, 403, 403, 401, 401)),
    ("GET", "/v1/access-requests", None, (200, 200, 200, 200, 401, 401)),
    ("POST", "/v1/access-requests", {"pair": "main", "database": "owned", "access": "read-only", "reason": "x"},
     (201, 201, 201, 403, 401, 401)),
    ("GET", "/v1/me", None, (200, 200, 200, 200, 401, 401)),
    ("GET", "/v1/pairs/main/report?since=1h", None, (200, 200, 200, 200, 401, 401)),
    ("GET", "/v1/pairs/main/report?since=1h&database=owned&format=markdown", None, (None, None, 403, None, 401, 401)),
    ("GET", "/v1/users", None, (200, 403, 403, 403, 401, 401)),
    ("POST", "/v1/users", {"name": "Bad Name", "role": "member"}, (422, 403, 403, 403, 401, 401)),
    ("POST", "/v1/users/nobody/disable", None, (404, 403, 403, 403, 401, 401)),
    ("POST", "/v1/users/nobody/password", None, (404, 403, 403, 403, 401, 401)),
    ("GET", "/v1/tokens", None, (200, 200, 200, 200, 401, 401)),
    ("POST", "/v1/tokens", {"user": "vic", "days": 1}, (201, 403, 403, 201, 401, 401)),  # vic is the viewer
    ("DELETE", "/v1/tokens/0000000000000000", None, (404, 404, 404, 404, 401, 401)),
])
def test_authorization_matrix(ws: Workspace, matrix: tuple[Server, dict[str, str | None]], method: str, path: str,
                              body: Any, expected: tuple[int | None, ...]) -> None:
    server, callers = matrix
    before = sorted(p.read_text() for p in ws.specs.rglob("*.yaml"))
    databases = ws.server.execute("SELECT datname, datconnlimit FROM pg_database ORDER BY 1")
    for caller, status in zip(MATRIX_CALLERS, expected):
        reply = server.call(method, path, callers[caller], body)
        if status is None:  # allowed: 200, or 404 while the agent has no samples of the database yet
            assert reply.status in (200, 404), (caller, reply.status, reply.body)
            continue
        assert reply.status == status, (caller, reply.status, reply.body)
        if status >= 400:
            assert set(reply.json()) == {"error"}
    assert sorted(p.read_text() for p in ws.specs.rglob("*.yaml")) == before  # dry runs and refusals write nothing
    assert ws.server.execute("SELECT datname, datconnlimit FROM pg_database ORDER BY 1") == databases


@pytest.fixture
def matrix(ws: Workspace, server: Server, tokens: dict[str, str]) -> Iterator[tuple[Server, dict[str, str | None]]]:
    _secret(ws, "user", "create", "mia", "--role", "member", str(ws.specs))
    _secret(ws, "user", "create", "dan", "--role", "member", str(ws.specs))
    other = _secret(ws, "token", "create", "--user", "mia", str(ws.specs))
    disabled = _secret(ws, "token", "create", "--user", "dan", str(ws.specs))
    assert ws.run("user", "disable", "dan", str(ws.specs)).exit_code == 0
    made = server.call("POST", "/v1/pairs/main/databases", tokens["member"], {"name": "owned"}).json()
    assert _done(server, tokens["member"], made)["status"] == "DONE"
    yield server, {"admin": tokens["admin"], "owner": tokens["member"], "other": other, "viewer": tokens["viewer"],
                   "none": None, "disabled": disabled}


def test_a_body_too_large_or_not_json_is_refused(server: Server, tokens: dict[str, str]) -> None:
    huge = {"name": "big", "settings": {f"x.p{i}": "v" * 100 for i in range(1000)}}
    _error(server.call("POST", "/v1/pairs/main/databases", tokens["admin"], huge), 413, "too_large")
    request = urllib.request.Request(server.base + "/v1/pairs/main/databases", data=b"{not json", method="POST")
    request.add_header("Authorization", f"Bearer {tokens['admin']}")
    request.add_header("Content-Type", "application/json")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("a body that is not JSON was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 422 and json.loads(exc.read())["error"]["reason"] == "invalid"


ACCEPTED_NAMES = ["Shop-DB", "Reader$1", "_under", "x" * 63, "MiXeD_Case", "a-b-c_1$"]
REFUSED_NAMES = ["", "ünïcode_db", "a b", "a;drop database postgres", "x\n", "pg_evil", "1abc", "a'b", 'a"b', "x" * 64,
                 "../etc/passwd", "a/b", "nul\x00", "ä" * 32, "tab\there", "semi;", "back\\slash", "$dollar"]


def test_names_through_the_api_are_refused_or_made_exactly_as_by_the_cli(ws: Workspace, server: Server,
                                                                        tokens: dict[str, str]) -> None:
    admin = tokens["admin"]
    for name in REFUSED_NAMES:
        refused = _error(server.call("POST", "/v1/pairs/main/databases", admin, {"name": name}), 422, "invalid")
        assert refused["field"] == "name", (name, refused)
        cli = ws.run("plan", str(ws.write("probe.yaml", f"kind: Database\nmetadata: {{name: {json.dumps(name)}, "
                                                        "pair: main}\n")))
        assert cli.exit_code == 1, (name, cli.output)  # the CLI refuses it too
        ws.remove("probe.yaml")
    assert not (ws.specs / "api").exists() or not list((ws.specs / "api").rglob("*.yaml"))
    for name in ACCEPTED_NAMES:
        started = server.call("POST", "/v1/pairs/main/databases", admin, {"name": name})
        assert started.status == 202, (name, started.body)
        assert _done(server, admin, started.json())["status"] == "DONE"
        assert ws.server.execute("SELECT datname FROM pg_database WHERE datname = %s", params=(name,)) == [(name,)]
    assert ws.run("plan", str(ws.specs), "--detailed-exitcode").exit_code == 0


def test_a_member_makes_its_own_login_role_gets_its_password_once_and_deletes_it(ws: Workspace, server: Server,
                                                                                tokens: dict[str, str]) -> None:
    import psycopg

    member, admin = tokens["member"], tokens["admin"]
    for body, field in (({"name": "r1", "login": False}, "login"), ({"name": "r1", "login": True, "superuser": True},
                                                                     "superuser"),
                        ({"name": "r1", "login": True, "member_of": ["postgres"]}, "member_of")):
        assert _error(server.call("POST", "/v1/pairs/main/roles", member, body), 403, "forbidden")["field"] == field
    _error(server.call("POST", "/v1/pairs/main/roles", member,
                       {"name": "r1", "login": True, "password": {"env": "X"}}), 422, "invalid")
    made = server.call("POST", "/v1/pairs/main/roles", member, {"name": "max_app", "login": True, "connection_limit": 4})
    assert made.status == 202, made.body
    assert _done(server, member, made.json())["status"] == "DONE"
    _error(server.get("/v1/pairs/main/roles/max_app/credentials", admin), 403, "forbidden")  # the owner's alone
    given = server.get("/v1/pairs/main/roles/max_app/credentials", member)
    assert given.status == 200, given.body
    _error(server.get("/v1/pairs/main/roles/max_app/credentials", member), 410, "gone")
    with psycopg.connect(host=ws.server.host, port=ws.server.port, user="max_app", password=given.json()["password"],
                         dbname="postgres") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("max_app",)
    secret = given.json()["password"]
    for operation in server.get("/v1/operations", admin).json()["items"]:  # plans show that a password is set, not it
        assert secret not in json.dumps(operation)
    assert secret not in server.get("/v1/pairs/main/roles/max_app", admin).body.decode()
    view = server.get("/v1/pairs/main/roles/max_app", member).json()
    assert view["owner_user"] == "max" and "password" not in view["spec"] and view["spec"]["connection_limit"] == 4
    assert [r["name"] for r in server.get("/v1/pairs/main/roles", member).json()["items"]] == ["max_app"]
    gone = server.call("DELETE", "/v1/pairs/main/roles/max_app", member)
    assert _done(server, member, gone.json())["status"] == "DONE"
    assert ws.server.execute("SELECT 1 FROM pg_roles WHERE rolname = 'max_app'") == []


def _explicit_grants(ws: Workspace) -> int:
    """Entries for `reporting` in books' ACL (PUBLIC's default CONNECT aside)."""
    [(count,)] = ws.server.execute("SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = 'books' "
                                   "AND a.grantee = 'reporting'::regrole")
    return int(count)


def test_an_owner_grants_a_role_on_its_database_and_revokes_it(ws: Workspace, server: Server,
                                                               tokens: dict[str, str]) -> None:
    owner, viewer = tokens["member"], tokens["viewer"]
    ws.write("reader.yaml", "kind: Role\nmetadata: {name: reporting, pair: main}\n")
    assert ws.run("apply", str(ws.specs), "--auto-approve").exit_code == 0
    made = server.call("POST", "/v1/pairs/main/databases", owner, {"name": "books"}).json()
    assert _done(server, owner, made)["status"] == "DONE"
    body = {"role": "reporting", "database": "books", "privileges": ["CONNECT"]}
    _error(server.call("POST", "/v1/pairs/main/grants", viewer, body), 403, "forbidden")
    granted = server.call("POST", "/v1/pairs/main/grants", owner, body)
    assert granted.status == 202, granted.body
    assert _done(server, owner, granted.json())["status"] == "DONE"
    assert _explicit_grants(ws) == 1
    access = server.get("/v1/pairs/main/databases/books", owner).json()["access"]
    assert access == [{"role": "reporting", "privileges": ["CONNECT"], "schemas": {}}]  # who has access
    listed = server.get("/v1/pairs/main/grants", owner).json()["items"]
    assert [(g["role"], g["database"], g["owner_user"]) for g in listed] == [("reporting", "books", "max")]
    _error(server.call("POST", "/v1/pairs/main/grants", owner, {"role": "reporting", "database": "postgres"}), 403,
           "forbidden")  # not its database
    revoked = server.call("DELETE", "/v1/pairs/main/grants/books/reporting", owner)
    assert _done(server, owner, revoked.json())["status"] == "DONE"
    assert _explicit_grants(ws) == 0
    assert server.call("DELETE", "/v1/pairs/main/grants/books/reporting", owner).status == 204


def test_lists_come_in_pages(ws: Workspace, server: Server, tokens: dict[str, str]) -> None:
    for i in range(5):
        ws.write(f"db{i}.yaml", f"kind: Database\nmetadata: {{name: paged{i}, pair: main}}\n")
    names, token, pages = [], None, 0
    while True:
        query = "?page_size=2" + (f"&page_token={token}" if token else "")
        reply = server.get(f"/v1/pairs/main/databases{query}", tokens["admin"])
        assert reply.status == 200, reply.body
        names += [d["name"] for d in reply.json()["items"]]
        token, pages = reply.json()["next_page_token"], pages + 1
        if token is None:
            break
    assert names == [f"paged{i}" for i in range(5)] and pages == 3
    assert server.get("/v1/pairs/main/databases?page_size=2&page_token=99", tokens["admin"]).json() == {
        "items": [], "next_page_token": None}  # past the end: an empty page


def test_a_kept_databases_page_still_checks_the_caller_and_follows_the_specs(ws: Workspace, server: Server,
                                                                             tokens: dict[str, str]) -> None:
    """The databases list is answered from a rendered body after its first read (pgaasctl/api/kept_reads.py):
    the token, who may see what, the query and a hand edit must count exactly as on the first read."""
    ws.write("mine.yaml", "kind: Database\nmetadata: {name: kept_mine, pair: main, labels: {pgaas.owner: max}}\n")
    ws.write("theirs.yaml", "kind: Database\nmetadata: {name: kept_theirs, pair: main, labels: {pgaas.owner: zoe}}\n")
    admin = _secret(ws, "token", "create", "--user", "ada", str(ws.specs))
    path = "/v1/pairs/main/databases"

    def names(token: str, query: str = "") -> list[str]:
        reply = server.get(path + query, token)
        assert reply.status == 200, reply.body
        return [d["name"] for d in reply.json()["items"]]

    wait_until(lambda: "kept_theirs" in names(admin), 10, "the new documents to show")  # within the spec check
    first, again = server.get(path, admin), server.get(path, admin)
    assert first.body == again.body and {"kept_mine", "kept_theirs"} <= set(names(admin))
    assert names(tokens["member"]) == names(tokens["member"]) == ["kept_mine"]  # a member: its own, every time
    assert {"kept_mine", "kept_theirs"} <= set(names(tokens["viewer"]))
    assert len(names(admin, "?page_size=1")) == 1 and len(names(admin)) > 1  # the query is part of what is kept
    _error(server.get(path + "?page_size=0", admin), 422, "invalid")
    _error(server.get(path, "pgaas_0000000000000000_" + "x" * 43), 401, "unauthenticated")
    _error(server.get("/v1/pairs/nope/databases", admin), 404, "not_found")

    token_id = next(t["id"] for t in json.loads(ws.run("token", "list", str(ws.specs), "--json").stdout)
                    if t["user"] == "ada" and not t["revoked"] and admin.startswith(f"pgaas_{t['id']}_"))
    assert ws.run("token", "revoke", token_id, str(ws.specs)).exit_code == 0
    _error(server.get(path, admin), 401, "unauthenticated")  # a kept page does not outlive its caller's token
    (ws.specs / "theirs.yaml").unlink()
    wait_until(lambda: "kept_theirs" not in names(tokens["viewer"]), 10, "a removed document to leave the list")


def test_the_console_signs_in_to_a_session_cookie_that_needs_its_header_for_changes(ws: Workspace,
                                                                                    server: Server) -> None:
    import http.client

    password = _secret(ws, "user", "create", "cora", "--role", "admin", str(ws.specs))
    host, port = server.base.removeprefix("http://").split(":")

    def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json", **(headers or {})})
        return connection.getresponse()

    wrong = call("POST", "/v1/sessions", {"name": "cora", "password": password + "x"})
    assert wrong.status == 401 and wrong.getheader("Set-Cookie") is None
    nobody = call("POST", "/v1/sessions", {"name": "nobody", "password": password})
    assert nobody.status == 401
    signed = call("POST", "/v1/sessions", {"name": "cora", "password": password})
    assert signed.status == 200
    cookie = signed.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    session = {"Cookie": cookie.split(";", 1)[0]}
    assert call("GET", "/v1/pairs", headers=session).status == 200
    unsafe = call("POST", "/v1/pairs/main/databases?dry_run=true", {"name": "viacookie"}, headers=session)
    assert unsafe.status == 403 and "x-pgaasctl-console" in unsafe.read().decode()  # no header: maybe another site
    safe = call("POST", "/v1/pairs/main/databases?dry_run=true", {"name": "viacookie"},
                headers={**session, "X-Pgaasctl-Console": "1"})
    assert safe.status == 200, safe.read()
    out = call("DELETE", "/v1/sessions", headers={**session, "X-Pgaasctl-Console": "1"})
    assert out.status == 204
    assert call("GET", "/v1/pairs", headers=session).status == 401  # signed out: the cookie is dead


def test_serve_over_https_with_a_certificate_from_the_workspace_ca(ws: Workspace, tokens: dict[str, str]) -> None:
    import ssl

    ca = ws.specs / "state" / "tls" / "ca.crt"
    password = ws.run("user", "create", "hank", "--role", "member", str(ws.specs)).stdout.strip()
    with serving(ws.specs, "--tls", ca=ca) as server:
        assert server.base.startswith("https://")
        assert server.get("/healthz").status == 200  # verified against the workspace CA
        assert server.get("/v1/pairs", tokens["admin"]).status == 200
        signed_in = server.call("POST", "/v1/sessions", body={"name": "hank", "password": password})
        assert signed_in.status == 200 and "secure" in signed_in.headers["set-cookie"].lower()
        console = server.get("/")
        assert console.status == 200 and "secure" in console.headers["set-cookie"].lower()  # the CSRF cookie too
        plain = server.base.replace("https://", "http://")
        with pytest.raises((urllib.error.URLError, ConnectionError, http_client.RemoteDisconnected)):
            urllib.request.urlopen(plain + "/healthz", timeout=5)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(server.base + "/healthz", timeout=5, context=ssl.create_default_context())
    listed = ws.run("cert", "list", str(ws.specs))
    assert "server -/serve 127.0.0.1" in listed.flat
    refused = ws.run("serve", str(ws.specs), "--tls-cert", str(ca))
    assert refused.exit_code == 1 and "need --tls" in refused.stderr
