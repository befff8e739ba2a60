"""Client certificates of a pair's roles (`pgaasctl cert issue`, `cert revoke`, `cert list`): issued by the
workspace CA with the role as CN, written with their key (0600) and the CA file for psql and drivers, recorded in
the store by serial (never their key), and revoked into the revocation list the nodes load."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import BaseModel

from pgaasctl.errors import PgaasError
from pgaasctl.monitor.models import CheckResult
from pgaasctl.spec.desired import DesiredState
from pgaasctl.spec.models import CreatedPairSpec
from pgaasctl.store import Store
from pgaasctl.tls.authority import Issued, cert_pem, write_private
from pgaasctl.tls.workspace_ca import workspace_authority


class IssuedFiles(BaseModel):
    serial: str
    role: str
    pair: str
    cert: Path
    key: Path
    ca: Path
    not_after: str


class CertificateRecord(BaseModel):
    serial: str
    kind: str  # server | client
    pair: str
    subject: str  # the node, or the role
    issued_at: str
    not_after: str
    revoked_at: str | None = None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def new_client_certificate(desired: DesiredState, store: Store, pair_name: str, role: str,
                           days: int | None = None) -> tuple[Issued, bytes]:
    """A client certificate for a role of a pair with TLS (recorded by serial), and the CA's certificate."""
    pair = desired.pairs.get(pair_name)
    if pair is None:
        raise PgaasError(f"pair {pair_name!r} is not declared (pairs: {', '.join(sorted(desired.pairs)) or 'none'})")
    spec = pair.doc.spec
    if not isinstance(spec, CreatedPairSpec) or spec.tls.mode == "disable":
        raise PgaasError(f"pair {pair_name!r} has no TLS, so a client certificate would not be asked for",
                         "Set its tls.mode to require or verify-full and run `pgaasctl apply`.")
    declared = pair.roles.get(role)
    if declared is None:
        raise PgaasError(f"role {role!r} is not declared for pair {pair_name!r}",
                         "Declare it (kind: Role) with client_certificate: true.")
    if not declared.doc.spec.client_certificate and spec.tls.client_certificates != "required":
        raise PgaasError(f"role {role!r} logs in with a password, not a certificate",
                         "Give it client_certificate: true in its Role document and run `pgaasctl apply`.")
    if not declared.doc.spec.login:
        raise PgaasError(f"role {role!r} cannot log in (login: false)", "A certificate is for a login role.")
    authority = workspace_authority(desired.workspace.tls, store, create=False)
    issued = authority.issue_client(role, days or desired.workspace.tls.client_days)
    store.record_certificate(issued.serial, "client", pair_name, role, _iso(issued.cert.not_valid_before_utc),
                             _iso(issued.not_after))
    return issued, cert_pem(authority.cert)


def issue_client(desired: DesiredState, store: Store, pair_name: str, role: str, out: Path,
                 days: int | None = None) -> IssuedFiles:
    """`pgaasctl cert issue`: a new client certificate written to `out` with its key (0600) and the CA."""
    issued, ca_pem = new_client_certificate(desired, store, pair_name, role, days)
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        key, cert, ca = out / f"{role}.key", out / f"{role}.crt", out / "root.crt"
        write_private(key, issued.key_pem)  # libpq refuses a key others can read
        cert.write_bytes(issued.cert_pem)
        ca.write_bytes(ca_pem)
    except OSError as exc:
        raise PgaasError(f"--out {out}: cannot write the files there: {exc.strerror}",
                         "Name a directory you can write.") from None
    return IssuedFiles(serial=format(issued.serial, "x"), role=role, pair=pair_name, cert=cert, key=key, ca=ca,
                       not_after=_iso(issued.not_after))


def certificates(store: Store, pair: str | None = None) -> list[CertificateRecord]:
    return [CertificateRecord(serial=r[0], kind=r[1], pair=r[2], subject=r[3], issued_at=r[4], not_after=r[5],
                              revoked_at=r[6]) for r in store.certificate_records(pair)]


def revoke(store: Store, serial: str | None, pair: str | None, role: str | None) -> list[CertificateRecord]:
    """Revoke a certificate by serial, or every client certificate of a role on a pair; returns those revoked."""
    known = certificates(store)
    if serial is not None:
        chosen = [c for c in known if c.serial == serial.lower().removeprefix("0x")]
        if not chosen:
            raise PgaasError(f"no certificate has serial {serial!r}", "`pgaasctl cert list` shows them.")
    elif pair is not None and role is not None:
        chosen = [c for c in known if c.kind == "client" and c.pair == pair and c.subject == role]
        if not chosen:
            raise PgaasError(f"role {role!r} of pair {pair!r} has no certificate", "`pgaasctl cert list` shows them.")
    else:
        raise PgaasError("name a certificate: its serial, or --pair and --role", "`pgaasctl cert list` shows them.")
    now = _iso(dt.datetime.now(dt.timezone.utc))
    fresh = [c for c in chosen if c.revoked_at is None]
    for record in fresh:
        store.revoke_certificate(record.serial, now)
    return [c.model_copy(update={"revoked_at": now}) for c in fresh]


def expiring(store: Store, pair: str, within_days: int) -> list[CertificateRecord]:
    """The pair's certificates in use (the newest, unrevoked one of each node and role) that expire within
    `within_days`, soonest first."""
    newest: dict[tuple[str, str], CertificateRecord] = {}
    for record in certificates(store, pair):
        key = (record.kind, record.subject)
        if record.revoked_at is None and (key not in newest or record.issued_at > newest[key].issued_at):
            newest[key] = record
    limit = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=within_days)
    return sorted((r for r in newest.values() if dt.datetime.fromisoformat(r.not_after) <= limit),
                  key=lambda r: r.not_after)


def _days_left(record: CertificateRecord) -> int:
    return (dt.datetime.fromisoformat(record.not_after) - dt.datetime.now(dt.timezone.utc)).days


def expiry_warnings(store: Store, pair: str, within_days: int) -> list[str]:
    """What the plan says of certificates about to expire, and what to do."""
    out = []
    for record in expiring(store, pair, within_days):
        days = _days_left(record)
        when = f"expired on {record.not_after[:10]}" if days < 0 else f"expires on {record.not_after[:10]} (in {days} days)"
        if record.kind == "server":
            out.append(f"pair {pair!r}: the server certificate of node {record.subject} {when}; run `pgaasctl cert "
                       f"rotate {pair}`")
        else:
            out.append(f"pair {pair!r}: the client certificate of role {record.subject} {when}; issue a new one "
                       f"(`pgaasctl cert issue {record.subject} --pair {pair} --out DIR`)")
    return out


def expiry_checks(store: Store, pair: str, within_days: int) -> list[CheckResult]:
    """The health check `certificate expiry`: warn within `within_days`, critical within a week or once expired;
    one ok line when the pair has certificates and none is near its end."""
    found = []
    for record in expiring(store, pair, within_days):
        days = _days_left(record)
        remedy = (f"`pgaasctl cert rotate {pair}` (no downtime)" if record.kind == "server"
                  else f"`pgaasctl cert issue {record.subject} --pair {pair} --out DIR`, then revoke the old one")
        found.append(CheckResult(
            name="certificate expiry", status="critical" if days < 7 else "warn",
            node=record.subject if record.kind == "server" else "", value=f"{record.kind} certificate of "
            f"{record.subject}: {'expired' if days < 0 else f'{days} days left'} ({record.not_after[:10]})",
            remedy=remedy))
    if not found and certificates(store, pair):
        found.append(CheckResult(name="certificate expiry", status="ok",
                                 value=f"every certificate in use has more than {within_days} days left"))
    return found
