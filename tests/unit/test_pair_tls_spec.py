"""A pair's tls and clients settings, and the pg_hba rules they make."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pgaasctl.spec.models import LocalPairSpec, PairTls
from pgaasctl.tls.node_files import client_parameters, pg_hba


def _pair(**spec: object) -> LocalPairSpec:
    return LocalPairSpec.model_validate({"provider": "local", "nodes": [{"name": "a"}], **spec})


def test_modes_and_what_they_refuse() -> None:
    assert _pair().tls.mode == "disable"
    assert _pair(tls={"mode": "verify-full"}).tls.mode == "verify-full"
    with pytest.raises(ValidationError, match="needs TLS"):
        _pair(tls={"client_certificates": "required"})
    with pytest.raises(ValidationError):
        _pair(tls={"mode": "prefer"})


@pytest.mark.parametrize("given, error", [([True], "written like"), ([5], "written like"),
                                          (["10.1.0.1/16"], "host bits"), (["nowhere"], "not a network")])
def test_client_networks_are_networks_written_as_text(given: list[object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        _pair(clients=given)


def test_client_networks_are_kept_normalised() -> None:
    assert _pair(clients=["10.20.0.0/16", " 192.168.1.7 ", "::1"]).clients == ["10.20.0.0/16", "192.168.1.7/32", "::1/128"]


def test_pg_hba_for_each_mode() -> None:
    plain = pg_hba(PairTls(), networks=["10.213.0.0/24"])
    assert "host    all          all      10.213.0.0/24 scram-sha-256" in plain and "hostssl" not in plain
    assert "0.0.0.0/0" not in plain
    required = pg_hba(PairTls(mode="require"), networks=["10.213.0.0/24"])
    assert "hostnossl all       all      10.213.0.0/24 reject" in required
    assert "\nhost " not in required  # no plaintext rule but the rejection
    certs = pg_hba(PairTls(mode="verify-full", client_certificates="required"), networks=["10.0.0.0/8"]).splitlines()
    admins = next(i for i, line in enumerate(certs) if "postgres,repmgr" in line)
    everyone = next(i for i, line in enumerate(certs) if line.endswith(" cert"))
    assert admins < everyone  # pgaasctl's own logins keep their password; everyone else shows a certificate
    named = pg_hba(PairTls(mode="require"), ['Shop-App', 'o"dd'], ["10.0.0.0/8"])
    assert 'hostssl all         "Shop-App","o""dd" 10.0.0.0/8 cert' in named


def test_what_repmgr_and_replication_connect_with() -> None:
    assert client_parameters(PairTls(), "/etc/x") == ""
    assert client_parameters(PairTls(mode="require"), "/etc/x") == " sslmode=require"
    assert client_parameters(PairTls(mode="verify-full"), "/etc/x") == \
        " sslmode=verify-full sslrootcert=/etc/x/tls/root.crt"
