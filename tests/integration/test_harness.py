"""The test harness itself: the PgServer behind the `pg_server` / `pg` fixtures."""

from __future__ import annotations

import errno
import os
import shutil
import socket

import psycopg
import pytest

from tests.support.pgserver import PgServer, make_base_dir


def _tcp_connect_errno(host: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        return s.connect_ex((host, port))


def test_reachable_over_tcp_with_password(pg: PgServer) -> None:
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.admin_user, password=pg.admin_password, dbname="postgres"
    ) as conn:
        row = conn.execute(
            "SELECT current_user, host(inet_server_addr()), inet_server_port(), current_setting('server_version_num')::int"
        ).fetchone()
    assert row is not None
    assert row[0] == "postgres"
    assert row[1] == pg.host
    assert row[2] == pg.port
    assert 150000 <= row[3] < 160000

    assert pg.execute("SELECT 1") == [(1,)]
    assert pg.execute("CREATE TEMP TABLE t (x int)") == []


def test_wrong_password_is_refused(pg: PgServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=pg.host, port=pg.port, user=pg.admin_user, password="wrong", dbname="postgres")


def test_reset_removes_roles_and_databases(pg: PgServer) -> None:
    pg.execute("CREATE ROLE app_owner LOGIN PASSWORD 'pw'")
    pg.execute("CREATE ROLE app_reader NOLOGIN")
    pg.execute("GRANT app_reader TO app_owner")
    pg.execute("CREATE DATABASE app OWNER app_owner")
    pg.execute("CREATE DATABASE app_tpl IS_TEMPLATE true")
    pg.execute("CREATE TABLE public.owned_by_app (x int)")
    pg.execute("ALTER TABLE public.owned_by_app OWNER TO app_owner")
    pg.execute("GRANT SELECT ON public.owned_by_app TO app_reader")
    pg.execute("GRANT CONNECT ON DATABASE postgres TO app_reader")
    pg.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO app_reader")
    pg.execute("CREATE TABLE app_stuff (x int)", dbname="app")
    # a session left open by a careless test must not block the reset
    leaked = psycopg.connect(host=pg.host, port=pg.port, user="app_owner", password="pw", dbname="app")
    try:
        pg.reset()
    finally:
        leaked.close()

    assert pg.execute(
        "SELECT datname FROM pg_database ORDER BY datname"
    ) == [("postgres",), ("template0",), ("template1",)]
    assert pg.execute("SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1") == [("postgres",)]
    # objects the dropped role owned in the kept database were reassigned to postgres
    assert pg.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'owned_by_app'") == [("postgres",)]
    pg.execute("DROP TABLE public.owned_by_app")


def test_pg_fixture_starts_clean(pg: PgServer) -> None:
    # whatever the previous test left, `pg` reset it
    assert pg.execute("SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')") == [(0,)]
    assert pg.execute("SELECT count(*) FROM pg_roles WHERE rolname <> 'postgres' AND rolname NOT LIKE 'pg\\_%'") == [(0,)]


def test_reset_undoes_alter_system(pg: PgServer) -> None:
    default = pg.execute("SHOW work_mem")[0][0]
    pg.execute("ALTER SYSTEM SET work_mem = '77MB'")
    pg.execute("ALTER DATABASE postgres SET statement_timeout = '5s'")
    pg.execute("SELECT pg_reload_conf()")
    pg.execute("ALTER ROLE postgres PASSWORD 'changed-by-a-test'")  # reset() must not need it
    pg.reset()
    assert pg.execute("SHOW work_mem") == [(default,)]
    assert pg.execute("SHOW statement_timeout") == [("0",)]
    assert pg.execute("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'") == [(0,)]


def test_listens_only_on_its_own_host(pg: PgServer) -> None:
    assert pg.execute("SHOW listen_addresses") == [(pg.host,)]
    assert _tcp_connect_errno(pg.host, pg.port) == 0
    assert pg.host != "127.0.0.1"  # the fixtures never use it, so the probe below means something
    assert _tcp_connect_errno("127.0.0.1", pg.port) == errno.ECONNREFUSED
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=pg.port, user=pg.admin_user, password=pg.admin_password,
            dbname="postgres", connect_timeout=5,
        )


def test_unix_socket_outside_data_dir(pg: PgServer) -> None:
    socket_dir = pg.execute("SHOW unix_socket_directories")[0][0]
    data_dir = pg.execute("SHOW data_directory")[0][0]
    assert not os.path.realpath(socket_dir).startswith(os.path.realpath(data_dir) + os.sep)
    assert os.path.exists(os.path.join(socket_dir, f".s.PGSQL.{pg.port}"))


def test_second_server_starts_and_stops_without_leftovers() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw-1")
    index = int(worker[2:]) if worker[2:].lstrip("-").isdigit() else -1
    host = f"127.0.0.{200 + index + 1}"  # clear of the session servers (.2, .10+)
    base_dir = make_base_dir(prefix="pgaasctl-harness-")
    server = PgServer(base_dir, host=host, superuser_password="other-secret")
    try:
        server.start()
        assert server.execute("SELECT host(inet_server_addr())") == [(host,)]
        # open a second session so that there is a backend to clean up
        extra = server.connect()
        pids = [r[0] for r in server.execute("SELECT pid FROM pg_stat_activity")]
        postmaster_pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        server.stop()
        extra.close()
        server.stop()  # idempotent
        assert not server.running
        for pid in [postmaster_pid, *pids]:
            assert not _alive(pid), f"process {pid} outlived stop()"
        assert _tcp_connect_errno(host, server.port) == errno.ECONNREFUSED
        assert not (server.data_dir / "postmaster.pid").exists()
        # and it comes back on the same data directory
        server.start()
        assert server.execute("SELECT 1") == [(1,)]
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_reset_restarts_a_stopped_server(pg: PgServer) -> None:
    pg.stop("immediate")
    assert not pg.running
    pg.reset()
    assert pg.running
    assert pg.execute("SELECT 1") == [(1,)]
