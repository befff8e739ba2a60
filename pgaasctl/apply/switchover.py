"""Planned switchover: the standby becomes primary, the primary becomes its standby, no commit lost.

repmgrd is paused throughout, so that it does not mistake the planned stop for a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from psycopg import sql

from pgaasctl.errors import PgaasError
from pgaasctl.hosts.bootstrap import Bootstrap
from pgaasctl.live.connect import NodeAddress, connect
from pgaasctl.live.topology import Topology
from providers.base import Host

PROMOTE_TIMEOUT = 60.0


def switchover(topology: Topology, hosts: dict[str, Host], addresses: dict[str, NodeAddress], bootstrap: Bootstrap,
               to: str | None, synchronous: bool, on_primary_stop: Callable[[], None] | None = None) -> tuple[str, str]:
    """Returns (old primary, new primary). `on_primary_stop` is called just before the primary stops."""
    pair = topology.pair
    primary = topology.primary
    if primary is None:
        raise PgaasError(f"pair {pair!r} has no primary to switch over from")
    if topology.operations:
        needs = "; ".join(f"node {op.node}: {op.detail}" for op in topology.operations)
        raise PgaasError(f"pair {pair!r} is not whole ({needs})", "Run `pgaasctl apply` first, then switch over.")
    standbys = [r for r in topology.nodes if r.role == "standby"]
    if to is not None:
        standbys = [r for r in standbys if r.name == to]
        if not standbys:
            raise PgaasError(f"pair {pair!r}: {to!r} is not a standby of {primary.name}")
    if not standbys:
        raise PgaasError(f"pair {pair!r} has no standby to switch over to")
    candidate = standbys[0]
    old, new = hosts[primary.name], hosts[candidate.name]

    bootstrap.pause_repmgrd(old)
    try:
        with then(lambda: bootstrap.unpause_repmgrd(new), "unpausing repmgrd"):
            if on_primary_stop is not None:
                on_primary_stop()
            bootstrap.stop_postgres(old)  # a clean stop: walsenders hand every last WAL record to the standby first
            bootstrap.promote(new)
            wait_primary(addresses[new.node])
            bootstrap.rejoin(old, new)
    except PgaasError as exc:
        exc.message = f"switchover of pair {pair!r} stopped: {exc.message}"
        exc.hint = exc.hint or "See `pgaasctl status`; once the cause is fixed, `pgaasctl apply` rejoins the old primary."
        raise
    bootstrap.restart_repmgrd(old)  # a fresh repmgrd watches it as the standby it now is
    if synchronous:
        for node in (new.node, old.node):
            with connect(addresses[node]) as conn:
                conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = '*'"))
                conn.execute("SELECT pg_reload_conf()")
    return primary.name, candidate.name


def wait_primary(address: NodeAddress) -> None:
    deadline = time.monotonic() + PROMOTE_TIMEOUT
    while time.monotonic() < deadline:
        with connect(address) as conn:
            if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                return
        time.sleep(0.1)  # polling the promotion
    raise PgaasError(f"{address.label} did not become primary within {PROMOTE_TIMEOUT:g}s")


@contextmanager
def then(cleanup: Callable[[], None], what: str) -> Iterator[None]:
    """Run `cleanup` after the block, whatever happens in it. A failure of the block is reported as itself; if
    the cleanup fails too (it often does, for the same cause), that is said after it, never instead of it."""
    try:
        yield
    except PgaasError as exc:
        try:
            cleanup()
        except PgaasError as second:
            exc.message = f"{exc.message}\n  Then {what} failed too: {second.message}"
        raise
    except BaseException:
        try:
            cleanup()
        except PgaasError:
            pass  # the interruption is what the user must see
        raise
    cleanup()
