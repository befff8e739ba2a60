"""Cloud pairs' specs, the names pgaasctl gives cloud resources, what a server's first boot gets, and the refusals
of the keepalived helper that first boot installs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from pgaasctl.spec.models import GcpPairSpec, OpenStackPairSpec, PairSpec
from providers.cloud import first_boot, keepalived_helper, pair_prefix, resource_name

OPENSTACK = {"image": "debian-12", "flavor": "m1.medium", "network": "private"}
GCP = {"project": "p", "region": "europe-west1", "zones": ["europe-west1-b", "europe-west1-c"], "machine_type": "e2-small"}


def _pair(**spec: object) -> object:
    return TypeAdapter(PairSpec).validate_python({"nodes": [{"name": "a"}, {"name": "b"}], **spec})


def test_a_cloud_pair_needs_the_options_of_each_cloud_it_uses() -> None:
    assert isinstance(_pair(provider="openstack", openstack=OPENSTACK), OpenStackPairSpec)
    assert isinstance(_pair(provider="gcp", gcp=GCP), GcpPairSpec)
    with pytest.raises(ValidationError, match="add the `openstack:` options"):
        _pair(provider="openstack")
    with pytest.raises(ValidationError, match="b is created on gcp: add the `gcp:` options"):
        TypeAdapter(PairSpec).validate_python({"provider": "openstack", "openstack": OPENSTACK,
                                               "nodes": [{"name": "a"}, {"name": "b", "provider": "gcp"}]})


def test_a_pair_across_clouds_has_no_virtual_ip() -> None:
    with pytest.raises(ValidationError, match="a virtual IP needs every node on one cloud network"):
        TypeAdapter(PairSpec).validate_python({
            "provider": "openstack", "openstack": OPENSTACK, "gcp": GCP, "virtual_ip": "10.0.0.5",
            "nodes": [{"name": "a"}, {"name": "b", "provider": "gcp"}]})


@pytest.mark.parametrize("gcp, error", [
    ({**GCP, "zones": ["us-east1-b"]}, "is not in region"),
    ({**GCP, "zones": ["europe-west1-b", "europe-west1-b"]}, "zones must differ"),
    ({**GCP, "zones": []}, "at least 1"),
    ({**GCP, "machine_type": "e2 small; rm -rf /"}, "may use letters"),
])
def test_gcp_options_are_checked(gcp: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        _pair(provider="gcp", gcp=gcp)


def test_two_gcp_nodes_need_two_zones() -> None:
    with pytest.raises(ValidationError, match="a zone for each node"):
        _pair(provider="gcp", gcp={**GCP, "zones": ["europe-west1-b"]})
    assert _pair(provider="gcp", gcp={**GCP, "zones": ["europe-west1-b"]},
                 nodes=[{"name": "a"}, {"name": "b", "zone": "europe-west1-d"}])


@pytest.mark.parametrize("field, value", [("image", "debian\n12"), ("flavor", "$(reboot)"), ("network", "a b"),
                                           ("key_pair", "'k'"), ("ssh_key_file", "../x;y")])
def test_openstack_options_refuse_what_could_reach_a_shell_or_a_file(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        _pair(provider="openstack", openstack={**OPENSTACK, field: value})


def test_floating_ips_need_their_network() -> None:
    with pytest.raises(ValidationError, match="floating_ip needs floating_network"):
        _pair(provider="openstack", openstack={**OPENSTACK, "floating_ip": True})


def test_the_witness_is_not_a_node() -> None:
    with pytest.raises(ValidationError, match="has the name of a node"):
        _pair(provider="openstack", openstack=OPENSTACK, witness={"name": "a"})


@pytest.mark.parametrize("pair, node", [("orders", "orders-a"), ("Orders_Ünïcode", "Nödé_B"), ("x" * 63, "y" * 63),
                                        ("a", "b"), ("-", "_")])
def test_resource_names_are_valid_everywhere_and_never_collide(pair: str, node: str) -> None:
    owner = "0a1b2c3d"
    for name in (resource_name(pair, owner=owner), resource_name(pair, node, owner=owner),
                 resource_name(pair, node, "fip", owner=owner),
                 resource_name(pair, suffix="ig-europe-west1-b", owner=owner)[:63]):
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    assert resource_name(pair, node, owner=owner) == resource_name(pair, node, owner=owner), \
        "the same every time: found again by name"
    assert resource_name(pair, node, owner=owner).startswith(pair_prefix(pair, owner) + "-")
    assert resource_name("Orders", "a", owner=owner) != resource_name("orders", "a", owner=owner)
    assert resource_name(pair, "a-b", owner=owner) != resource_name(pair, "a_b", owner=owner)
    assert resource_name(pair, node, owner=owner) != resource_name(pair, node, owner="ffffffff"), \
        "another workspace's pair of the same name is never found by this one's names"


def test_first_boot_data_carries_the_public_key_and_no_secret() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyKeyKey pgaasctl"
    data = yaml.safe_load(first_boot("openstack", "orders", "orders-a", "/var/lib/pgaasctl", key))
    assert {"postgresql-15", "postgresql-15-repmgr", "keepalived", "sudo"} <= set(data["packages"])
    prepare = data["write_files"][0]["content"]
    assert key in prepare and "PRIVATE KEY" not in prepare
    assert "postgres ALL=(root) NOPASSWD: /usr/local/sbin/pgaasctl-keepalived" in prepare
    assert data["runcmd"] == [["/usr/local/sbin/pgaasctl-prepare"]]
    startup = first_boot("gcp", "orders", "orders-a", "/var/lib/pgaasctl", key)
    assert startup.startswith("#!/bin/sh") and key in startup and "apt-get install" in startup
    result = subprocess.run(["sh", "-n"], input=startup, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def _helper(tmp_path: Path, config: str, directory: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The helper as cloud-init installs it, with its base under tmp_path; started with a configuration to check.
    Only refusals are tried here (they exit before anything runs); starting keepalived is the integration tests'."""
    base = tmp_path / "base"
    node = directory or base / "orders" / "orders-a" / "etc" / "keepalived"
    node.mkdir(parents=True, exist_ok=True)
    (node / "keepalived.conf").write_text(config)
    helper = tmp_path / "pgaasctl-keepalived"
    helper.write_text(keepalived_helper(str(base)).replace("RUN=/run/pgaasctl-keepalived", f"RUN={tmp_path}/run"))
    helper.chmod(0o755)
    return subprocess.run([str(helper), "start", str(node)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("line", [
    'notify_master "/bin/sh -c id"', "vrrp_script chk {", 'script "/usr/bin/id"', "include /etc/passwd",
    "script_user root", 'file "/etc/shadow"', 'file "/tmp/../etc/shadow"', "interface eth0; reboot",
])
def test_the_helper_refuses_a_configuration_that_could_run_a_program(tmp_path: Path, line: str) -> None:
    result = _helper(tmp_path, f"global_defs {{\n    router_id x\n}}\n{line}\n")
    assert result.returncode == 3, result.stderr
    assert "refused line" in result.stderr
    assert not any((tmp_path / "run").glob("*/keepalived.conf")), "nothing refused is kept"


def test_the_helper_refuses_a_directory_outside_its_base(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    result = _helper(tmp_path, "global_defs {\n}\n", directory=outside)
    assert result.returncode == 2 and "is not under" in result.stderr
    link = tmp_path / "base" / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    result = subprocess.run([str(tmp_path / "pgaasctl-keepalived"), "start", str(link)], capture_output=True, text=True)
    assert result.returncode == 2 and "is not under" in result.stderr, "a symlink out of the base is followed, then refused"


def test_the_configuration_pgaasctl_writes_passes_the_helpers_check(tmp_path: Path) -> None:
    from ipaddress import IPv4Address, IPv4Network

    from pgaasctl.hosts.keepalived import keepalived_conf

    base = tmp_path / "base"
    conf = keepalived_conf("orders", "orders-a", "10.0.0.10", ["10.0.0.11"], IPv4Address("10.0.0.200"),
                           IPv4Network("10.0.0.0/24"), f"{base}/orders/orders-a/run/vip.track",
                           f"{base}/orders/orders-a/run/vip.timeline", interface="ens3")
    helper = tmp_path / "check.sh"
    text = keepalived_helper(str(base))
    checker = text[text.index("checked() {"):text.index('case "$action" in\nstart)')]
    helper.write_text(f"#!/bin/sh\nBASE='{base}'\n{checker}\nchecked \"$1\"\n")
    (tmp_path / "k.conf").write_text(conf)
    result = subprocess.run(["sh", str(helper), str(tmp_path / "k.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
