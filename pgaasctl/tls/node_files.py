"""What TLS puts on a node: its certificate and key, the CA and its revocation list (under the node's config
directory, tls/), the server parameters that point at them, the pg_hba rules a pair's tls spec asks for, and how
repmgr and replication connect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pgaasctl.spec.models import PairTls
from pgaasctl.tls.authority import Authority, Issued

SERVER_CERT, SERVER_KEY, ROOT_CERT, ROOT_CRL = "server.crt", "server.key", "root.crt", "root.crl"
ADMIN_ROLES = ("postgres", "repmgr")  # pgaasctl's own logins: a password over TLS, never a client certificate


@dataclass
class NodeTls:
    """A pair's TLS as its nodes' bootstrap needs it."""

    settings: PairTls
    authority: Authority
    crl_pem: bytes
    server_days: int
    virtual_ip: str | None = None
    certificate_roles: list[str] = field(default_factory=list)  # log in with a client certificate (`cert`)
    on_issue: Callable[[Issued, str], None] | None = None  # told of each server certificate issued (and its node)

    @property
    def on(self) -> bool:
        return self.settings.mode != "disable"

    def files(self, node: str, addresses: list[str]) -> dict[str, tuple[bytes, int]]:
        """name -> (content, mode) of the node's tls/ directory: a fresh certificate for its addresses (and the
        pair's virtual IP), its key readable by the server's OS user alone, the CA and the revocation list."""
        issued = self.authority.issue_server(node, [*addresses, *([self.virtual_ip] if self.virtual_ip else [])],
                                             self.server_days)
        if self.on_issue is not None:
            self.on_issue(issued, node)
        return {SERVER_CERT: (issued.cert_pem, 0o644), SERVER_KEY: (issued.key_pem, 0o600),
                ROOT_CERT: (self.authority.cert_pem, 0o644), ROOT_CRL: (self.crl_pem, 0o644)}


def tls_dir(config_dir: str) -> str:
    return f"{config_dir}/tls"


def ssl_parameters(config_dir: str) -> dict[str, str]:
    """postgresql.conf lines (values quoted) that serve TLS with the node's files; a reload applies them."""
    directory = tls_dir(config_dir)
    return {"ssl": "on", "ssl_cert_file": f"'{directory}/{SERVER_CERT}'", "ssl_key_file": f"'{directory}/{SERVER_KEY}'",
            "ssl_ca_file": f"'{directory}/{ROOT_CERT}'", "ssl_crl_file": f"'{directory}/{ROOT_CRL}'",
            "ssl_min_protocol_version": "'TLSv1.2'"}


def client_parameters(settings: PairTls | None, config_dir: str) -> str:
    """The libpq parameters repmgr and replication connect with from a node (appended to its conninfo)."""
    if settings is None or settings.mode == "disable":
        return ""
    if settings.mode == "require":
        return " sslmode=require"
    return f" sslmode=verify-full sslrootcert={tls_dir(config_dir)}/{ROOT_CERT}"


def _role_list(names: list[str]) -> str:
    """Role names as pg_hba reads them: each in double quotes (a name may hold capitals, '-' or '$')."""
    return ",".join('"' + name.replace('"', '""') + '"' for name in names)


def pg_hba(settings: PairTls | None, certificate_roles: list[str] | None = None,
           networks: list[str] | None = None) -> str:
    """The node's pg_hba.conf, for clients of `networks` alone (the pair's `clients`, or its own network). TLS
    off: password logins (scram). TLS on: no plaintext connection but through the server's own socket; password
    logins over TLS; with client certificates required, every role but pgaasctl's own logs in with a certificate
    whose CN is the role (`cert`). Nothing else is let in."""
    networks = networks or ["0.0.0.0/0", "::/0"]
    lines = ["# written by pgaasctl (the pair's tls spec decides these rules)",
             "# the socket directory belongs to the server's OS user alone",
             "local   all          all                  trust",
             "local   replication  all                  trust"]
    if settings is None or settings.mode == "disable":
        for network in networks:
            lines += [f"host    all          all      {network:<11} scram-sha-256",
                      f"host    replication  repmgr   {network:<11} scram-sha-256"]
        return "\n".join(lines) + "\n"
    admins = ",".join(ADMIN_ROLES)
    for network in networks:
        lines.append(f"hostnossl all       all      {network:<11} reject")
        lines.append(f"hostssl replication repmgr   {network:<11} scram-sha-256")
        if settings.client_certificates == "required":
            lines.append(f"hostssl all         {admins} {network:<11} scram-sha-256")
            lines.append(f"hostssl all         all      {network:<11} cert")
        else:
            if certificate_roles:
                lines.append(f"hostssl all         {_role_list(certificate_roles)} {network} cert")
            lines.append(f"hostssl all         all      {network:<11} scram-sha-256")
    return "\n".join(lines) + "\n"
