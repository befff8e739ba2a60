"""`pgaasctl cert`: client certificates for the roles of pairs with TLS (issue, revoke, list) and fresh server
certificates for a pair's nodes (rotate). Registered on pgaasctl.cli's app when that module loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pgaasctl import cli, workspace
from pgaasctl.cli import JsonOpt, PathArg, StoreOpt, _escape, _open, _print_json, app, run
from pgaasctl.errors import PgaasError

cert_app = typer.Typer(help="Certificates of the workspace CA: client certificates for roles, server certificates "
                       "of pairs with TLS.", no_args_is_help=True)
app.add_typer(cert_app, name="cert")
PairOpt = Annotated[str, typer.Option("--pair", help="The pair.")]


@cert_app.command("issue")
def cert_issue(role: Annotated[str, typer.Argument(help="The role (client_certificate: true, or the pair requires "
                                                   "client certificates).")],
               pair: PairOpt,
               out: Annotated[Path, typer.Option("--out", help="Directory for ROLE.key (0600), ROLE.crt and "
                                                 "root.crt (the CA).")],
               days: Annotated[int | None, typer.Option("--days", min=1, max=3650, help="Lifetime (default: the "
                                                        "Workspace's tls.client_days).")] = None,
               path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """Issue a client certificate (CN = the role) from the workspace CA and write it with its key and the CA."""
    from pgaasctl.tls.certificates import issue_client

    def action():  # type: ignore[no-untyped-def]
        loaded = workspace.load(path)
        return issue_client(loaded.desired, _open(loaded, store, "write"), pair, role, out, days)

    issued = run(action)
    cli.out.print(f"Certificate {issued.serial} for role {_escape(role)} of pair {_escape(pair)}, valid until "
                  f"{issued.not_after[:10]}:")
    for kind, file in (("certificate", issued.cert), ("key (0600)", issued.key), ("CA", issued.ca)):
        cli.out.print(f"  {kind:<12} {_escape(str(file))}")
    cli.out.print(f"Connect: pgaasctl connection {_escape(pair)} --role {_escape(role)} --cert-dir {_escape(str(out))}")


@cert_app.command("list")
def cert_list(pair: Annotated[str | None, typer.Option("--pair", help="Only this pair's.")] = None,
              path: PathArg = workspace.DEFAULT_SPECS, as_json: JsonOpt = False, store: StoreOpt = None) -> None:
    """Every certificate the workspace CA issued: serial, kind, subject, expiry, revocation."""
    from pgaasctl.tls.certificates import certificates

    found = run(lambda: certificates(_open(workspace.load(path), store, "read"), pair))
    if as_json:
        _print_json([c.model_dump() for c in found])
        return
    if not found:
        cli.err.print("No certificates yet: `pgaasctl apply` of a pair with tls issues its nodes' certificates.")
    for c in found:
        state = f"revoked {c.revoked_at[:10]}" if c.revoked_at else f"until {c.not_after[:10]}"
        cli.out.print(f"{c.serial}  {c.kind:<6} {_escape(c.pair)}/{_escape(c.subject)}  {state}")


@cert_app.command("revoke")
def cert_revoke(serial: Annotated[str | None, typer.Option("--serial", help="The certificate's serial (`cert list`).")] = None,
                pair: Annotated[str | None, typer.Option("--pair", help="With --role: every certificate of the "
                                                         "role on this pair.")] = None,
                role: Annotated[str | None, typer.Option("--role", help="The role.")] = None,
                path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """Revoke certificates: they go into the revocation list, which every node of the workspace's pairs with TLS
    loads at once (a reload)."""
    from pgaasctl.spec.models import CreatedPairSpec
    from pgaasctl.tls.certificates import revoke

    def action() -> tuple[list[str], list[str], list[str]]:
        loaded = workspace.load(path)
        st = _open(loaded, store, "write")
        revoked = revoke(st, serial, pair, role)
        pushed, missed = [], []
        for name, declared in sorted(loaded.desired.pairs.items()):
            spec = declared.doc.spec
            if not isinstance(spec, CreatedPairSpec) or spec.tls.mode == "disable":
                continue
            try:
                done = workspace.renew_certificates(loaded.desired, st, name, crl_only=True)
                pushed += [f"{name}/{node}" for node in done]
                missed += [f"{name}/{n.name}" for n in spec.nodes if n.name not in done]
            except PgaasError as exc:
                missed.append(f"{name} ({exc.message})")
        return [c.serial for c in revoked], pushed, missed

    revoked, pushed, missed = run(action)
    if not revoked:
        cli.out.print("Already revoked: nothing to do.")
        return
    cli.out.print(f"Revoked {', '.join(revoked)}; the revocation list is on {', '.join(pushed) or 'no node yet'}.")
    if missed:
        cli.err.print(f"[yellow]Not on {', '.join(_escape(m) for m in missed)}[/yellow]: run `pgaasctl cert rotate "
                      "PAIR` once they run again.")


@cert_app.command("rotate")
def cert_rotate(pair: Annotated[str, typer.Argument(help="The pair.")],
                path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """Fresh server certificates on every node of the pair, then a reload: no downtime."""

    def action() -> list[str]:
        loaded = workspace.load(path)
        return workspace.renew_certificates(loaded.desired, _open(loaded, store, "write"), pair)

    done = run(action)
    cli.out.print(f"New server certificates on {', '.join(done) or 'no node (none runs)'} of pair {_escape(pair)}.")
