"""The CLI's commands for the service: `serve` (the REST API), `user` and `token` (who may use it).
Registered on pgaasctl.cli's app when that module loads."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from pgaasctl import cli, workspace
from pgaasctl.cli import JsonOpt, PathArg, StoreOpt, _open, _print_json, app, run
from pgaasctl.errors import PgaasError

user_app = typer.Typer(help="Users of the API and the console: admin, member or viewer.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: `Authorization: Bearer <token>`; shown once, kept hashed.",
                        no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

RoleOpt = Annotated[str, typer.Option("--role", help="admin (everything), member (their own databases), viewer (reads).")]


def _role(value: str) -> str:
    from pgaasctl.api.users import ROLES

    if value not in ROLES:
        raise PgaasError(f"--role {value!r} is not a role", f"Use one of: {', '.join(ROLES)}.")
    return value


@user_app.command("create")
def user_create(name: Annotated[str, typer.Argument(help="User name.")], role: RoleOpt = "member",
                path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """Make a user and print its one-time password (kept only as an Argon2 hash)."""
    from pgaasctl.api.users import create_user

    def action() -> tuple[str, str]:
        chosen = _role(role)
        st = _open(workspace.load(path), store, "create")
        user, password = create_user(st, name, chosen)  # type: ignore[arg-type]
        return user.role, password

    made_role, password = run(action)
    cli.err.print(f"User {name!r} ({made_role}) created. Its password, shown this once:")
    print(password)


@user_app.command("list")
def user_list(path: PathArg = workspace.DEFAULT_SPECS, as_json: JsonOpt = False, store: StoreOpt = None) -> None:
    """The users, their role and whether they are disabled."""
    from pgaasctl.api.users import users

    found = run(lambda: users(_open(workspace.load(path), store, "read")))
    if as_json:
        _print_json([u.model_dump() for u in found])
        return
    if not found:
        cli.err.print("No users yet: `pgaasctl user create NAME --role admin` makes the first.")
    for u in found:
        cli.out.print(f"{u.name}  {u.role}{'  (disabled)' if u.disabled else ''}  since {u.created_at}")


@user_app.command("disable")
def user_disable(name: Annotated[str, typer.Argument(help="User name.")], path: PathArg = workspace.DEFAULT_SPECS,
                 store: StoreOpt = None) -> None:
    """Disable a user: its password and every token stop working at once."""
    from pgaasctl.api.users import disable_user

    run(lambda: disable_user(_open(workspace.load(path), store, "write"), name))
    cli.err.print(f"User {name!r} disabled; its tokens no longer work.")


@token_app.command("create")
def token_create(user: Annotated[str, typer.Option("--user", help="The user the token acts as.")],
                 days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Days until it expires.")] = 90,
                 path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """Make an API token and print it once (the store keeps only its hash)."""
    from pgaasctl.api.users import create_token

    token, secret = run(lambda: create_token(_open(workspace.load(path), store, "write"), user, days))
    cli.err.print(f"Token {token.id} for {user!r}, expires {token.expires_at}. Shown this once:")
    print(secret)


@token_app.command("list")
def token_list(path: PathArg = workspace.DEFAULT_SPECS, user: Annotated[str | None, typer.Option(
        "--user", help="Only this user's.")] = None, as_json: JsonOpt = False, store: StoreOpt = None) -> None:
    """Tokens by id (never the tokens themselves), their user, expiry and whether revoked."""
    from pgaasctl.api.users import tokens

    found = run(lambda: tokens(_open(workspace.load(path), store, "read"), user))
    if as_json:
        _print_json([t.model_dump() for t in found])
        return
    for t in found:
        cli.out.print(f"{t.id}  {t.user}  expires {t.expires_at}{'  (revoked)' if t.revoked else ''}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (`token list`).")],
                 path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """Revoke a token: it stops working at once."""
    from pgaasctl.api.users import revoke_token

    run(lambda: revoke_token(_open(workspace.load(path), store, "write"), token_id))
    cli.err.print(f"Token {token_id} revoked.")


@app.command()
def serve(
    path: PathArg = workspace.DEFAULT_SPECS,
    listen: Annotated[str, typer.Option("--listen", metavar="ADDR:PORT", help="Where the API listens.")] = "127.0.0.1:8080",
    interval: Annotated[str, typer.Option("--interval", help="The agent's time between two rounds.")] = "5s",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request and round.")] = False,
    tls: Annotated[bool, typer.Option("--tls", help="HTTPS, with a certificate the workspace CA issues for the listen "
                                      "address (or --tls-cert/--tls-key); cookies are Secure then.")] = False,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Your own certificate (PEM), with --tls.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its private key (PEM), with --tls.")] = None,
    store: StoreOpt = None,
) -> None:
    """Run the REST API (Swagger UI at /docs, OpenAPI at /openapi.json, /healthz, /metrics) and the web console
    (at /) with the agent in the same process, until SIGINT or SIGTERM."""
    import uvicorn

    from pgaasctl.api.app import ApiContext, create_app
    from pgaasctl.durations import parse_duration
    from pgaasctl.monitor.agent import Agent
    from pgaasctl.monitor.endpoint import parse_listen

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    seconds = run(lambda: parse_duration(interval, "--interval"))
    host, port = run(lambda: parse_listen(listen))
    loaded = run(lambda: workspace.load(path))
    st = run(lambda: loaded.open_store(store, "write"))
    run(lambda: _can_listen(host, port, listen))
    if (tls_cert is not None or tls_key is not None) and not tls:
        run(_refuse_files_without_tls)
    https: dict[str, str] = {}
    if tls:
        from pgaasctl.tls.workspace_ca import serving_files

        cert, key = run(lambda: serving_files(loaded.desired.workspace.tls, st, host, tls_cert, tls_key))
        https = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    agent = Agent(path=path, store_flag=store, interval=seconds)
    context = ApiContext(path=path, store=st, agent=agent)
    interrupted = context.operations.interrupt_leftovers()
    if interrupted:
        cli.err.print(f"pgaasctl serve: {interrupted} operation(s) the last server left running are marked failed "
                      "(interrupted); the next plan finishes them.")
    api = create_app(context)
    # uvloop and httptools: the event loop and HTTP parser in C, twice the requests a second of the pure-Python pair
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="info" if verbose else "warning",
                                           access_log=verbose, lifespan="off", loop="uvloop", http="httptools",
                                           **https))
    stop = threading.Event()
    rounds = threading.Thread(target=agent.run, args=(stop,), name="agent", daemon=True)
    rounds.start()
    scheme = "https" if tls else "http"
    cli.err.print(f"pgaasctl serve: {scheme}://{listen}/ (the console), {scheme}://{listen}/docs (the API), the agent "
                  f"every {seconds:g}s; stop with Ctrl-C or SIGTERM.")
    try:
        server.run()  # returns on SIGINT or SIGTERM...
    except KeyboardInterrupt:
        pass  # ...and hands the signal back once shut down: the stop asked for
    finally:
        stop.set()
        agent.wake()
        rounds.join(timeout=60)
        context.operations.join(timeout=60)
        st.close()
    cli.err.print("pgaasctl serve: stopped.")


def _refuse_files_without_tls() -> None:
    raise PgaasError("--tls-cert and --tls-key need --tls", "Add --tls, or leave the files out.")


def _can_listen(host: str, port: int, listen: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PgaasError(f"cannot listen on {listen}: {exc.strerror or exc}",
                             "Pick a free port, or stop what listens there.") from None
