"""`pgaasctl promote PAIR NODE`: promote a standby by hand when repmgrd did not (its failover timeout passed,
or failover is manual), through the same promote hook repmgrd runs. Refused whenever it could make two
primaries or lose commits: a node is primary already, the node is not a running standby, or another node is on
a newer timeline than it.
"""

from __future__ import annotations

from pgaasctl.apply.switchover import wait_primary
from pgaasctl.errors import PgaasError
from pgaasctl.hosts.bootstrap import Bootstrap
from pgaasctl.live.topology import NodeReport


def promote(pair: str, reports: list[NodeReport], node: str, bootstrap: Bootstrap) -> None:
    try:
        _check(pair, reports, node)
        target = next(r for r in reports if r.name == node)
        bootstrap.promote(target.host)
        assert target.sql is not None
        wait_primary(target.sql.address)
    finally:
        for report in reports:
            if report.connection is not None:
                report.connection.close()


def _check(pair: str, reports: list[NodeReport], node: str) -> None:
    names = [r.name for r in reports]
    if node not in names:
        raise PgaasError(f"pair {pair!r} has no node {node!r} (nodes: {', '.join(names)})")
    primaries = [r for r in reports if r.role == "primary"]
    if primaries:
        raise PgaasError(
            f"pair {pair!r}: {primaries[0].host.label} is the primary; promoting {node} would make two primaries",
            f"For planned maintenance, run `pgaasctl switchover {pair} --to {node}`.",
        )
    target = next(r for r in reports if r.name == node)
    if target.role != "standby":
        raise PgaasError(f"pair {pair!r}: {target.host.label} is {target.role}, not a running standby: it cannot be promoted",
                         "Start it first (`pgaasctl status` shows what each node is).")
    mine = target.files_timeline
    for other in reports:
        if other is not target and mine is not None and other.files_timeline is not None and other.files_timeline > mine:
            raise PgaasError(
                f"pair {pair!r}: {other.host.label} is on timeline {other.files_timeline}, newer than {node}'s "
                f"{mine}: it was promoted later and holds commits {node} lacks",
                f"Start {other.name} instead; pgaasctl will not promote {node} over it.",
            )
