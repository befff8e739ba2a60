"""Benchmark: what the cloud providers add around the cloud's own calls, and how many calls they make.

Prints figures; asserts nothing about speed. Exits non-zero when pgaasctl misbehaves (a command fails, a destroy
leaves a resource behind).

    .venv/bin/python bench/clouds.py [--trials 3]

One workspace, three pairs of two asynchronous nodes, created and destroyed `--trials` times each:
  local      provider local on the namespace network (subnet 10.213.252.0/24): the baseline;
  openstack  through openstacksdk against tests/support/fake_openstack.py (servers: emulated VMs on
             10.213.253.0/24);
  gcp        through google-cloud-compute against tests/support/fake_gcp.py (10.213.254.0/24).
For each: `pgaasctl apply` of the new pair (wall clock, whole process), the time the fake spent answering (its
VM boots included: the cloud's share), hence pgaasctl's own time; then a plan with no change and `pgaasctl
destroy`. Medians, the ratio to local, and the API calls of each command (the fakes count them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Failure, fmt, machine, pgaasctl_command, pgaasctl_env, print_done, tail, timed_run  # noqa: E402
from tests.support.fake_gcp import NETWORK, PROJECT, REGION, SUBNET, ZONES, FakeGcp  # noqa: E402
from tests.support.fake_openstack import FakeOpenStack  # noqa: E402

LOCAL_SUBNET, OPENSTACK_SUBNET, GCP_SUBNET = "10.213.252.0/24", "10.213.253.0/24", "10.213.254.0/24"


class CloudBench:
    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise SystemExit("run as root: the namespace network and the emulated VMs need it")
        self.base = Path(tempfile.mkdtemp(prefix="pgaasctl-bench-clouds-", dir="/dev/shm"))
        self.base.chmod(0o755)
        self.specs = self.base / "specs"
        self.specs.mkdir()
        (self.specs / "workspace.yaml").write_text(yaml.safe_dump({"kind": "Workspace", "spec": {
            "store": f"sqlite:///{self.base}/pgaasctl.db", "local_dir": str(self.base / "local"),
            "network": "namespaces", "subnet": LOCAL_SUBNET, "cloud_dir": str(self.base / "cloud"),
            "tls": {"ca_dir": str(self.base / "tls")}}}))
        self.openstack = FakeOpenStack(subnet=IPv4Network(OPENSTACK_SUBNET), root=self.base / "os-vms").start()
        self.gcp = FakeGcp(subnet=IPv4Network(GCP_SUBNET), root=self.base / "gcp-vms").start()
        self.key = self.gcp.service_account_file(self.base / "service-account.json")
        self.env = {**pgaasctl_env(), **self.openstack.environment()}
        self.cli = pgaasctl_command()

    def pair(self, provider: str) -> str:
        spec: dict[str, Any] = {"provider": provider, "replication": "asynchronous", "deletion_protection": False,
                                "nodes": [{"name": f"{provider}-a"}, {"name": f"{provider}-b"}]}
        if provider == "openstack":
            spec["openstack"] = {"image": "debian-12", "flavor": "m1.medium", "network": "pgaas-net"}
        if provider == "gcp":
            spec["gcp"] = {"project": PROJECT, "region": REGION, "zones": list(ZONES[:2]), "machine_type": "e2-small",
                           "network": NETWORK, "subnet": SUBNET, "credentials_file": str(self.key),
                           "endpoint": self.gcp.url}
        return yaml.safe_dump({"kind": "Pair", "metadata": {"name": f"bench-{provider}"}, "spec": spec})

    def fake(self, provider: str) -> Any:
        return {"openstack": self.openstack, "gcp": self.gcp}.get(provider)

    def command(self, provider: str, *args: str, expect: tuple[int, ...] = (0,)) -> tuple[float, float, int]:
        """(wall seconds, seconds the fake spent answering, API calls) of one pgaasctl command."""
        fake = self.fake(provider)
        calls, busy = (len(fake.requests), fake.busy) if fake else (0, 0.0)
        elapsed, proc = timed_run([*self.cli, *args, str(self.specs)], self.base, self.env)
        if proc.returncode not in expect:
            raise Failure(f"`pgaasctl {' '.join(args)}` ({provider}) exited {proc.returncode}:\n{tail(proc.stdout)}\n"
                          f"{tail(proc.stderr)}")
        if fake is None:
            return elapsed, 0.0, 0
        return elapsed, fake.busy - busy, len(fake.requests) - calls

    def leftovers(self) -> list[str]:
        left = [f"openstack {kind}" for kind, table in (("server", self.openstack.servers), ("port", self.openstack.ports),
                ("security group", self.openstack.security_groups), ("server group", self.openstack.groups)) if table]
        left += [f"gcp {kind}" for kind, table in self.gcp.tables.items() if table]
        left += ["gcp instance"] if self.gcp.instances else []
        return left

    def close(self) -> None:
        for path in self.specs.glob("pair-*.yaml"):
            try:
                self.command(path.stem.removeprefix("pair-"), "destroy", "--auto-approve")
            except Failure as exc:
                print(f"cleanup: {exc}", flush=True)
        self.openstack.close()
        self.gcp.close()
        shutil.rmtree(self.base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    bench = CloudBench()
    print(f"clouds: {args.trials} trial(s) of create, plan, destroy per provider; {machine()}", flush=True)
    figures: dict[str, dict[str, list[float]]] = {}
    try:
        for trial in range(args.trials):
            for provider in ("local", "openstack", "gcp"):
                spec = bench.specs / f"pair-{provider}.yaml"
                spec.write_text(bench.pair(provider))
                started = time.perf_counter()
                apply = bench.command(provider, "apply", "--auto-approve")
                plan = bench.command(provider, "plan", "--detailed-exitcode")
                destroy = bench.command(provider, "destroy", "--auto-approve")
                spec.unlink()
                row = figures.setdefault(provider, {})
                for name, (wall, busy, calls) in (("apply", apply), ("plan", plan), ("destroy", destroy)):
                    row.setdefault(f"{name} s", []).append(wall)
                    row.setdefault(f"{name} cloud s", []).append(busy)
                    row.setdefault(f"{name} calls", []).append(calls)
                print(f"  trial {trial + 1} {provider}: apply {fmt(apply[0])} ({apply[2]} calls), plan {fmt(plan[0])} "
                      f"({plan[2]} calls), destroy {fmt(destroy[0])} ({destroy[2]} calls); "
                      f"{time.perf_counter() - started:.1f} s in all", flush=True)
        left = bench.leftovers()
        if left:
            raise Failure(f"destroy left {', '.join(left)}")
    finally:
        bench.close()

    def median(provider: str, key: str) -> float:
        return statistics.median(figures[provider][key])

    base = median("local", "apply s")
    print("\nper provider, medians (a new pair of two nodes):")
    print(f"  {'provider':10} {'apply':>8} {'x local':>8} {'cloud':>8} {'pgaasctl':>9} {'calls':>6} "
          f"{'plan':>7} {'calls':>6} {'destroy':>8} {'calls':>6}")
    for provider in ("local", "openstack", "gcp"):
        apply, cloud = median(provider, "apply s"), median(provider, "apply cloud s")
        print(f"  {provider:10} {apply:7.2f}s {apply / base:7.2f}x {cloud:7.2f}s {apply - cloud:8.2f}s "
              f"{median(provider, 'apply calls'):6.0f} {median(provider, 'plan s'):6.2f}s {median(provider, 'plan calls'):6.0f} "
              f"{median(provider, 'destroy s'):7.2f}s {median(provider, 'destroy calls'):6.0f}")
    print("  (cloud: the fake's time answering, its emulated VM boots included; pgaasctl: apply minus that)")
    print_done()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
