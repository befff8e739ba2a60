"""The workspace's CA where commands find it: the files the Workspace names (a CA the user brings), or the one
pgaasctl made under state/tls at first need. The store records its fingerprint, never its key; a CA on disk that
is not the one the pairs' certificates came from is an error, not a silent switch."""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from pgaasctl.errors import PgaasError
from pgaasctl.spec.models import PairTls, WorkspaceTls
from pgaasctl.store import Store
from pgaasctl.tls.authority import Authority, Issued, write_private
from pgaasctl.tls.node_files import NodeTls

FINGERPRINT_KEY = "tls_ca_fingerprint"


@dataclass(frozen=True)
class CaFiles:
    cert: Path
    key: Path
    brought: bool  # named in the Workspace (else pgaasctl's own under state/tls)


def ca_files(settings: WorkspaceTls) -> CaFiles:
    """The CA's files (workspace.load made the settings' paths absolute, against the workspace root)."""
    if settings.ca_cert is not None and settings.ca_key is not None:
        return CaFiles(cert=Path(settings.ca_cert), key=Path(settings.ca_key), brought=True)
    return CaFiles(cert=Path(settings.ca_dir) / "ca.crt", key=Path(settings.ca_dir) / "ca.key", brought=False)


def resolved(settings: WorkspaceTls, root: Path) -> WorkspaceTls:
    """The settings with their paths absolute, against the workspace root."""
    def absolute(value: str | None) -> str | None:
        return None if value is None else str(Path(value) if Path(value).is_absolute() else root / value)

    return settings.model_copy(update={"ca_dir": absolute(settings.ca_dir), "ca_cert": absolute(settings.ca_cert),
                                       "ca_key": absolute(settings.ca_key)})


def _passphrase(settings: WorkspaceTls) -> bytes | None:
    if settings.passphrase_env is None:
        return None
    value = os.environ.get(settings.passphrase_env)
    if not value:
        raise PgaasError(f"the CA key's passphrase is not set: ${settings.passphrase_env} is empty",
                         f"Export {settings.passphrase_env} (the Workspace's tls.passphrase_env names it).")
    return value.encode()


def _in_use(store: Store) -> bool:
    """Whether certificates of the recorded CA are in use: any not revoked, of a pair not destroyed."""
    return any(record[6] is None for record in store.certificate_records())


_MAKING = threading.Lock()  # pairs applied in parallel: one CA, made once


def workspace_authority(settings: WorkspaceTls, store: Store, create: bool) -> Authority:
    """The CA; with `create`, made (and its fingerprint recorded) when the workspace has none yet."""
    with _MAKING:
        return _workspace_authority(settings, store, create)


def _workspace_authority(settings: WorkspaceTls, store: Store, create: bool) -> Authority:
    files = ca_files(settings)
    passphrase = _passphrase(settings)
    if not files.cert.exists() and not files.brought:
        if not create:
            raise PgaasError(f"the workspace has no CA yet ({files.cert})", "`pgaasctl apply` of a pair with tls "
                             "makes one.")
        if store.meta_value(FINGERPRINT_KEY) is not None and _in_use(store):
            raise PgaasError(f"the workspace's CA is gone ({files.cert} is missing) but its pairs' certificates "
                             "come from it", f"Put the CA's files back in {files.cert.parent}, or name them in the "
                             "Workspace's tls.ca_cert and tls.ca_key.")
        authority = Authority.create(f"pgaasctl CA ({files.cert.parent.parent.parent.name or 'workspace'})")
        authority.save(files.cert, files.key, passphrase)
        # the CA's directory is often inside the spec directory's git repository: its key must never be committed
        (files.cert.parent / ".gitignore").write_text("# written by pgaasctl: the workspace CA's key, never for git\n*\n")
        store.set_meta_value(FINGERPRINT_KEY, authority.fingerprint)
        return authority
    authority = Authority.load(files.cert, files.key, passphrase)
    recorded = store.meta_value(FINGERPRINT_KEY)
    if recorded is None:
        if create:
            store.set_meta_value(FINGERPRINT_KEY, authority.fingerprint)
    elif recorded != authority.fingerprint:
        if create and not _in_use(store):  # no certificate of the old CA is in use: this one is the CA now
            store.set_meta_value(FINGERPRINT_KEY, authority.fingerprint)
            return authority
        raise PgaasError(f"the CA in {files.cert} ({authority.fingerprint[:23]}…) is not the one this workspace's "
                         f"certificates come from ({recorded[:23]}…)", "Put the workspace's own CA back: every "
                         "node's certificate and every client certificate were signed by it.")
    return authority


def node_tls(settings: WorkspaceTls, store: Store, pair_name: str, pair: PairTls, virtual_ip: str | None,
             certificate_roles: list[str]) -> NodeTls | None:
    """What a pair's nodes get for TLS (the CA made at first need): every node serves it, with its certificate;
    the mode says whether it is required and verified. Every server certificate it issues is recorded (serial,
    node, expiry) for the expiry warnings."""
    authority = workspace_authority(settings, store, create=True)

    def recorded(issued: Issued, node: str) -> None:
        store.record_certificate(issued.serial, "server", pair_name, node, _iso(issued.cert.not_valid_before_utc),
                                 _iso(issued.not_after))

    return NodeTls(settings=pair, authority=authority, crl_pem=authority.crl(store.revoked_certificates()),
                   server_days=settings.server_days, virtual_ip=virtual_ip, certificate_roles=certificate_roles,
                   on_issue=recorded)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def admin_sslmode(recorded: dict[str, object] | None, settings: WorkspaceTls) -> tuple[str, str | None]:
    """(sslmode, sslrootcert) of pgaasctl's own connections to a pair's nodes: what the pair runs now (its
    record), not what its spec asks for next: a pair turning TLS on does not serve it before the apply."""
    mode = str(recorded.get("mode")) if isinstance(recorded, dict) else "disable"
    if mode == "verify-full":
        cert = ca_files(settings).cert
        if cert.exists():
            return "verify-full", str(cert)
    return ("require", None) if mode in ("require", "verify-full") else ("prefer", None)


def serving_files(settings: WorkspaceTls, store: Store, host: str, cert: Path | None, key: Path | None) -> tuple[Path, Path]:
    """The certificate and key `pgaasctl serve --tls` serves HTTPS with: the user's own (both files), or one the
    workspace CA issues for the listen address and localhost, under the CA's directory (key 0600)."""
    if (cert is None) != (key is None):
        raise PgaasError("--tls-cert and --tls-key come together", "Name both files of your certificate, or neither "
                         "(the workspace CA then issues one).")
    if cert is not None and key is not None:
        for file in (cert, key):
            if not file.is_file():
                raise PgaasError(f"{file}: no such file")
        return cert, key
    authority = workspace_authority(settings, store, create=True)
    names = [host, "127.0.0.1", "localhost"] if host not in ("0.0.0.0", "::") else ["127.0.0.1", "localhost"]
    issued = authority.issue_server("pgaasctl serve", names, settings.server_days)
    directory = Path(settings.ca_dir) / "serve"
    write_private(directory / "serve.key", issued.key_pem)
    (directory / "serve.crt").write_bytes(issued.cert_pem)
    store.record_certificate(issued.serial, "server", "-", f"serve {host}", _iso(issued.cert.not_valid_before_utc),
                             _iso(issued.not_after))
    return directory / "serve.crt", directory / "serve.key"
