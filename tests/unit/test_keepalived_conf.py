"""The keepalived configuration of a pair's virtual IP: what makes it safe is in the text, so the text is tested."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from pgaasctl.hosts.keepalived import keepalived_conf, router_id

SUBNET = IPv4Network("10.213.0.0/24")


def _conf(vip: str = "10.213.0.100") -> str:
    return keepalived_conf("orders", "orders-a", "10.213.0.2", ["10.213.0.3"], IPv4Address(vip), SUBNET,
                           "/n/run/vip.track", "/n/run/vip.timeline")


def test_both_nodes_wait_as_backups_and_never_preempt() -> None:
    text = _conf()
    assert "state BACKUP" in text and "nopreempt" in text and "priority 100" in text


def test_unicast_between_the_two_nodes_only() -> None:
    text = _conf()
    assert "unicast_src_ip 10.213.0.2" in text and "unicast_peer {\n        10.213.0.3\n    }" in text


def test_eligibility_is_the_guards_track_file_and_priority_its_timeline() -> None:
    text = _conf()
    assert 'file "/n/run/vip.track"\n    weight 0' in text  # non-zero: FAULT, never holds the address
    assert 'file "/n/run/vip.timeline"\n    weight 1' in text  # the newer primary wins when both advertise
    assert "track_file {\n        primary_not_fenced\n        timeline\n    }" in text


def test_the_address_and_router_id_come_from_the_spec() -> None:
    text = _conf("10.213.0.100")
    assert "10.213.0.100/24 dev eth0" in text
    assert f"virtual_router_id {router_id(IPv4Address('10.213.0.100'), SUBNET)}" in text
    ids = {router_id(IPv4Address(f"10.213.0.{i}"), SUBNET) for i in range(2, 255)}
    assert len(ids) == 253 and min(ids) >= 1 and max(ids) <= 255  # every address of a /24 its own id
