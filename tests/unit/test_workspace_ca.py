"""The workspace's CA as commands find it: made once (the store keeps its fingerprint), brought by the user, and
never silently replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgaasctl.errors import PgaasError
from pgaasctl.spec.models import WorkspaceTls
from pgaasctl.store import open_store
from pgaasctl.tls.authority import Authority
from pgaasctl.tls.workspace_ca import FINGERPRINT_KEY, resolved, workspace_authority


def test_made_once_then_found_and_a_swapped_ca_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", mode="create")
    settings = resolved(WorkspaceTls(), tmp_path)
    with pytest.raises(PgaasError, match="has no CA yet"):
        workspace_authority(settings, store, create=False)
    made = workspace_authority(settings, store, create=True)
    assert (tmp_path / "state" / "tls" / "ca.key").exists()
    assert (tmp_path / "state" / "tls" / ".gitignore").read_text().splitlines()[-1] == "*"  # never committed
    assert store.meta_value(FINGERPRINT_KEY) == made.fingerprint
    assert workspace_authority(settings, store, create=False).fingerprint == made.fingerprint
    store.record_certificate(1, "server", "orders", "orders-a", "2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")
    Authority.create("an impostor").save(tmp_path / "state" / "tls" / "ca.crt", tmp_path / "state" / "tls" / "ca.key", None)
    with pytest.raises(PgaasError, match="is not the one this workspace's certificates come from"):
        workspace_authority(settings, store, create=True)
    for name in ("ca.crt", "ca.key"):
        (tmp_path / "state" / "tls" / name).unlink()
    with pytest.raises(PgaasError, match="CA is gone"):
        workspace_authority(settings, store, create=True)  # never a new CA behind the pairs' backs
    store.forget_certificates("orders")  # what a destroy of the pair does
    assert workspace_authority(settings, store, create=True).fingerprint != made.fingerprint  # nothing needs the old
    store.close()


def test_a_brought_ca_with_its_passphrase_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", mode="create")
    ours = Authority.create("the company CA")
    ours.save(tmp_path / "pki" / "ca.pem", tmp_path / "pki" / "ca-key.pem", b"correct horse")
    settings = resolved(WorkspaceTls(ca_cert="pki/ca.pem", ca_key="pki/ca-key.pem", passphrase_env="PKI_PASS"), tmp_path)
    monkeypatch.delenv("PKI_PASS", raising=False)
    with pytest.raises(PgaasError, match=r"\$PKI_PASS is empty"):
        workspace_authority(settings, store, create=True)
    monkeypatch.setenv("PKI_PASS", "correct horse")
    assert workspace_authority(settings, store, create=True).fingerprint == ours.fingerprint
    assert not (tmp_path / "state").exists()  # a brought CA: nothing made beside it
    store.close()
