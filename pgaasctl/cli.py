"""The pgaasctl command line: parses, calls the workspace operations, renders. No SQL, no SSH here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pgaasctl import workspace
from pgaasctl.errors import PgaasError
from pgaasctl.plan import render
from pgaasctl.plan.model import Change, HostOperation, Plan
from pgaasctl.plan.planfile import is_plan_file, load_plan, save_plan
from pgaasctl.spec.desired import load_desired
from pgaasctl.spec.schema import spec_json_schema
from pgaasctl.status import PairStatus, all_status, connection_uri

app = typer.Typer(
    name="pgaasctl",
    help="PostgreSQL as a service: pairs, roles, databases, grants and settings declared in YAML, planned and applied.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state_app = typer.Typer(help="Inspect and edit what the state store records as managed.", no_args_is_help=True)
app.add_typer(state_app, name="state")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

PathArg = Annotated[Path, typer.Argument(help="Spec file or directory (searched recursively).")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="State store URL (default: the Workspace document, $PGAASCTL_STORE, or sqlite:///state/pgaasctl.db)."),
]
T = TypeVar("T")


def run(action: Callable[[], T]) -> T:
    """Turn our errors into a short message and exit 1; never a traceback."""
    try:
        return action()
    except PgaasError as exc:
        err.print(f"[bold red]Error:[/bold red] {_escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[bold red]Interrupted.[/bold red] Run the same command again to converge.")
        raise typer.Exit(130) from None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def validate(path: PathArg = workspace.DEFAULT_SPECS) -> None:
    """Check specs offline: schema, names, references and duplicates."""

    def action() -> None:
        desired = load_desired(path)
        counts = {kind: 0 for kind in ("Pair", "Role", "Database", "Grant")}
        for d in desired.documents:
            counts[d.doc.kind] = counts.get(d.doc.kind, 0) + 1
        summary = ", ".join(f"{n} {k.lower()}{'s' if n != 1 else ''}" for k, n in counts.items() if k != "Workspace")
        out.print(f"[green]Valid:[/green] {summary} in {path}.")

    run(action)


@app.command()
def plan(
    path: PathArg = workspace.DEFAULT_SPECS,
    out_file: Annotated[Path | None, typer.Option("--out", help="Save the plan to apply it later exactly.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    as_sql: Annotated[bool, typer.Option("--sql", help="Print the exact statements (a psql script; secrets redacted).")] = False,
    detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="Exit 0: no changes, 1: error, 2: changes.")] = False,
    target: Annotated[list[str] | None, typer.Option("--target", help="Only this address (or prefix); repeatable.")] = None,
    destroy: Annotated[bool, typer.Option("--destroy", help="Plan destroying every managed object.")] = False,
    store: StoreOpt = None,
) -> None:
    """Show what apply would change on each pair."""

    def action() -> Plan:
        desired = load_desired(path)
        st = workspace.open_workspace_store(path, store, desired)
        work = workspace.plan_specs(desired, path, st, destroy=destroy, targets=target)
        work.close()
        return work.plan

    result = run(action)
    if out_file is not None:
        run(lambda: save_plan(result, out_file))
    if as_json:
        print(render.render_json(result))
    elif as_sql:
        print(render.render_sql(result), end="")
    else:
        render.render_text(result, out)
        if out_file is not None:
            out.print(f"\nSaved the plan to {out_file}. Apply exactly it with: pgaasctl apply {out_file}")
    if detailed_exitcode and result.has_changes:
        raise typer.Exit(2)


def _confirm(what: str) -> bool:
    out.print(f"\nDo you want to {what}? Only 'yes' will be accepted.")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        err.print("[bold red]Error:[/bold red] no answer on standard input; pass --auto-approve to run without asking.")
        raise typer.Exit(1) from None
    return answer.strip() == "yes"


def _apply(path: Path, store: str | None, auto_approve: bool, destroy: bool, targets: list[str] | None) -> None:
    saved: Plan | None = None
    saved_path: Path | None = None
    if is_plan_file(path):
        saved_path = path
        saved = run(lambda: load_plan(path))
        path = Path(saved.spec_path)
        destroy = saved.destroy
        targets = saved.targets or None
        auto_approve = True  # a saved plan was reviewed when it was made
    verb = "destroy" if destroy else "apply"

    def action() -> None:
        desired = load_desired(path)
        st = workspace.open_workspace_store(path, store, desired)
        with workspace.locked_plan(desired, path, st, destroy=destroy, targets=targets, saved=saved,
                                   saved_path=saved_path) as work:
            if saved is None:
                render.render_text(work.plan, out)
            if not work.plan.has_changes:
                return
            if not auto_approve and not _confirm("perform these actions" if not destroy else "destroy these objects"):
                out.print(f"{verb.capitalize()} cancelled; nothing was changed.")
                raise typer.Exit(1)
            total = sum(len(p.changes) for p in work.plan.pairs)
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=err, transient=True, disable=not err.is_terminal,
            ) as progress:
                task = progress.add_task(f"{verb}ing", total=total)

                def on_progress(pair: str, change: Change, status: str) -> None:
                    if status == "start":
                        progress.update(task, description=f"{change.address}")
                    elif status == "done":
                        progress.advance(task)

                def on_operation(pair: str, op: HostOperation, status: str) -> None:
                    if status == "start":
                        progress.update(task, description=f"pair {pair}: node {op.node}: {op.detail}")
                    else:
                        err.print(f"  pair {pair}: node {op.node}: {op.detail}: done", highlight=False)

                results = workspace.execute(work, st, on_progress, on_operation)
            if destroy:
                workspace.forget_destroyed_pairs(work, st)
            counts = {key: sum(r.counts.get(key, 0) for r in results) for key in ("add", "change", "destroy")}
            for result in results:
                waited = f"; standby caught up in {result.standby_wait:.2f}s" if result.standby_wait is not None else ""
                ops = f"{len(result.operations)} host operation(s), " if result.operations else ""
                out.print(f"Pair {result.pair!r}: {ops}{len(result.done)} change(s) applied{waited}.")
            out.print(
                f"[bold green]{verb.capitalize()} complete![/bold green] "
                f"{counts['add']} added, {counts['change']} changed, {counts['destroy']} destroyed."
            )

    run(action)


@app.command()
def apply(
    path: Annotated[Path, typer.Argument(help="Spec file or directory, or a plan file saved with plan --out.")] = workspace.DEFAULT_SPECS,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")] = False,
    target: Annotated[list[str] | None, typer.Option("--target", help="Only this address (or prefix); repeatable.")] = None,
    store: StoreOpt = None,
) -> None:
    """Make the servers match the specs (or carry out a saved plan)."""
    _apply(path, store, auto_approve, destroy=False, targets=target)


@app.command()
def destroy(
    path: PathArg = workspace.DEFAULT_SPECS,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")] = False,
    target: Annotated[list[str] | None, typer.Option("--target", help="Only this address (or prefix); repeatable.")] = None,
    store: StoreOpt = None,
) -> None:
    """Drop every object pgaasctl manages on the pairs of the specs."""
    _apply(path, store, auto_approve, destroy=True, targets=target)


@app.command("import")
def import_(
    address: Annotated[str, typer.Argument(help="Address, e.g. role.orders.orders_app")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Start managing an existing object that is declared in the specs."""

    def action() -> None:
        desired = load_desired(path)
        st = workspace.open_workspace_store(path, store, desired)
        workspace.import_object(desired, path, st, address)
        out.print(f"[green]Imported[/green] {address}. Run `pgaasctl plan` to see how it differs from the spec.")

    run(action)


@app.command("force-unlock")
def force_unlock(
    pair: Annotated[str, typer.Argument(help="Pair name.")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Remove a pair's lock left behind by a process that died."""

    def action() -> None:
        st = workspace.open_workspace_store(path, store)
        info = st.force_unlock(pair)
        if info is None:
            out.print(f"Pair {pair!r} was not locked.")
        else:
            out.print(f"Removed the lock on {pair!r} held by {info.holder} ({info.operation} since {info.acquired_at}).")

    run(action)


@app.command()
def schema() -> None:
    """Print the JSON Schema of spec documents (for editors)."""
    print(json.dumps(spec_json_schema(), indent=2))


@app.command()
def status(
    path: PathArg = workspace.DEFAULT_SPECS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    store: StoreOpt = None,
) -> None:
    """Show every pair: nodes, roles, up/down, replication and lag, degraded or not."""

    def action() -> list[PairStatus]:
        desired = load_desired(path)
        st = workspace.open_workspace_store(path, store, desired)
        return all_status(desired, st)

    pairs = run(action)
    if as_json:
        print(json.dumps([p.model_dump() for p in pairs], indent=2))
        if any(p.error for p in pairs):
            raise typer.Exit(1)
        return
    for pair in pairs:
        state = "[red]error[/red]" if pair.error else "[yellow]degraded[/yellow]" if pair.degraded else "[green]healthy[/green]"
        out.print(f"[bold]{pair.pair}[/bold] ({pair.provider}, {pair.replication}): {state}")
        if pair.error:
            out.print(f"  {_escape(pair.error)}")
            continue
        table = Table("node", "address", "role", "replication", "lag", "repmgrd", box=None, pad_edge=False)
        for node in pair.nodes:
            lag = "" if node.lag_seconds is None else f"{node.lag_seconds:.3f}s / {node.lag_bytes or 0} B"
            repmgrd = "" if node.repmgrd is None else ("running" if node.repmgrd else "[red]stopped[/red]")
            table.add_row(node.name, node.address, node.role, node.replication or "", lag, repmgrd)
        out.print(table)
        for warning in pair.warnings:
            out.print(f"  [yellow]warning:[/yellow] {_escape(warning)}")
        for need in pair.needs:
            out.print(f"  apply would: {_escape(need)}")
    if any(p.error for p in pairs):
        raise typer.Exit(1)


@app.command()
def connection(
    pair: Annotated[str, typer.Argument(help="Pair name.")],
    database: Annotated[str | None, typer.Option("--database", help="Database (default postgres).")] = None,
    role: Annotated[str | None, typer.Option("--role", help="Role to log in as.")] = None,
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Print the connection URI clients should use: every node, read-write target, so it follows a failover."""

    def action() -> str:
        desired = load_desired(path)
        if pair not in desired.pairs:
            raise PgaasError(f"pair {pair!r} is not declared (pairs: {', '.join(sorted(desired.pairs)) or 'none'})")
        st = workspace.open_workspace_store(path, store, desired)
        return connection_uri(desired.pairs[pair], desired, st, database, role)

    print(run(action))


@app.command()
def switchover(
    pair: Annotated[str, typer.Argument(help="Pair name.")],
    to: Annotated[str | None, typer.Option("--to", help="The standby to promote (default: the standby).")] = None,
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Planned maintenance: promote the standby and make the old primary its standby, losing no commit."""

    def action() -> tuple[str, str]:
        desired = load_desired(path)
        st = workspace.open_workspace_store(path, store, desired)
        return workspace.switchover_pair(desired, st, pair, to)

    old, new = run(action)
    out.print(f"[green]Switchover complete:[/green] {new} is the primary of {pair!r}; {old} follows it.")


@state_app.command("forget-host-key")
def state_forget_host_key(
    endpoint: Annotated[str, typer.Argument(help="host:port whose pinned SSH key to forget.")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Forget a pinned SSH host key (after a host was rebuilt on purpose); the next contact pins the new one."""

    def action() -> None:
        st = workspace.open_workspace_store(path, store)
        if not st.forget_host_key(endpoint):
            raise PgaasError(f"no SSH host key is pinned for {endpoint}")
        out.print(f"Forgot the SSH host key of {endpoint}; the next connection pins the key it presents.")

    run(action)


@state_app.command("list")
def state_list(path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """List the managed addresses."""

    def action() -> None:
        st = workspace.open_workspace_store(path, store)
        for address in st.managed():
            print(address)

    run(action)


@state_app.command("show")
def state_show(
    address: Annotated[str, typer.Argument(help="Address to show.")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Show what the store records for one address."""

    def action() -> dict[str, Any]:
        st = workspace.open_workspace_store(path, store)
        managed = st.managed().get(address)
        if managed is None:
            raise PgaasError(f"{address} is not in the state", "See the managed addresses with `pgaasctl state list`.")
        return managed.model_dump()

    print(json.dumps(run(action), indent=2, sort_keys=True))


@state_app.command("rm")
def state_rm(
    address: Annotated[str, typer.Argument(help="Address to forget (the object stays on the server).")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Forget an address; the object stays on the server, unmanaged."""

    def action() -> None:
        st = workspace.open_workspace_store(path, store)
        if not st.forget(address):
            raise PgaasError(f"{address} is not in the state", "See the managed addresses with `pgaasctl state list`.")
        out.print(f"Removed {address} from the state; the object stays on the server, unmanaged.")

    run(action)


@app.command()
def history(
    pair: Annotated[str | None, typer.Argument(help="Only this pair.")] = None,
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Show recent applies and destroys."""

    def action() -> None:
        st = workspace.open_workspace_store(path, store)
        table = Table("started", "pair", "operation", "status", "by", "changes")
        for entry in st.history(pair):
            table.add_row(entry.started_at, entry.pair, entry.operation, entry.status, entry.actor,
                          str(len(entry.summary.get("changes", []))))
        out.print(table)

    run(action)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.stderr.close()


if __name__ == "__main__":
    main()
