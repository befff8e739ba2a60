"""The workspace's certificate authority (the `cryptography` library): made once, or brought by the user as a
certificate and key file; the key on disk with mode 0600, encrypted when a passphrase is given in the environment.
It issues server certificates (the node's addresses and the pair's virtual IP as subject alternative names),
client certificates (CN = the role) and the revocation list."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgaasctl.errors import PgaasError

CA_DAYS = 3650
CERT_DAYS = 365
CLOCK_SKEW = dt.timedelta(minutes=5)  # a certificate is valid from a little before it was made


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """A file only its owner reads (0600 from its creation, never wider for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


@dataclass
class Issued:
    """A certificate and its key, as PEM."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


@dataclass
class Authority:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @classmethod
    def create(cls, name: str, days: int = CA_DAYS) -> Authority:
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64]),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pgaasctl")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path, passphrase: bytes | None) -> Authority:
        """A CA from its files (made by pgaasctl or brought by the user); clear errors for what is wrong."""
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except OSError as exc:
            raise PgaasError(f"the CA certificate {cert_file}: {exc.strerror}") from None
        except ValueError:
            raise PgaasError(f"the CA certificate {cert_file} is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=passphrase)
        except OSError as exc:
            raise PgaasError(f"the CA key {key_file}: {exc.strerror}") from None
        except TypeError:
            raise PgaasError(f"the CA key {key_file} is encrypted", "Set its passphrase in the environment "
                             "variable the Workspace's tls.passphrase_env names.") from None
        except ValueError:
            raise PgaasError(f"the CA key {key_file} does not load (a wrong passphrase, or not a PEM key)") from None
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value \
            if any(isinstance(e.value, x509.BasicConstraints) for e in cert.extensions) else None
        if constraints is None or not constraints.ca:
            raise PgaasError(f"the certificate {cert_file} is not a CA certificate (basicConstraints CA:TRUE)")
        if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
            raise PgaasError(f"the CA key {key_file} does not belong to the certificate {cert_file}")
        return cls(cert=cert, key=key)  # type: ignore[arg-type]

    def save(self, cert_file: Path, key_file: Path, passphrase: bytes | None) -> None:
        write_private(key_file, key_pem(self.key, passphrase))  # type: ignore[arg-type]
        cert_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_file.write_bytes(self.cert_pem)

    def _issue(self, subject: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier,
               days: int) -> Issued:
        key = _new_key()
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - CLOCK_SKEW)
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_agreement=True,
                                                content_commitment=False, data_encipherment=False, key_cert_sign=False,
                                                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),  # type: ignore[arg-type]
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Issued(cert=builder.sign(self.key, hashes.SHA256()), key=key)

    def issue_server(self, name: str, addresses: list[str], days: int = CERT_DAYS) -> Issued:
        """A server certificate for a node: every address (an IP, or a host name) as a subject alternative name,
        which is what `sslmode=verify-full` checks."""
        sans: list[x509.GeneralName] = []
        for address in dict.fromkeys(a for a in addresses if a):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                sans.append(x509.DNSName(address))
        return self._issue(name, sans, ExtendedKeyUsageOID.SERVER_AUTH, days)

    def issue_client(self, role: str, days: int = CERT_DAYS) -> Issued:
        """A client certificate whose CN is the role: what PostgreSQL's `cert` method matches the user to."""
        return self._issue(role, [], ExtendedKeyUsageOID.CLIENT_AUTH, days)

    def crl(self, revoked: list[tuple[int, dt.datetime]], days: int = 30) -> bytes:
        """The revocation list of these (serial, when) pairs, signed by the CA, as PEM."""
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - CLOCK_SKEW).next_update(now + dt.timedelta(days=days)))
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]
