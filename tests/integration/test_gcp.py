"""provider gcp: the real google-cloud-compute (and google-auth, with a real service account key) against a local
fake of Compute Engine and Google's token endpoint (tests/support/fake_gcp.py). An instance the fake reports
RUNNING is an emulated VM running its startup script, so bootstrap, repmgr, the health check of the virtual IP's
load balancer and failover run for real; only the cloud is fake (and the load balancer's data path is not
emulated: the virtual IP is checked through the load balancer's health, as the API reports it)."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

import pytest

from tests.support.cloud_lab import CloudLab
from tests.support.fake_gcp import NETWORK, PROJECT, REGION, SUBNET, ZONES, FakeGcp
from tests.support.local_pair import no_traceback, slot_subnet, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")]


@pytest.fixture(scope="module")
def lab() -> Iterator[CloudLab]:
    with CloudLab.open("gcp") as lab:
        fake = FakeGcp(subnet=IPv4Network(slot_subnet(3)), root=lab.base / "vms").start()
        lab.fakes.append(fake)
        yield lab


@pytest.fixture(autouse=True)
def nothing_left_behind(lab: CloudLab) -> Iterator[None]:
    yield
    lab.leave_nothing()  # only a test that failed midway leaves a pair: the next one starts clean


def gcp_options(lab: CloudLab, **extra: Any) -> dict[str, Any]:
    fake = lab.fakes[0]
    key = fake.service_account_file(lab.base / "service-account.json")
    return {"project": PROJECT, "region": REGION, "zones": list(ZONES[:2]), "machine_type": "e2-standard-2",
            "network": NETWORK, "subnet": SUBNET, "credentials_file": str(key), "endpoint": fake.url, **extra}


def gcp_pair(lab: CloudLab, name: str, nodes: list[str], options: dict[str, Any] | None = None, **extra: Any) -> str:
    return lab.pair_doc(name, {"provider": "gcp", "nodes": [{"name": n} for n in nodes],
                               "gcp": gcp_options(lab, **(options or {})), **extra})


def health_of(address: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}:8008/primary", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_a_pair_in_two_zones_behind_a_load_balancer_is_made_fails_over_and_goes(lab: CloudLab) -> None:
    fake, ws = lab.fakes[0], lab.ws
    vip = str(fake.subnet.network_address + 250)
    ws.write("orders.yaml", gcp_pair(lab, "orders", ["orders-a", "orders-b"], virtual_ip=vip,
                                     failover={"reconnect_attempts": 0}))
    planned = ws.plan()
    assert "+ host.orders.orders-a (gcp e2-standard-2, debian-12)" in planned.output, planned.output
    assert not fake.instances, "a plan creates nothing"

    ws.must_apply()
    a, b = (fake.instances[lab.name("orders", n)] for n in ("orders-a", "orders-b"))
    assert a["zone"].endswith(ZONES[0]) and b["zone"].endswith(ZONES[1]), "the nodes go in different zones"
    script = a["metadata"]["items"][0]["value"]
    assert script.startswith("#!/bin/sh") and "postgresql-15-repmgr" in script and lab.admin("orders") not in script
    firewall = fake.tables["firewalls"][lab.name("orders", suffix="fw")]
    assert firewall["sourceRanges"] == [str(fake.subnet)] and firewall["allowed"] == [
        {"IPProtocol": "tcp", "ports": ["22", "5432"]}]
    checkers = fake.tables["firewalls"][lab.name("orders", suffix="hc-fw")]
    assert checkers["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22"]
    rule = next(iter(fake.tables["forwardingRules"].values()))
    assert rule["IPAddress"] == vip and rule["ports"] == ["5432"] and rule["loadBalancingScheme"] == "INTERNAL"
    service = next(iter(fake.tables["backendServices"].values()))
    assert len(service["backends"]) == 2
    check = next(iter(fake.tables["healthChecks"].values()))
    assert check["httpHealthCheck"] == {"port": 8008, "requestPath": "/primary"}
    assert sorted(len(m) for m in fake.members.values()) == [1, 1], "one instance group per zone, one member each"

    nodes = lab.nodes()
    address = {n: nodes[n]["address"].split(":")[0] for n in nodes}
    assert nodes["orders-a"]["role"] == "primary" and nodes["orders-a"]["virtual_ip"] is True
    assert health_of(address["orders-a"]) == 200 and health_of(address["orders-b"]) == 503
    assert ws.plan("--detailed-exitcode").exit_code == 0

    # the primary's instance is lost: the standby is promoted and the load balancer's health follows
    fake.power_off(lab.name("orders", "orders-a"))
    wait_until(lambda: health_of(address["orders-b"]) == 200, 30, "the health check passing on the promoted standby")
    # the promote hook takes the address just before pg_promote(): a client that comes in between is refused
    # writes and retries; the promotion itself follows
    wait_until(lambda: lab.primary_at("orders", address["orders-b"]) == "orders-b", 30, "orders-b to serve as primary")
    wait_until(lambda: lab.nodes()["orders-b"].get("virtual_ip") is True, 10, "status to show the VIP on orders-b")

    healed = ws.apply()
    assert healed.exit_code == 0, healed.output
    nodes = lab.nodes()
    assert nodes["orders-a"]["role"] == "standby" and health_of(address["orders-a"]) == 503

    fake.delete_behind_back(lab.name("orders", "orders-a"))
    drift = ws.plan()
    assert "+ host.orders.orders-a (gcp e2-standard-2, debian-12" in drift.output, drift.output
    ws.must_apply()
    assert lab.nodes()["orders-a"]["replication"].startswith("streaming")
    assert sorted(len(m) for m in fake.members.values()) == [1, 1], "the new instance joined its zone's group"

    gone = ws.destroy()
    assert gone.exit_code == 0, gone.output
    assert not fake.instances and not any(fake.tables.values()) and not fake.vms
    ws.remove("orders.yaml")


@dataclass
class Scenario:
    name: str
    arrange: Any
    outcome: str
    options: dict[str, Any] | None = None


SCENARIOS = [
    Scenario("throttled, then made", lambda f, n: f.fail("POST", r"/instances$", 429, times=2), ""),
    Scenario("not ready, then made", lambda f, n: f.fail("POST", r"/global/firewalls$", 409), ""),
    Scenario("the operation fails", lambda f, n: f.operation_errors.__setitem__(n, (
        "ZONE_RESOURCE_POOL_EXHAUSTED", "The zone does not have enough resources available to fulfill the request.")),
        "ZONE_RESOURCE_POOL_EXHAUSTED"),
    Scenario("refused by IAM", lambda f, n: f.fail("POST", r"/instances$", 403), "not allowed"),
    Scenario("quota exceeded (the call)", lambda f, n: f.fail("POST", r"/instances$", 403, times=3,
             message="Quota 'CPUS' exceeded. Limit: 8.0 in region europe-west1.", reason="quotaExceeded"),
             "quota exceeded"),
    Scenario("quota exceeded (the operation)", lambda f, n: f.operation_errors.__setitem__(n, (
        "QUOTA_EXCEEDED", "Quota 'IN_USE_ADDRESSES' exceeded. Limit: 8.0 in region europe-west1.")), "quota exceeded"),
    Scenario("never RUNNING", lambda f, n: f.statuses.__setitem__(n, ["STAGING"] * 10_000),
             "is still STAGING after 1s", options={"timeout": 1}),
    Scenario("the answer to the insert is lost", lambda f, n: f.fail("POST", r"/instances$", 503, after=True),
             "failed (503"),
    Scenario("an image that does not exist", lambda f, n: None, "RESOURCE_NOT_FOUND",
             options={"image": "projects/debian-cloud/global/images/family/debian-13"}),
    Scenario("a subnet that does not exist", lambda f, n: None, "subnet 'elsewhere' not found",
             options={"subnet": "elsewhere"}),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_cloud_answers(lab: CloudLab, scenario: Scenario) -> None:
    fake, ws = lab.fakes[0], lab.ws
    fake.faults.clear()
    fake.statuses.clear()
    fake.operation_errors.clear()
    instance = lab.name("single", "single-a")
    ws.write("single.yaml", gcp_pair(lab, "single", ["single-a"], scenario.options))
    scenario.arrange(fake, instance)
    first = ws.apply()
    no_traceback(first)
    if scenario.outcome:
        assert first.exit_code == 1, first.output
        assert scenario.outcome in first.flat, first.output
        fake.faults.clear()
        fake.statuses.clear()
        ws.write("single.yaml", gcp_pair(lab, "single", ["single-a"]))
        again = ws.apply()
        assert again.exit_code == 0, again.output
    else:
        assert first.exit_code == 0, first.output
    assert list(fake.instances) == [instance] and fake.instances[instance]["status"] == "RUNNING"
    assert [n["role"] for n in lab.nodes().values()] == ["primary"]
    gone = ws.destroy()
    assert gone.exit_code == 0, gone.output
    assert not fake.instances and not any(fake.tables.values()) and not fake.vms
    ws.remove("single.yaml")


def test_application_default_credentials(lab: CloudLab) -> None:
    """No credentials_file: Application Default Credentials, here GOOGLE_APPLICATION_CREDENTIALS naming the key."""
    fake, ws = lab.fakes[0], lab.ws
    fake.faults.clear()
    options = gcp_options(lab)
    key = options.pop("credentials_file")
    ws.write("adc.yaml", lab.pair_doc("adc", {"provider": "gcp", "nodes": [{"name": "adc-a"}], "gcp": options}))
    saved = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
    try:
        ws.must_apply()
        assert list(fake.instances) == [lab.name("adc", "adc-a")]
        assert ws.destroy().exit_code == 0
    finally:
        if saved is None:
            os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        else:
            os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = saved
    ws.remove("adc.yaml")
    assert not fake.instances


def test_a_wrong_key_is_refused_with_a_clear_message(lab: CloudLab) -> None:
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    options = gcp_options(lab)
    stolen = json.loads(open(options["credentials_file"]).read())
    stolen["private_key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    wrong = lab.base / "wrong-key.json"
    wrong.write_text(json.dumps(stolen))
    lab.ws.write("single.yaml", gcp_pair(lab, "single", ["single-a"], {"credentials_file": str(wrong)}))
    result = lab.ws.apply()
    no_traceback(result)
    assert result.exit_code == 1 and "authentication failed" in result.flat, result.output
    assert not lab.fakes[0].instances
    lab.ws.write("single.yaml", gcp_pair(lab, "single", ["single-a"]))
    assert lab.ws.destroy().exit_code == 0  # what the failed apply recorded goes with it
    lab.ws.remove("single.yaml")
