"""Discovery decisions that need no server: parsing repmgr's CSV, split brain, pairs without a primary."""

from __future__ import annotations

import pytest

from pgaasctl.errors import PgaasError, PlanError
from pgaasctl.live.connect import NodeAddress
from pgaasctl.live.discovery import NodeState
from pgaasctl.live.topology import NodeReport, _decide, _parse_probe
from providers.base import Host, HostLayout

PROBE = """@show
1,0,0
2,-1,-1
@exit=25
@files data signal repmgrd
"""


def host(node: str, exists: bool = True, running: bool = True, layout: bool = False) -> Host:
    return Host(pair="p", node=node, address=f"127.0.9.{ord(node[0]) % 200}", ssh_port=2222, ssh_user="postgres",
                key_file="/k", exists=exists, running=running,
                layout=HostLayout(bin_dir="/b", data_dir="/d", config_dir="/c", socket_dir="/s", log_dir="/l") if layout else None)


def address(node: str) -> NodeAddress:
    return NodeAddress(pair="p", name=node, host="127.0.9.1", port=5432, user="postgres", password=None,
                       admin_database="postgres", sslmode="prefer", connect_timeout=2)


def test_probe_output_is_parsed() -> None:
    report = NodeReport(host=host("a", layout=True))
    _parse_probe(report, PROBE)
    assert report.cluster_show == [(1, 0, 0), (2, -1, -1)]
    assert report.repmgr_error is None  # exit 25 only says a node is down
    assert report.has_data and report.standby_signal and report.repmgrd_process


def test_repmgr_failure_is_kept_with_its_reason() -> None:
    report = NodeReport(host=host("a", layout=True))
    _parse_probe(report, "@show\nERROR: connection to database failed\nDETAIL: fe_sendauth: no password supplied\n"
                         "@exit=6\n@files data\n")
    assert report.repmgr_error == "ERROR: connection to database failed; DETAIL: fe_sendauth: no password supplied"
    assert report.has_data is True and report.standby_signal is False and report.repmgrd_process is False


def test_libpqs_own_reason_and_the_conninfo_tried_are_kept_without_a_password() -> None:
    report = NodeReport(host=host("a", layout=True))
    _parse_probe(report, "@show\nERROR: connection to database failed\nDETAIL: \n"
                         'connection to server at "10.1.0.2", port 5432 failed: timeout expired\n\n'
                         "DETAIL: attempted to connect using:\n  host=10.1.0.2 user=repmgr password=hunter2 sslmode=verify-full\n"
                         "@exit=6\n")
    assert report.repmgr_error == ('ERROR: connection to database failed; DETAIL:; connection to server at "10.1.0.2", '
                                   "port 5432 failed: timeout expired; host=10.1.0.2 user=repmgr password=(sensitive) "
                                   "sslmode=verify-full")


def test_missing_repmgr_is_an_error_naming_the_node() -> None:
    report = NodeReport(host=host("a"))
    _parse_probe(report, "@no-repmgr\n")
    with pytest.raises(PgaasError, match="node a of pair p .*repmgr is not installed"):
        _decide("p", [report], synchronous=False, can_create=True)


def test_two_primaries_without_evidence_are_refused() -> None:
    reports = [NodeReport(host=host(n), sql=NodeState(address(n), "primary")) for n in ("a", "b")]
    with pytest.raises(PlanError, match=r"split brain.*a .* primary on timeline \?; b .* primary on timeline \?"):
        _decide("p", reports, synchronous=True, can_create=True)


def test_new_pair_is_created_primary_first() -> None:
    reports = [NodeReport(host=host(n, exists=False)) for n in ("a", "b")]
    topology = _decide("p", reports, synchronous=True, can_create=True)
    kinds = [(op.kind, op.node) for op in topology.operations]
    assert kinds[:4] == [("create_host", "a"), ("init_primary", "a"), ("create_host", "b"), ("clone_standby", "b")]
    assert ("start_repmgrd", "a") in kinds and ("start_repmgrd", "b") in kinds
    assert topology.state is None


def test_stopped_pair_starts_its_former_primary_first() -> None:
    a, b = NodeReport(host=host("a")), NodeReport(host=host("b"))
    a.sql = NodeState(address("a"), "unreachable")
    b.sql = NodeState(address("b"), "unreachable")
    a.standby_signal, b.standby_signal = True, False
    topology = _decide("p", [a, b], synchronous=False, can_create=True)
    starts = [op.node for op in topology.operations if op.kind == "start_postgres"]
    assert starts == ["b", "a"]


def test_no_primary_on_existing_servers_is_refused() -> None:
    reports = [NodeReport(host=host(n), sql=NodeState(address(n), "standby")) for n in ("a", "b")]
    with pytest.raises(PlanError, match="no node is primary"):
        _decide("p", reports, synchronous=False, can_create=False)
