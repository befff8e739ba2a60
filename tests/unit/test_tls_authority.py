"""The workspace CA: what it issues verifies against it, carries the right names, and is refused when it should
be; its key is private on disk and encrypted under a passphrase."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgaasctl.errors import PgaasError
from pgaasctl.tls.authority import Authority


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority.create("pgaasctl test CA")


def test_a_server_certificate_names_every_address_and_is_signed_by_the_ca(ca: Authority) -> None:
    issued = ca.issue_server("orders-a", ["10.213.0.2", "10.213.0.10", "orders-a.internal", "10.213.0.2"])
    issued.cert.verify_directly_issued_by(ca.cert)
    names = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.213.0.2"),
                                                          ipaddress.ip_address("10.213.0.10")]
    assert names.get_values_for_type(x509.DNSName) == ["orders-a.internal"]
    usage = issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not issued.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued.not_after <= ca.cert.not_valid_after_utc


def test_a_client_certificate_carries_the_role_as_its_common_name(ca: Authority) -> None:
    issued = ca.issue_client("orders_app", days=10)
    issued.cert.verify_directly_issued_by(ca.cert)
    assert issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "orders_app"
    lifetime = issued.not_after - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=9) < lifetime <= dt.timedelta(days=10)


def test_the_revocation_list_names_the_revoked_serials(ca: Authority) -> None:
    one, two = ca.issue_client("a"), ca.issue_client("b")
    crl = x509.load_pem_x509_crl(ca.crl([(one.serial, dt.datetime.now(dt.timezone.utc))]))
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(one.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(two.serial) is None


def test_saved_with_a_private_key_file_and_loaded_back(ca: Authority, tmp_path: Path) -> None:
    ca.save(tmp_path / "ca.crt", tmp_path / "ca.key", b"s3cret passphrase")
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert b"ENCRYPTED" in (tmp_path / "ca.key").read_bytes()
    again = Authority.load(tmp_path / "ca.crt", tmp_path / "ca.key", b"s3cret passphrase")
    assert again.fingerprint == ca.fingerprint and again.fingerprint.startswith("sha256:")
    with pytest.raises(PgaasError, match="is encrypted"):
        Authority.load(tmp_path / "ca.crt", tmp_path / "ca.key", None)
    with pytest.raises(PgaasError, match="wrong passphrase"):
        Authority.load(tmp_path / "ca.crt", tmp_path / "ca.key", b"not it")


def test_a_brought_ca_must_be_a_ca_with_its_own_key(ca: Authority, tmp_path: Path) -> None:
    leaf = ca.issue_server("x", ["127.0.0.1"])
    (tmp_path / "leaf.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    with pytest.raises(PgaasError, match="not a CA certificate"):
        Authority.load(tmp_path / "leaf.crt", tmp_path / "leaf.key", None)
    other = Authority.create("another CA")
    other.save(tmp_path / "other.crt", tmp_path / "other.key", None)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    with pytest.raises(PgaasError, match="does not belong"):
        Authority.load(tmp_path / "ca.crt", tmp_path / "other.key", None)
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(PgaasError, match="not a PEM certificate"):
        Authority.load(tmp_path / "junk.crt", tmp_path / "other.key", None)
    with pytest.raises(PgaasError, match="No such file"):
        Authority.load(tmp_path / "missing.crt", tmp_path / "other.key", None)
