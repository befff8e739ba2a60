"""provider openstack: the real openstacksdk against a local fake of Keystone, Nova, Neutron and Glance
(tests/support/fake_openstack.py). A server the fake reports ACTIVE is an emulated VM on a bridge of this machine
(tests/support/cloud_vm.py), so the rest of apply (bootstrap over SSH, repmgr, keepalived, databases, failover)
runs for real. Only the cloud is fake; PostgreSQL, repmgr, sshd and keepalived are real."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

import pytest
import yaml

from tests.support.cloud_lab import CloudLab
from tests.support.fake_openstack import FakeOpenStack
from tests.support.local_pair import no_traceback, slot_subnet, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")]

VIP_OFFSET = 200  # the virtual IP: far from the addresses the fake hands out (from .10)
OPENSTACK = {"image": "debian-12", "flavor": "m1.medium", "network": "pgaas-net"}


@pytest.fixture(scope="module")
def lab() -> Iterator[CloudLab]:
    with CloudLab.open("openstack") as lab:
        fake = FakeOpenStack(subnet=IPv4Network(slot_subnet(2)), root=lab.base / "vms").start()
        lab.fakes.append(fake)
        os.environ.update(fake.environment())
        yield lab


@pytest.fixture(autouse=True)
def nothing_left_behind(lab: CloudLab) -> Iterator[None]:
    yield
    lab.leave_nothing()  # only a test that failed midway leaves a pair: the next one starts clean


def openstack_pair(lab: CloudLab, name: str, nodes: list[str], options: dict[str, Any] | None = None,
                   **extra: Any) -> str:
    return lab.pair_doc(name, {"provider": "openstack", "nodes": [{"name": n} for n in nodes],
                               "openstack": {**OPENSTACK, **(options or {})}, **extra})


def test_a_pair_with_a_virtual_ip_and_a_witness_is_made_fails_over_and_goes(lab: CloudLab) -> None:
    fake, ws = lab.fakes[0], lab.ws
    vip = str(fake.subnet.network_address + VIP_OFFSET)
    ws.write("orders.yaml", openstack_pair(lab, "orders", ["orders-a", "orders-b"], virtual_ip=vip,
                                           witness={"name": "orders-w"}, failover={"reconnect_attempts": 0})
             + "---\nkind: Database\nmetadata: {name: shop, pair: orders}\nspec: {}\n")

    planned = ws.plan()
    assert planned.exit_code == 0, planned.output
    assert "+ host.orders.orders-a (openstack m1.medium, debian-12)" in planned.output
    assert "+ host.orders.orders-w (openstack m1.medium, debian-12)" in planned.output
    assert not fake.servers, "a plan creates nothing"

    ws.must_apply()
    servers = {s["name"]: s for s in fake.servers.values()}
    assert len(servers) == 3
    group = next(iter(fake.groups.values()))
    assert group["policy"] == "anti-affinity" and sorted(group["members"]) == sorted(s["id"] for s in servers.values())
    rules = {(r["protocol"], r["port_range_min"], r["remote_ip_prefix"]) for r in fake.rules.values()
             if r["direction"] == "ingress"}
    assert {("tcp", 22, str(fake.subnet)), ("tcp", 5432, str(fake.subnet)), ("vrrp", None, None)} <= rules
    node_ports = [p for p in fake.ports.values() if p["device_owner"] == "compute:nova"]
    witness_port = lab.name("orders", "orders-w")
    assert all(p["allowed_address_pairs"] == [{"ip_address": vip}] for p in node_ports if p["name"] != witness_port)
    assert [p["allowed_address_pairs"] for p in node_ports if p["name"] == witness_port] == [[]], \
        "the witness never holds the virtual IP"
    vip_ports = [p for p in fake.ports.values() if p["fixed_ips"][0]["ip_address"] == vip]
    assert len(vip_ports) == 1 and vip_ports[0]["device_owner"] == "", "the virtual IP is reserved by a port of its own"
    user_data = next(iter(servers.values()))["_user_data"]
    assert user_data.startswith("#cloud-config") and "postgresql-15-repmgr" in user_data
    assert "BEGIN OPENSSH PRIVATE KEY" not in user_data and lab.admin("orders") not in user_data
    vm = next(iter(fake.vms.values()))
    assert any(call.startswith("pg_dropcluster") for call in vm.stub_calls())

    # the data nodes replicate; the database is on both; the virtual IP reaches the primary
    status = lab.nodes()
    assert status["orders-a"]["role"] == "primary" and status["orders-b"]["role"] == "standby"
    standby_address = status["orders-b"]["address"].split(":")[0]
    wait_until(lambda: lab.sql("orders", standby_address, "SELECT 1 FROM pg_database WHERE datname = 'shop'"), 10,
               "the database on the standby")
    assert lab.primary_at("orders", vip) == "orders-a"

    replan = ws.plan("--detailed-exitcode")
    assert replan.exit_code == 0, replan.output
    no_traceback(replan)

    # the primary's server is lost: repmgrd promotes the standby, keepalived moves the virtual IP there
    primary_name = lab.name("orders", "orders-a")
    fake.power_off(primary_name)
    wait_until(lambda: lab.primary_at("orders", vip) == "orders-b", 30, "the virtual IP on the promoted standby")

    # apply starts the server again (Nova os-start) and rejoins it as a standby
    healed = ws.apply()
    assert healed.exit_code == 0, healed.output
    assert any(path.endswith("/action") for method, path in fake.requests if method == "POST")
    status = lab.nodes()
    assert status["orders-a"]["role"] == "standby" and status["orders-b"]["role"] == "primary"

    # someone deletes the standby's server in the console: the plan shows it made anew, apply does it
    fake.delete_behind_back(primary_name)
    drift = ws.plan()
    assert "+ host.orders.orders-a (openstack m1.medium, debian-12" in drift.output, drift.output
    ws.must_apply()
    assert len(fake.servers) == 3 and len([p for p in fake.ports.values() if p["device_owner"]]) == 3
    status = lab.nodes()
    assert status["orders-a"]["role"] == "standby" and status["orders-a"]["replication"].startswith("streaming")

    destroyed = ws.destroy()
    assert destroyed.exit_code == 0, destroyed.output
    assert "- host.orders.orders-a" in destroyed.output
    assert not fake.servers and not fake.ports and not fake.security_groups and not fake.groups
    assert not fake.vms
    ws.remove("orders.yaml")


# ---------------------------------------------------------------- what the cloud says, and what pgaasctl does

@dataclass
class Scenario:
    name: str
    arrange: Any  # (FakeOpenStack, server name) -> None
    outcome: str  # "" for success, else a phrase the error says
    options: dict[str, Any] | None = None
    environment: dict[str, str] | None = None


SCENARIOS = [
    Scenario("throttled twice, then made", lambda f, n: f.fail("POST", r"/servers$", 429, times=2, retry_after="0"), ""),
    Scenario("an operation in progress, then made",
             lambda f, n: f.fail("POST", r"/v2.0/ports$", 409, kind="neutron", retry_after="0"), ""),
    Scenario("BUILD then ERROR", lambda f, n: f.statuses.__setitem__(n, ["BUILD", "ERROR"]),
             "went to ERROR: No valid host was found"),
    Scenario("refused by policy", lambda f, n: f.fail("POST", r"/servers$", 403,
             message="Policy doesn't allow os_compute_api:servers:create to be performed."), "not allowed"),
    Scenario("quota exceeded (Nova)", lambda f, n: f.fail("POST", r"/servers$", 403, times=3,
             message="Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"),
             "quota exceeded"),
    Scenario("quota exceeded (Neutron)", lambda f, n: f.fail("POST", r"/v2.0/ports$", 409, times=3, kind="neutron",
             message="Quota exceeded for resources: ['port']."), "quota exceeded"),
    Scenario("never ACTIVE", lambda f, n: f.statuses.__setitem__(n, ["BUILD"] * 10_000), "is still BUILD after 1s",
             options={"timeout": 1}),
    Scenario("the answer to the create is lost", lambda f, n: f.fail("POST", r"/servers$", 503, after=True),
             "the cloud failed (503"),
    Scenario("a wrong password", lambda f, n: None, "authentication failed", environment={"OS_PASSWORD": "wrong"}),
    Scenario("an image that does not exist", lambda f, n: None, "image 'debian-13' not found",
             options={"image": "debian-13"}),
    Scenario("a network that does not exist", lambda f, n: None, "network 'elsewhere' not found",
             options={"network": "elsewhere"}),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_cloud_answers(lab: CloudLab, scenario: Scenario) -> None:
    """Each answer the cloud may give: a clear message and exit 1, nothing leaked; then (the cloud well again) the
    next apply finishes the pair with exactly one server, and destroy leaves nothing behind."""
    fake, ws = lab.fakes[0], lab.ws
    fake.faults.clear()
    fake.statuses.clear()
    ws.write("single.yaml", openstack_pair(lab, "single", ["single-a"], scenario.options))
    server = lab.name("single", "single-a")
    scenario.arrange(fake, server)
    saved = {k: os.environ[k] for k in scenario.environment or {}}
    os.environ.update(scenario.environment or {})
    try:
        first = ws.apply()
    finally:
        os.environ.update(saved)
    no_traceback(first)
    if not scenario.outcome:
        assert first.exit_code == 0, first.output
    else:
        assert first.exit_code == 1, first.output
        assert scenario.outcome in first.flat, first.output
        assert "Traceback" not in first.output
        fake.faults.clear()
        fake.statuses.clear()
        ws.write("single.yaml", openstack_pair(lab, "single", ["single-a"]))
        again = ws.apply()
        assert again.exit_code == 0, again.output
    made = [s for s in fake.servers.values() if s["name"] == server]
    assert len(made) == 1 and made[0]["status"] == "ACTIVE", "exactly one server, whatever happened before"
    assert len([p for p in fake.ports.values() if p["name"] == server]) == 1
    assert [n["role"] for n in lab.nodes().values()] == ["primary"]
    gone = ws.destroy()
    assert gone.exit_code == 0, gone.output
    assert not fake.servers and not fake.ports and not fake.security_groups and not fake.groups and not fake.vms
    ws.remove("single.yaml")


def test_floating_ips_are_how_pgaasctl_and_clients_reach_the_nodes(lab: CloudLab) -> None:
    fake, ws = lab.fakes[0], lab.ws
    fake.faults.clear()
    ws.write("public.yaml", openstack_pair(lab, "public", ["public-a"], {"floating_ip": True,
                                                                        "floating_network": "public"},
                                           tls={"mode": "verify-full"}))
    ws.must_apply()
    (fip,) = fake.floating_ips.values()
    port = fake.ports[fip["port_id"]]
    assert port["name"] == lab.name("public", "public-a") and fip["floating_ip_address"].startswith("203.0.113.")
    uri = ws.run("connection", "public", str(ws.specs)).stdout
    assert f"{fip['floating_ip_address']}:5432" in uri and port["fixed_ips"][0]["ip_address"] not in uri
    # verify-full through the floating IP: the node's certificate names it too
    import psycopg

    with psycopg.connect(uri.strip(), password=lab.admin("public"), user="postgres") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    gone = ws.destroy()
    assert gone.exit_code == 0, gone.output
    assert not fake.floating_ips and not fake.ports
    ws.remove("public.yaml")


def test_a_clouds_yaml_entry_zones_and_a_key_pair(lab: CloudLab) -> None:
    """The connection comes from a clouds.yaml entry named by `cloud:` (no OS_* variable set); the nodes go to the
    zones given, in order, with the Nova key pair for the image's default user."""
    fake, ws = lab.fakes[0], lab.ws
    fake.faults.clear()
    settings = fake.environment()
    clouds = lab.base / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"fake": {"region_name": "RegionOne", "identity_api_version": 3,
                                                          "auth": {"auth_url": settings["OS_AUTH_URL"],
                                                                   "username": settings["OS_USERNAME"],
                                                                   "password": settings["OS_PASSWORD"],
                                                                   "project_name": settings["OS_PROJECT_NAME"],
                                                                   "user_domain_name": "Default",
                                                                   "project_domain_name": "Default"}}}}))
    saved = dict(os.environ)
    for key in settings:
        os.environ.pop(key, None)
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    try:
        ws.write("zoned.yaml", openstack_pair(lab, "zoned", ["zoned-a", "zoned-b"], {
            "cloud": "fake", "availability_zones": ["az1", "az2"], "key_pair": "ops"}))
        ws.must_apply()
        made = {s["name"]: s for s in fake.servers.values()}
        assert made[lab.name("zoned", "zoned-a")]["OS-EXT-AZ:availability_zone"] == "az1"
        assert made[lab.name("zoned", "zoned-b")]["OS-EXT-AZ:availability_zone"] == "az2"
        assert {s["key_name"] for s in made.values()} == {"ops"}
        ws.write("zoned.yaml", openstack_pair(lab, "zoned", ["zoned-a", "zoned-b"], {
            "cloud": "fake", "availability_zones": ["az1", "az2"], "key_pair": "ops", "flavor": "m1.large"}))
        resized = ws.plan()
        assert resized.exit_code == 0, resized.output
        assert "node zoned-a: its server keeps what it was made with (size m1.medium -> m1.large)" in resized.flat
        gone = ws.destroy()
        assert gone.exit_code == 0, gone.output
        ws.write("zoned.yaml", openstack_pair(lab, "zoned", ["zoned-a"], {"cloud": "elsewhere"}))
        missing = ws.apply()
        no_traceback(missing)
        assert missing.exit_code == 1 and "cannot read the connection settings from cloud 'elsewhere'" in missing.flat, \
            missing.output
        ws.write("zoned.yaml", openstack_pair(lab, "zoned", ["zoned-a"], {"cloud": "fake"}))
        assert ws.destroy().exit_code == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    ws.remove("zoned.yaml")
    assert not fake.servers and not fake.ports


def test_an_apply_interrupted_between_port_and_server_is_cleaned_up_by_destroy(lab: CloudLab) -> None:
    fake, ws = lab.fakes[0], lab.ws
    fake.faults.clear()
    ws.write("half.yaml", openstack_pair(lab, "half", ["half-a"]))
    fake.fail("POST", r"/servers$", 500, message="Unexpected API Error.")
    assert ws.apply().exit_code == 1
    assert len(fake.ports) == 1 and not fake.servers and fake.security_groups
    planned = ws.run("plan", str(ws.specs), "--destroy")
    assert "remove what an unfinished apply made" in planned.output, planned.output
    gone = ws.destroy()
    assert gone.exit_code == 0, gone.output
    assert not fake.ports and not fake.security_groups and not fake.groups
    ws.remove("half.yaml")
