"""Opt-in smoke tests against a real cloud: a one-node pair is made, answers, and is destroyed. Skipped unless
asked for (README, Clouds, "What the cloud tests use"): every other cloud test uses local fakes of the APIs.

  PGAASCTL_SMOKE_OPENSTACK=1 with OS_CLOUD (a clouds.yaml entry) or the OS_* variables, and
      PGAASCTL_SMOKE_IMAGE, PGAASCTL_SMOKE_FLAVOR, PGAASCTL_SMOKE_NETWORK;
  PGAASCTL_SMOKE_GCP_PROJECT with PGAASCTL_SMOKE_GCP_REGION, PGAASCTL_SMOKE_GCP_ZONE and Application Default
      Credentials (PGAASCTL_SMOKE_GCP_SUBNET, PGAASCTL_SMOKE_GCP_NETWORK optional).
The machine running it must reach the servers on 22 and 5432 (the nodes' subnet, or allowed_* / source_ranges).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cloud_lab import CloudLab

pytestmark = pytest.mark.integration


@pytest.fixture
def lab() -> Iterator[CloudLab]:
    with CloudLab.open("smoke") as lab:
        yield lab


def _smoke(lab: CloudLab, spec: dict[str, Any]) -> None:
    name = f"smoke{uuid.uuid4().hex[:6]}"
    lab.ws.write("smoke.yaml", lab.pair_doc(name, {**spec, "nodes": [{"name": f"{name}-a"}]}))
    made = lab.ws.apply()
    try:
        assert made.exit_code == 0, made.output
        assert [n["role"] for n in lab.nodes().values()] == ["primary"]
        assert lab.ws.plan("--detailed-exitcode").exit_code == 0
    finally:
        gone = lab.ws.destroy()
        assert gone.exit_code == 0, gone.output


@pytest.mark.skipif(os.environ.get("PGAASCTL_SMOKE_OPENSTACK") != "1", reason="no real OpenStack asked for "
                    "(PGAASCTL_SMOKE_OPENSTACK=1)")
def test_a_real_openstack(lab: CloudLab) -> None:
    options = {"image": os.environ["PGAASCTL_SMOKE_IMAGE"], "flavor": os.environ["PGAASCTL_SMOKE_FLAVOR"],
               "network": os.environ["PGAASCTL_SMOKE_NETWORK"]}
    if os.environ.get("OS_CLOUD"):
        options["cloud"] = os.environ["OS_CLOUD"]
    _smoke(lab, {"provider": "openstack", "openstack": options})


@pytest.mark.skipif(not os.environ.get("PGAASCTL_SMOKE_GCP_PROJECT"), reason="no real Google Cloud asked for "
                    "(PGAASCTL_SMOKE_GCP_PROJECT)")
def test_a_real_google_cloud(lab: CloudLab) -> None:
    options = {"project": os.environ["PGAASCTL_SMOKE_GCP_PROJECT"], "region": os.environ["PGAASCTL_SMOKE_GCP_REGION"],
               "zones": [os.environ["PGAASCTL_SMOKE_GCP_ZONE"]], "machine_type": "e2-small",
               "network": os.environ.get("PGAASCTL_SMOKE_GCP_NETWORK", "default")}
    if os.environ.get("PGAASCTL_SMOKE_GCP_SUBNET"):
        options["subnet"] = os.environ["PGAASCTL_SMOKE_GCP_SUBNET"]
    _smoke(lab, {"provider": "gcp", "gcp": options})
