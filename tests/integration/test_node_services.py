"""Issue 13: what a plan reads over SQL instead of SSH on a healthy node (pgaasctl/live/node_services.py): running
services from their pid files and /proc (a zombie is not running), the fenced mark, standby.signal, history files."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from pgaasctl.live.connect import NodeAddress
from pgaasctl.live.node_services import NodeServices, read_services
from pgaasctl.live.topology import _sql_probe
from providers.base import Host, HostLayout
from tests.support.local_pair import wait_until
from tests.support.pgserver import PgServer


@pytest.fixture
def node_dir() -> Iterator[Path]:
    """A node's run and data directories the server's OS user can read (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="pgaasctl-services-") as name:
        root = Path(name)
        root.chmod(0o755)
        for sub in ("run", "data"):
            (root / sub).mkdir(mode=0o755)
        yield root


def host_at(root: Path) -> Host:
    layout = HostLayout(bin_dir="/usr/lib/postgresql/15/bin", data_dir=str(root / "data"), config_dir=str(root / "etc"),
                        socket_dir=str(root / "run"), log_dir=str(root / "log"))
    return Host(pair="p", node="a", address="127.0.0.1", layout=layout)


def read(pg: PgServer, root: Path) -> NodeServices:
    with pg.connect() as conn:
        services = read_services(conn, host_at(root))
    assert services is not None, "a superuser's session reads them"
    return services


def test_services_run_when_their_pid_files_name_live_processes_and_not_zombies(pg: PgServer, node_dir: Path) -> None:
    nothing = read(pg, node_dir)
    assert nothing.running == frozenset() and not nothing.healthy
    live = subprocess.Popen(["sleep", "60"])
    zombie = subprocess.Popen(["true"])  # exits at once; not waited for, it stays a zombie
    try:
        wait_until(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10,
                   "the child to become a zombie", interval=0.01)
        (node_dir / "run" / "repmgrd.pid").write_text(f"{live.pid}\n")
        (node_dir / "run" / "guard.pid").write_text(f"{zombie.pid}\n")
        assert read(pg, node_dir).running == frozenset({"repmgrd"})
        (node_dir / "run" / "guard.pid").write_text(f"{live.pid}\nmore lines\n")
        assert read(pg, node_dir).healthy
        (node_dir / "run" / "guard.pid").write_text("1; DROP TABLE x\n")  # not a pid: never read as a path
        assert read(pg, node_dir).running == frozenset({"repmgrd"})
    finally:
        live.kill()
        live.wait()
        zombie.wait()


def test_the_fenced_mark_and_standby_signal_are_read(pg: PgServer, node_dir: Path) -> None:
    (node_dir / "run" / "fenced").write_text("2026-12-02 10:00:00 UTC fenced: a stale primary on timeline 2\n")
    (node_dir / "data" / "standby.signal").write_text("")
    services = read(pg, node_dir)
    assert not services.healthy and services.standby_signal
    assert services.fenced == "2026-12-02 10:00:00 UTC fenced: a stale primary on timeline 2"


def test_a_session_that_may_not_read_files_reads_nothing(pg: PgServer, node_dir: Path) -> None:
    pg.execute("CREATE ROLE plain_reader LOGIN PASSWORD 'plain-secret'")
    with psycopg.connect(host=pg.host, port=pg.port, user="plain_reader", password="plain-secret", dbname="postgres",
                         autocommit=True) as conn:
        assert read_services(conn, host_at(node_dir)) is None
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable (autocommit)


def test_a_probe_in_repmgrs_database_falls_back_to_the_admin_database_where_there_is_none(
        pg: PgServer, node_dir: Path) -> None:
    """A plan opens a node's probe in repmgr's database where the last apply saw a standby; a server without that
    database still says what it is, on the admin database."""
    address = NodeAddress(pair="p", name="a", host=pg.host, port=pg.port, user=pg.admin_user,
                          password=SecretStr(pg.admin_password), admin_database="postgres", sslmode="prefer",
                          connect_timeout=5)
    state, conn, _ = _sql_probe(host_at(node_dir), address, False, "repmgr")
    assert state.role == "primary" and conn is not None
    try:
        assert conn.info.dbname == "postgres"
    finally:
        conn.close()
