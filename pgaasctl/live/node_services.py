"""What a bootstrapped node's files say of its services, read over SQL: the facts the SSH probe reads (topology.py),
for a plan that asks SSH only of nodes that look unhealthy.

The probe's own session reads them when it is a superuser's (pgaasctl's admin is): the pid files of repmgrd and the
guard and /proc's word on each (a zombie is not running), the guard's fenced mark, standby.signal, and the newest
timeline history file in pg_wal. PostgreSQL reads the files as its own OS user, the one the node's services run as.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgaasctl.hosts.guard import fenced_file, guard_pid_file
from providers.base import Host

SERVICES_SQL = r"""
WITH files(what, path) AS (VALUES ('repmgrd', %(repmgrd)s), ('guard', %(guard)s)),
     pids AS (SELECT what, split_part(coalesce(pg_read_file(path, 0, 64, true), ''), E'\n', 1) AS pid FROM files)
SELECT (SELECT coalesce(array_agg(what), '{}') FROM pids WHERE pid ~ '^[0-9]{1,9}$'
          AND left(regexp_replace(coalesce(pg_read_file('/proc/' || pid || '/stat', 0, 4096, true), ''), '^.*\) ', ''), 1)
              NOT IN ('', 'Z')),
       pg_read_file(%(fenced)s, 0, 65536, true),
       (pg_stat_file(%(signal)s, true)).size IS NOT NULL,
       (SELECT max(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}\.history$')
"""


@dataclass(frozen=True)
class NodeServices:
    """What SERVICES_SQL read of a node."""

    running: frozenset[str]  # of repmgrd and guard
    fenced: str | None
    standby_signal: bool
    newest_history: str

    @property
    def healthy(self) -> bool:
        return self.running >= {"repmgrd", "guard"} and self.fenced is None


def read_services(conn: psycopg.Connection, host: Host) -> NodeServices | None:
    """None when the session may not read them (not a superuser's) or the node has no layout pgaasctl knows."""
    layout = host.layout
    if layout is None:
        return None
    try:
        row = conn.execute(SERVICES_SQL, {  # type: ignore[arg-type]
            "repmgrd": f"{layout.socket_dir}/repmgrd.pid", "guard": guard_pid_file(layout),
            "fenced": fenced_file(layout), "signal": f"{layout.data_dir}/standby.signal"}).fetchone()
    except psycopg.Error:
        return None
    if row is None:
        return None
    fenced = (row[1] or "").strip().splitlines()
    return NodeServices(running=frozenset(row[0]), fenced=fenced[-1] if fenced else None, standby_signal=row[2],
                        newest_history=row[3] or "")
