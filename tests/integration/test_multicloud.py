"""A pair with one node on each cloud: the openstack node and the gcp node replicate over the addresses the
clouds report, each on its own network (the fakes report two /25s of one bridge), and pg_hba on each lets the
other in. Both fakes are the real SDKs' counterparts (tests/support/fake_openstack.py, fake_gcp.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest

from tests.support.cloud_lab import CloudLab
from tests.support.fake_gcp import NETWORK, PROJECT, REGION, SUBNET, ZONES, FakeGcp
from tests.support.fake_openstack import FakeOpenStack
from tests.support.local_pair import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")]


def shared_subnet() -> IPv4Network:
    """A /24 of 10.215.0.0/16 per xdist worker: one bridge that both fake clouds' VMs are on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return IPv4Network(f"10.215.{int(worker[2:]) if worker.startswith('gw') else 99}.0/24")


@pytest.fixture(scope="module")
def lab() -> Iterator[CloudLab]:
    subnet = shared_subnet()
    low, high = (str(n) for n in subnet.subnets(new_prefix=25))
    with CloudLab.open("multicloud") as lab:
        openstack = FakeOpenStack(subnet=subnet, root=lab.base / "openstack-vms", reported_cidr=low).start()
        gcp = FakeGcp(subnet=subnet, root=lab.base / "gcp-vms", first_address=140, reported_cidr=high).start()
        lab.fakes += [openstack, gcp]
        os.environ.update(openstack.environment())
        yield lab


@pytest.fixture(autouse=True)
def nothing_left_behind(lab: CloudLab) -> Iterator[None]:
    yield
    lab.leave_nothing()  # only a test that failed midway leaves a pair: the next one starts clean


def test_one_node_on_each_cloud_replicates_fails_over_and_goes(lab: CloudLab) -> None:
    openstack, gcp = lab.fakes
    key = gcp.service_account_file(lab.base / "service-account.json")
    ws = lab.ws
    ws.write("orders.yaml", lab.pair_doc("orders", {
        "provider": "openstack", "failover": {"reconnect_attempts": 0},
        "nodes": [{"name": "orders-a"}, {"name": "orders-b", "provider": "gcp"}],
        "openstack": {"image": "debian-12", "flavor": "m1.medium", "network": "pgaas-net"},
        "gcp": {"project": PROJECT, "region": REGION, "zones": [ZONES[0]], "machine_type": "e2-standard-2",
                "network": NETWORK, "subnet": SUBNET, "credentials_file": str(key), "endpoint": gcp.url},
    }) + "---\nkind: Database\nmetadata: {name: shop, pair: orders}\nspec: {}\n")
    planned = ws.plan()
    assert "+ host.orders.orders-a (openstack m1.medium, debian-12)" in planned.output, planned.output
    assert "+ host.orders.orders-b (gcp e2-standard-2, debian-12, " not in planned.output
    assert "+ host.orders.orders-b (gcp e2-standard-2, debian-12)" in planned.output

    ws.must_apply()
    assert [s["name"] for s in openstack.servers.values()] == [lab.name("orders", "orders-a")]
    assert list(gcp.instances) == [lab.name("orders", "orders-b")]
    nodes = lab.nodes()
    a, b = (nodes[n]["address"].split(":")[0] for n in ("orders-a", "orders-b"))
    assert IPv4Network(openstack.reported_cidr).supernet_of(IPv4Network(f"{a}/32"))
    assert IPv4Network(gcp.reported_cidr).supernet_of(IPv4Network(f"{b}/32"))
    assert nodes["orders-b"]["role"] == "standby" and nodes["orders-b"]["replication"].startswith("streaming")
    wait_until(lambda: lab.sql("orders", b, "SELECT 1 FROM pg_database WHERE datname = 'shop'"), 10,
               "the database on the gcp standby")
    uri = ws.run("connection", "orders", str(ws.specs)).stdout
    assert a in uri and b in uri and "target_session_attrs=read-write" in uri

    # the openstack node's hypervisor fails: the gcp node is promoted
    openstack.power_off(lab.name("orders", "orders-a"))
    wait_until(lambda: lab.primary_at("orders", b) == "orders-b", 30, "the gcp node promoted")
    healed = ws.apply()
    assert healed.exit_code == 0, healed.output
    nodes = lab.nodes()
    assert nodes["orders-a"]["role"] == "standby" and nodes["orders-a"]["replication"].startswith("streaming")

    gone = ws.destroy()
    assert gone.exit_code == 0, gone.output
    assert not openstack.servers and not openstack.ports and not openstack.security_groups and not openstack.groups
    assert not gcp.instances and not any(gcp.tables.values())
    ws.remove("orders.yaml")
