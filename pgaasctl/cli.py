"""The pgaasctl command line: parses, calls the workspace operations, renders. No SQL, no SSH here."""

from __future__ import annotations

import datetime as dt
import json
import logging
import gc
import os
import signal
import sys
import threading
import time
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

from pgaasctl import __version__, workspace
from pgaasctl.errors import PgaasError
from pgaasctl.live import scram_keys
from pgaasctl.monitor.models import CheckResult
from pgaasctl.plan import render
from pgaasctl.plan.model import Change, HostOperation, Plan
from pgaasctl.plan.planfile import SavedPlan, is_plan_file, load_plan, save_plan
from pgaasctl.spec.schema import spec_json_schema
from pgaasctl.status import PairStatus, all_status, client_certificate_options, connection_uri
from pgaasctl.store import Store
from pgaasctl.store.store import OpenMode

app = typer.Typer(
    name="pgaasctl",
    help="PostgreSQL as a service: pairs, roles, databases, grants and settings declared in YAML, planned and applied.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state_app = typer.Typer(help="Inspect and edit what the state store records as managed.", no_args_is_help=True)
app.add_typer(state_app, name="state")


def _console(stderr: bool) -> Console:
    # Piped output is never cut or wrapped at 80 columns: a wide virtual width when not on a terminal.
    # NO_COLOR (or --no-color) drops every style, bold included.
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else 10_000
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width, no_color=plain,
                   color_system=None if plain else "auto")


out = _console(stderr=False)
err = _console(stderr=True)

PathArg = Annotated[Path, typer.Argument(help="Spec directory, or a file or directory inside a workspace.")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="State store URL (default: $PGAASCTL_STORE, the Workspace document's `store`, or "
                                 "sqlite:///state/pgaasctl.db under the workspace root)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TargetOpt = Annotated[list[str] | None, typer.Option("--target", help="Only this address (or prefix); repeatable.")]
def _lock_timeout(value: float | None) -> float | None:
    if value is not None and not 0 <= value <= 3600:  # also refuses nan
        raise typer.BadParameter("give seconds between 0 and 3600")
    return value


LockTimeoutOpt = Annotated[
    float | None, typer.Option("--lock-timeout", callback=_lock_timeout,
                               help="Seconds to wait for the pair lock (default: the Workspace's).")
]
AutoApproveOpt = Annotated[bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")]
T = TypeVar("T")
GC_THRESHOLD = 50_000  # allocations between collections of the youngest generation (Python's default: 700)


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C (locks released, history recorded), exiting 143 as a terminated process."""


_opened: list[Store] = []  # closed when the command's action ends, however it ends


def _open(loaded: workspace.LoadedWorkspace, flag: str | None, mode: OpenMode) -> Store:
    st = loaded.open_store(flag, mode)
    _opened.append(st)
    return st


def run(action: Callable[[], T]) -> T:
    """Turn our errors into a short message and exit 1; never a traceback."""
    try:
        return action()
    except PgaasError as exc:
        err.print(f"[bold red]Error:[/bold red] {_escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt as exc:
        err.print("[bold red]Interrupted.[/bold red] Run the same command again to converge.")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    finally:
        while _opened:
            _opened.pop().close()
        scram_keys.save_salts()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _notices(store: Store) -> None:
    for notice in store.notices:
        err.print(f"[yellow]Note:[/yellow] {_escape(notice)}")
    store.notices.clear()


def _pair_or_path(given: str | None, path: Path, pair: str | None) -> tuple[Path, str | None]:
    """The [PAIR|PATH] argument of history and events: a file or directory names the workspace, else a pair."""
    if given is None:
        return path, pair
    if os.sep in given or Path(given).exists():
        return Path(given), pair
    return path, pair or given


def _health_line(check: CheckResult, checked_at: str | None) -> str:
    """The worst health check of a pair, as `status` shows it, with when the agent graded it (a look by apply or a
    push since does not make the checks any younger)."""
    colour = {"ok": "green", "warn": "yellow", "critical": "red"}[check.status]
    when = f"as the agent saw at {checked_at}" if checked_at else "as an older agent saw; it kept no time"
    if check.status == "ok":
        return f"health: [green]ok[/green] (every check, {when})"
    where = " ".join(x for x in (f"on {check.node}" if check.node else "",
                                 f"database {check.database}" if check.database else "") if x)
    line = f"health: [{colour}]{check.status}[/{colour}] {check.name}{' ' + where if where else ''}: {_escape(check.value)}"
    return line + (f". {_escape(check.remedy)}" if check.remedy else "") + f" ({when})"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print pgaasctl's version."""
    if as_json:
        _print_json({"pgaasctl_version": __version__, "python_version": sys.version.split()[0]})
    else:
        print(f"pgaasctl {__version__}")


@app.command()
def validate(path: PathArg = workspace.DEFAULT_SPECS) -> None:
    """Check specs offline: schema, names, references and duplicates."""

    def action() -> None:
        loaded = workspace.load(path)
        counts = {kind: 0 for kind in ("Pair", "Role", "Database", "Grant")}
        for d in loaded.desired.documents:
            counts[d.doc.kind] = counts.get(d.doc.kind, 0) + 1
        summary = ", ".join(f"{n} {k.lower()}{'s' if n != 1 else ''}" for k, n in counts.items() if k != "Workspace")
        out.print(f"[green]Valid:[/green] {summary} in {loaded.spec_dir}.")

    run(action)


@app.command()
def init(path: PathArg = workspace.DEFAULT_SPECS, store: StoreOpt = None) -> None:
    """Create the workspace's state store (the first apply does it too) and say where it is."""

    def action() -> None:
        loaded = workspace.load(path)
        setting = loaded.location.store(store)
        st = _open(loaded, store, "create")
        out.print(f"State store ready: {_escape(st.where)} ({setting.source}). Workspace root: {loaded.location.root}")

    run(action)


@app.command()
def plan(
    path: PathArg = workspace.DEFAULT_SPECS,
    out_file: Annotated[Path | None, typer.Option("--out", help="Save the plan to apply it later exactly.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    as_sql: Annotated[bool, typer.Option("--sql", help="Print the exact statements (a psql script; secrets redacted).")] = False,
    detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="Exit 0: no changes, 1: error, 2: changes.")] = False,
    target: TargetOpt = None,
    destroy: Annotated[bool, typer.Option("--destroy", help="Plan destroying every managed object.")] = False,
    lock_timeout: Annotated[float | None, typer.Option(
        "--lock-timeout", callback=_lock_timeout, help="Accepted for Terraform's habit; a plan takes no lock.")] = None,
    store: StoreOpt = None,
) -> None:
    """Show what apply would change on each pair. Reads only: changes no server and no state."""
    if as_json and as_sql:
        err.print("[bold red]Error:[/bold red] --json and --sql print two different things; choose one.")
        raise typer.Exit(1)
    if out_file is not None and out_file.suffix.lower() in (".yaml", ".yml"):
        err.print(f"[bold red]Error:[/bold red] --out {_escape(str(out_file))}: a plan file is not a spec; a .yaml or "
                  ".yml name would be read as one. Use e.g. --out tfplan.")
        raise typer.Exit(1)

    def action() -> Plan:
        loaded = workspace.load(path)
        st = _open(loaded, store, "read")
        work = workspace.plan_specs(loaded.desired, loaded.spec_dir, st, destroy=destroy,
                                    targets=loaded.targets(target))
        work.close()
        if out_file is not None:
            key = st.plan_key()
            if key is None:
                raise PgaasError("this state store predates saved plans' checksums",
                                 "Run `pgaasctl init` once to upgrade it, then plan again.")
            save_plan(work.plan, out_file, key)
        return work.plan

    result = run(action)
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


@app.command()
def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan file saved with plan --out.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a saved plan, as text or JSON."""
    if not is_plan_file(plan_file):
        err.print(f"[bold red]Error:[/bold red] {_escape(str(plan_file))} is not a pgaasctl plan file (make one with "
                  "`pgaasctl plan --out FILE`).")
        raise typer.Exit(1)
    saved = run(lambda: load_plan(plan_file))
    if as_json:
        print(render.render_json(saved.plan))
    else:
        out.print(f"Saved plan of {saved.plan.spec_path}" + (" (destroy)" if saved.plan.destroy else ""))
        render.render_text(saved.plan, out)


def _confirm(what: str) -> bool:
    if os.environ.get(NO_INPUT_ENV):
        err.print("[bold red]Error:[/bold red] -input=false and no --auto-approve: nothing may ask for confirmation.")
        raise typer.Exit(1)
    out.print(f"\nDo you want to {what}? Only 'yes' will be accepted.")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        err.print("[bold red]Error:[/bold red] no answer on standard input; pass --auto-approve to run without asking.")
        raise typer.Exit(1) from None
    return answer.strip() == "yes"


_DONE = {"create": "created", "update": "updated", "adopt": "adopted", "delete": "destroyed"}


def _apply(path: Path, store: str | None, auto_approve: bool, destroy: bool, targets: list[str] | None,
           lock_timeout: float | None, as_json: bool) -> None:
    saved: SavedPlan | None = None
    if is_plan_file(path):
        saved = run(lambda: load_plan(path))
        if targets:
            err.print("[bold red]Error:[/bold red] a saved plan applies exactly as it was made: --target cannot "
                      "narrow it. Make a targeted plan with `pgaasctl plan --target ADDR --out FILE`.")
            raise typer.Exit(1)
        if destroy and not saved.plan.destroy:
            err.print(f"[bold red]Error:[/bold red] {_escape(str(path))} is a plan to apply, not a destroy plan: run "
                      "`pgaasctl apply` with it, or make a destroy plan with `pgaasctl plan --destroy --out FILE`.")
            raise typer.Exit(1)
        destroy = saved.plan.destroy
        targets = saved.plan.targets or None
        auto_approve = True  # a saved plan was reviewed when it was made
    if as_json and not auto_approve:
        err.print("[bold red]Error:[/bold red] --json needs --auto-approve (or a saved plan): there is no prompt in JSON.")
        raise typer.Exit(1)
    verb = "destroy" if destroy else "apply"
    report: dict[str, Any] = {"pairs": [], "summary": {"add": 0, "change": 0, "destroy": 0}}

    def action() -> None:
        if saved is not None and not Path(saved.plan.spec_path).is_dir():
            raise PgaasError(f"{path}: the specs this plan was made from ({saved.plan.spec_path}, saved relative to the "
                             "plan file) are not there", "Keep the plan file where it was made relative to the specs, "
                             "or make a new plan.")
        loaded = workspace.load(Path(saved.plan.spec_path) if saved else path)
        st = _open(loaded, store, "create" if verb == "apply" else "write")
        if saved is not None:
            key = st.plan_key()
            assert key is not None  # a writable store always has one
            saved.verify(key)
        with workspace.locked_plan(loaded.desired, loaded.spec_dir, st, destroy=destroy,
                                   targets=loaded.targets(targets) if saved is None else targets,
                                   saved=saved.plan if saved else None, saved_path=path if saved else None,
                                   lock_timeout=lock_timeout) as work:
            _notices(st)
            if saved is None and not as_json:
                render.render_text(work.plan, out)
            if not work.plan.has_changes:
                return
            if not auto_approve and not _confirm("perform these actions" if not destroy else "destroy these objects"):
                out.print(f"{verb.capitalize()} cancelled; nothing was changed.")
                raise typer.Exit(1)
            _execute(work, st, verb, as_json, report)

    run(action)
    if as_json:
        _print_json(report)


def _execute(work: workspace.PlannedWork, st: Store, verb: str, as_json: bool, report: dict[str, Any]) -> None:
    total = sum(len(p.changes) for p in work.plan.pairs)
    started: dict[tuple[str, str], float] = {}
    seconds: dict[tuple[str, str], float] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=not err.is_terminal or as_json,
    ) as progress:
        task = progress.add_task(f"{verb}ing", total=total)

        def on_progress(pair: str, change: Change, status: str) -> None:
            key = (pair, change.address)
            if status == "start":
                started[key] = time.monotonic()
                progress.update(task, description=change.address)
                return
            seconds[key] = time.monotonic() - started.get(key, time.monotonic())
            if status == "done":
                progress.advance(task)
                if not as_json:
                    out.print(f"{change.address}: {_DONE[change.action]} ({seconds[key]:.2f}s)", markup=False,
                              highlight=False, soft_wrap=True)
            elif not as_json:
                out.print(f"{_escape(change.address)}: [red]failed[/red] ({seconds[key]:.2f}s)")

        def on_operation(pair: str, op: HostOperation, status: str) -> None:
            key = (pair, f"{op.kind}:{op.node}")
            if status == "start":
                started[key] = time.monotonic()
                progress.update(task, description=f"pair {pair}: node {op.node}: {op.detail}")
                return
            took = time.monotonic() - started.get(key, time.monotonic())
            if not as_json:
                out.print(f"pair {_escape(pair)}: node {_escape(op.node)}: {_escape(op.detail)}: done ({took:.2f}s)")

        results = workspace.execute(work, st, on_progress, on_operation)
    if work.plan.destroy:
        workspace.forget_destroyed_pairs(work, st)
    counts = {key: sum(r.counts.get(key, 0) for r in results) for key in ("add", "change", "destroy")}
    report["summary"] = counts
    for result in results:
        report["pairs"].append({
            "pair": result.pair, "operations": result.operations, "standby_wait_seconds": result.standby_wait,
            "changes": [{"address": a, "seconds": round(seconds.get((result.pair, a), 0.0), 3)} for a in result.done],
        })
        if not as_json:
            waited = f"; standby caught up in {result.standby_wait:.2f}s" if result.standby_wait is not None else ""
            ops = f"{len(result.operations)} host operation(s), " if result.operations else ""
            out.print(f"Pair {result.pair!r}: {ops}{len(result.done)} change(s) applied{waited}.")
    if not as_json:
        out.print(f"[bold green]{verb.capitalize()} complete![/bold green] "
                  f"{counts['add']} added, {counts['change']} changed, {counts['destroy']} destroyed.")


@app.command()
def apply(
    path: Annotated[Path, typer.Argument(help="Spec directory (or a file in it), or a plan file saved with plan --out.")] = workspace.DEFAULT_SPECS,
    auto_approve: AutoApproveOpt = False,
    target: TargetOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    destroy: Annotated[bool, typer.Option("--destroy", help="The same as `pgaasctl destroy` (Terraform's apply -destroy).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON (needs --auto-approve).")] = False,
    store: StoreOpt = None,
) -> None:
    """Make the servers match the specs (or carry out a saved plan)."""
    _apply(path, store, auto_approve, destroy=destroy, targets=target, lock_timeout=lock_timeout, as_json=as_json)


@app.command()
def destroy(
    path: PathArg = workspace.DEFAULT_SPECS,
    auto_approve: AutoApproveOpt = False,
    target: TargetOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON (needs --auto-approve).")] = False,
    store: StoreOpt = None,
) -> None:
    """Drop every object pgaasctl manages on the pairs of the specs."""
    _apply(path, store, auto_approve, destroy=True, targets=target, lock_timeout=lock_timeout, as_json=as_json)


@app.command("import")
def import_(
    address: Annotated[str, typer.Argument(help="Address, e.g. role.orders.orders_app")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Start managing an existing object that is declared in the specs (recorded as imported)."""

    def action() -> None:
        loaded = workspace.load(path)
        st = _open(loaded, store, "create")
        workspace.import_object(loaded.desired, loaded.spec_dir, st, address)
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
        st = _open(workspace.load(path), store, "write")
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
    """Show every pair: nodes, roles, up/down, replication and lag, degraded or not, and where its nodes live.
    Exit 0: every pair healthy; 2: one is degraded; 1: one could not be read (an error)."""

    def action() -> list[PairStatus]:
        loaded = workspace.load(path)
        st = _open(loaded, store, "read")
        return all_status(loaded.desired, st, loaded.pairs_in_scope(), loaded.location.local_dir().source)

    pairs = run(action)
    exit_code = 1 if any(p.error for p in pairs) else 2 if any(p.degraded for p in pairs) else 0
    if as_json:
        print(json.dumps([p.model_dump() for p in pairs], indent=2))
        raise typer.Exit(exit_code)
    for pair in pairs:
        state = "[red]error[/red]" if pair.error else "[yellow]degraded[/yellow]" if pair.degraded else "[green]healthy[/green]"
        out.print(f"[bold]{pair.pair}[/bold] ({pair.provider}, {pair.replication}): {state}")
        if pair.nodes_dir:
            out.print(f"  nodes live in {_escape(pair.nodes_dir)} ({_escape(pair.nodes_dir_source or '')})")
        if pair.error:
            out.print(f"  {_escape(pair.error)}")
            continue
        with_vip = any(node.virtual_ip is not None for node in pair.nodes)
        columns = ["node", "address", "role", "replication", "lag", "repmgrd", "guard"] + (["virtual IP"] if with_vip else [])
        table = Table(*columns, "pending restart", box=None, pad_edge=False)
        for node in pair.nodes:
            lag = "" if node.lag_seconds is None else f"{node.lag_seconds:.3f}s / {node.lag_bytes or 0} B"
            repmgrd = "" if node.repmgrd is None else ("running" if node.repmgrd else "[red]stopped[/red]")
            guard = "" if node.guard is None else ("[red]fenced[/red]" if node.fenced and node.role != "standby" else
                                                   "running" if node.guard else "[red]stopped[/red]")
            vip = ["holds it" if node.virtual_ip else ""] if with_vip else []
            pending = f"[yellow]{', '.join(node.pending_restart)}[/yellow]" if node.pending_restart else ""
            table.add_row(node.name, node.address, node.role, node.replication or "", lag, repmgrd, guard, *vip, pending)
        out.print(table)
        for warning in pair.warnings:
            out.print(f"  [yellow]warning:[/yellow] {_escape(warning)}")
        if pair.health is not None:
            out.print("  " + _health_line(pair.health, pair.health_checked_at))
        for need in pair.needs:
            out.print(f"  apply would: {_escape(need)}")
    raise typer.Exit(exit_code)


@app.command()
def connection(
    pair: Annotated[str, typer.Argument(help="Pair name.")],
    database: Annotated[str | None, typer.Option("--database", help="Database (default postgres).")] = None,
    role: Annotated[str | None, typer.Option("--role", help="Role to log in as.")] = None,
    virtual_ip: Annotated[bool, typer.Option("--virtual-ip", help="One address: the pair's virtual IP, which follows "
                                             "the primary (for clients that cannot use multi-host URIs).")] = False,
    cert_dir: Annotated[Path | None, typer.Option("--cert-dir", help="Where `pgaasctl cert issue` wrote the role's "
                                                  "client certificate: the URI names its files.")] = None,
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Print the connection URI clients should use: every node, read-write target, so it follows a failover
    (or, with --virtual-ip, the pair's virtual IP). A pair with TLS: with its sslmode (and the CA file)."""

    def action() -> str:
        loaded = workspace.load(path)
        desired = loaded.desired
        if pair not in desired.pairs:
            raise PgaasError(f"pair {pair!r} is not declared (pairs: {', '.join(sorted(desired.pairs)) or 'none'})")
        st = _open(loaded, store, "read")
        uri = connection_uri(desired.pairs[pair], desired, st, database, role, virtual_ip)
        if cert_dir is None:
            return uri
        return uri + client_certificate_options(cert_dir, role)

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
        loaded = workspace.load(path)
        st = _open(loaded, store, "write")
        result = workspace.switchover_pair(loaded.desired, st, pair, to)
        _notices(st)
        return result

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
        st = _open(workspace.load(path), store, "write")
        if not st.forget_host_key(endpoint):
            raise PgaasError(f"no SSH host key is pinned for {endpoint}")
        out.print(f"Forgot the SSH host key of {endpoint}; the next connection pins the key it presents.")

    run(action)


@state_app.command("list")
def state_list(path: PathArg = workspace.DEFAULT_SPECS, as_json: JsonOpt = False, store: StoreOpt = None) -> None:
    """List the managed addresses (and how each came to be managed, with --json)."""

    def action() -> list[dict[str, Any]]:
        st = _open(workspace.load(path), store, "read")
        return [m.model_dump(exclude={"attributes"}) for m in st.managed().values()]

    objects = run(action)
    if as_json:
        _print_json(objects)
        return
    for item in objects:
        print(item["address"])


@state_app.command("show")
def state_show(
    address: Annotated[str, typer.Argument(help="Address to show.")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Show what the store records for one address."""

    def action() -> dict[str, Any]:
        st = _open(workspace.load(path), store, "read")
        managed = st.managed_object(address)
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
        st = _open(workspace.load(path), store, "write")
        if not st.forget(address):
            raise PgaasError(f"{address} is not in the state", "See the managed addresses with `pgaasctl state list`.")
        out.print(f"Removed {address} from the state; the object stays on the server, unmanaged.")

    run(action)


@app.command()
def history(
    pair_or_path: Annotated[str | None, typer.Argument(
        metavar="[PAIR|PATH]", help="Only this pair; or, when it names a file or directory, the workspace to read.")] = None,
    path: PathArg = workspace.DEFAULT_SPECS,
    pair: Annotated[str | None, typer.Option("--pair", help="Only this pair.")] = None,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Show recent applies, destroys, switchovers and restarts: who ran them and how they ended."""
    path, pair = _pair_or_path(pair_or_path, path, pair)

    def action() -> list[dict[str, Any]]:
        loaded = workspace.load(path)
        st = _open(loaded, store, "read")
        entries = [e.model_dump() for e in st.history(pair)]
        if pair is not None and not entries and pair not in loaded.desired.pairs and pair not in st.pairs():
            raise PgaasError(f"pair {pair!r} is not declared in {loaded.spec_dir} and has no history",
                             f"Pairs: {', '.join(sorted(loaded.desired.pairs)) or 'none'}.")
        return entries

    entries = run(action)
    if as_json:
        _print_json(entries)
        return
    table = Table("started", "pair", "operation", "status", "by", "changes", "error")
    for entry in entries:
        summary = entry["summary"]
        table.add_row(entry["started_at"], entry["pair"], entry["operation"], entry["status"], entry["actor"],
                      str(len(summary.get("changes", []))), _escape(str(summary.get("error", ""))))
    out.print(table)


@app.command()
def agent(
    path: PathArg = workspace.DEFAULT_SPECS,
    interval: Annotated[str, typer.Option("--interval", help="Time between two rounds: 500ms, 5s, 1m.")] = "5s",
    listen: Annotated[str | None, typer.Option(
        "--listen", metavar="ADDR:PORT", help="Serve /metrics (Prometheus) and /healthz there.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one round, print what it saw, and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every round, not only events and errors.")] = False,
    store: StoreOpt = None,
) -> None:
    """Keep the lookup of every pair's nodes current until stopped (SIGINT or SIGTERM: a clean exit, code 0). Each
    round discovers every pair in parallel, records role, up/down, replication, lag, repmgrd and fencing per node
    and healthy/degraded per pair, and stores the events since the last round (see `pgaasctl events`)."""
    from pgaasctl.durations import parse_duration
    from pgaasctl.monitor.agent import Agent
    from pgaasctl.monitor.endpoint import serve

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    seconds = run(lambda: parse_duration(interval, "--interval"))
    runner = Agent(path=path, store_flag=store, interval=seconds)
    if once:
        try:
            report = run(runner.round)
        finally:
            runner.close()  # the SSH connections and SQL sessions it kept: nothing lingers on the nodes
        _print_json(report.model_dump())
        raise typer.Exit(1 if report.errors else 0)
    # a workspace that cannot load, or has no store yet, is said now and ends the agent, not logged every round
    loaded = run(lambda: workspace.load(path))
    run(lambda: loaded.open_store(store, "write").close())
    server = run(lambda: serve(runner, listen))[0] if listen else None
    stop = threading.Event()

    def stopping(signum: int, frame: Any) -> None:
        stop.set()
        runner.wake()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    err.print(f"pgaasctl agent: a round every {seconds:g}s" + (f", serving http://{listen}/metrics" if listen else "")
              + "; stop with Ctrl-C or SIGTERM.")
    try:
        runner.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.shutdown()
            server.server_close()
    err.print("pgaasctl agent: stopped.")


@app.command()
def events(
    pair_or_path: Annotated[str | None, typer.Argument(
        metavar="[PAIR|PATH]", help="Only this pair; or, when it names a file or directory, the workspace to read.")] = None,
    path: PathArg = workspace.DEFAULT_SPECS,
    pair: Annotated[str | None, typer.Option("--pair", help="Only this pair.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only events of the last 30m, 24h, 7d...")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000, help="At most this many, the newest.")] = 100,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Show what the agent saw happen: failovers, switchovers, nodes down and up, pairs degraded and healthy again,
    nodes fenced. Oldest first."""
    from pgaasctl.durations import parse_duration

    path, pair = _pair_or_path(pair_or_path, path, pair)

    def action() -> list[dict[str, Any]]:
        cutoff = None
        if since is not None:
            seconds = parse_duration(since, "--since")
            cutoff = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
        loaded = workspace.load(path)
        st = _open(loaded, store, "read")
        if pair is not None and pair not in loaded.desired.pairs and pair not in st.pairs() and not st.events(pair, limit=1):
            raise PgaasError(f"pair {pair!r} is not declared in {loaded.spec_dir} and has no events",
                             f"Pairs: {', '.join(sorted(loaded.desired.pairs)) or 'none'}.")
        return [e.model_dump() for e in st.events(pair, cutoff, limit)]

    found = run(action)
    if as_json:
        _print_json(found)
        return
    if not found:
        out.print("No events" + (f" for pair {pair}" if pair else "") + (f" in the last {since}" if since else "")
                  + ". The agent (`pgaasctl agent`) records them.")
        return
    table = Table("at", "pair", "node", "event", "detail")
    for event in found:
        table.add_row(event["at"], event["pair"], event["node"], event["kind"], _escape(event["detail"]))
    out.print(table)


@app.command()
def report(
    path: PathArg = workspace.DEFAULT_SPECS,
    pair: Annotated[str | None, typer.Option("--pair", help="Only this pair (default: every pair of PATH).")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Only this database's charts and rows.")] = None,
    since: Annotated[str, typer.Option("--since", help="The period: 1h, 24h, 7d...")] = "24h",
    fmt: Annotated[str, typer.Option("--format", help="html (self-contained, charts inline), markdown or json.")] = "html",
    output: Annotated[Path | None, typer.Option("--out", help="Write it to this file (default: standard output).")] = None,
    store: StoreOpt = None,
) -> None:
    """A report a database owner would forward: health checks with remedies, charts over the period (sessions,
    transactions per second, cache hit ratio, sizes, replication lag), databases by size and growth, and events.
    Made from the store alone: the agent's history."""
    from pgaasctl.durations import parse_duration
    from pgaasctl.monitor.report import build_report, render_html, render_json, render_markdown

    renderers = {"html": render_html, "markdown": render_markdown, "json": render_json}

    def action() -> str:
        if fmt not in renderers:
            raise PgaasError(f"--format: {fmt!r} is not a report format", "Use html, markdown or json.")
        seconds = parse_duration(since, "--since")
        loaded = workspace.load(path)
        if pair is not None and pair not in loaded.desired.pairs:
            raise PgaasError(f"pair {pair!r} is not declared in {loaded.spec_dir}",
                             f"Pairs: {', '.join(sorted(loaded.desired.pairs)) or 'none'}.")
        pairs = [pair] if pair is not None else sorted(p.name for p in loaded.pairs_in_scope())
        st = _open(loaded, store, "read")
        text = renderers[fmt](build_report(st, pairs, database, seconds))
        if output is not None:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise PgaasError(f"--out {output}: cannot write it: {exc.strerror}",
                                 "Name a file in a directory that exists and that you can write.") from None
        return text

    text = run(action)
    if output is None:
        sys.stdout.write(text)
    else:
        err.print(f"report written to {_escape(str(output))}")


# Terraform's single-dash spellings, accepted as their double-dash equivalents.
_TERRAFORM_FLAGS = {"target", "out", "json", "detailed-exitcode", "auto-approve", "no-color", "lock-timeout",
                    "destroy", "sql", "store"}
# Terraform flags with no pgaasctl meaning: said plainly rather than "No such option: -r".
_NOT_HERE = {
    "refresh": "pgaasctl always reads the servers before planning: there is no -refresh=false",
    "var": "pgaasctl specs have no variables: secrets come from the env vars or files the specs name",
    "var-file": "pgaasctl specs have no variables: secrets come from the env vars or files the specs name",
    "parallelism": "pgaasctl sets its own parallelism (four sessions per pair)",
    "state": "the state store is chosen with --store URL, $PGAASCTL_STORE or the Workspace document",
    "lock": "pgaasctl always locks a pair while it changes it",
}
NO_INPUT_ENV = "PGAASCTL_NO_INPUT"


class UnsupportedFlag(Exception):
    pass


def normalise_argv(argv: list[str]) -> list[str]:
    """-target=x -> --target=x; --no-color anywhere sets NO_COLOR; -input=false forbids prompts; --version."""
    if argv in (["--version"], ["-version"], ["-v"]):
        return ["version"]
    out_args: list[str] = []
    for arg in argv:
        name = arg.lstrip("-").split("=", 1)[0] if arg.startswith("-") and arg != "-" else None
        if arg.startswith("-") and not arg.startswith("--") and name in _TERRAFORM_FLAGS:
            arg = "-" + arg
        if arg == "--no-color":
            os.environ["NO_COLOR"] = "1"
            continue
        if name == "input":
            if arg.split("=", 1)[-1].lower() in ("false", "0", "no"):
                os.environ[NO_INPUT_ENV] = "1"
            continue
        if name in _NOT_HERE:
            raise UnsupportedFlag(f"{arg}: {_NOT_HERE[name]}.")
        out_args.append(arg)
    return out_args


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


@app.command()
def promote(
    pair: Annotated[str, typer.Argument(help="Pair name.")],
    node: Annotated[str, typer.Argument(help="The standby to promote.")],
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Promote a standby when repmgrd did not (no node is primary), through pgaasctl's promote hook. Refused when
    a node is primary already or another node is on a newer timeline."""

    def action() -> None:
        loaded = workspace.load(path)
        st = _open(loaded, store, "write")
        workspace.promote_node(loaded.desired, st, pair, node)
        _notices(st)

    run(action)
    out.print(f"[green]Promoted:[/green] {node} is the primary of {pair!r}. The pair stays degraded until "
              "`pgaasctl apply` rejoins its other node.")


@app.command()
def restart(
    pair: Annotated[str, typer.Argument(help="Pair name.")],
    pending: Annotated[bool, typer.Option(
        "--pending", help="Only nodes whose settings wait for a restart; when none do, do nothing.")] = False,
    path: PathArg = workspace.DEFAULT_SPECS,
    store: StoreOpt = None,
) -> None:
    """Restart a pair's PostgreSQL: the standby first, then the primary by switchover (in place, first, when a
    hot-standby parameter is lowered). Says how long writes paused."""

    def action() -> workspace.RestartReport:
        loaded = workspace.load(path)
        st = _open(loaded, store, "write")
        report = workspace.restart_pair(loaded.desired, st, pair, pending)
        _notices(st)
        return report

    for line in _restart_lines(run(action), pending):
        out.print(line)


def _restart_lines(report: workspace.RestartReport, pending_only: bool) -> list[str]:
    if report.order is None:
        what = "no restart is pending" if pending_only else "no node to restart"
        return [f"Pair {report.pair!r}: {what}; nothing was restarted."]
    lines = []
    waiting = {node: [p.name for p in pending] for node, pending in report.pending.items() if pending}
    if waiting:
        lines.append(f"Pair {report.pair!r}: waiting for a restart: "
                     + "; ".join(f"{node}: {', '.join(names)}" for node, names in waiting.items()) + ".")
    if report.order == "in place" and report.lowered:
        if len(report.lowered) == 1:
            first = report.lowered[0]
            what = f"{first.name} is lowered ({first.running} -> {first.configured})"
        else:
            what = " and ".join(f"{p.name} ({p.running} -> {p.configured})" for p in report.lowered) + " are lowered"
        lines.append(f"{what}: a standby may not run it below its primary, so the primary restarts in place first "
                     "(writes pause while it is down), then the standby.")
    elif report.order == "in place":
        lines.append("The pair has no standby: the primary restarts in place (writes pause while it is down).")
    elif report.order == "switchover":
        first = "The standby restarts first; then the primary" if len(report.nodes) > 1 else "The primary restarts"
        lines.append(f"{first}, by switchover: the standby takes over and the old primary restarts as its standby.")
    else:
        lines.append("Only the standby restarts; the primary keeps running.")
    for node in report.nodes:
        lines.append(f"  {node.node} ({node.role}): {node.how} in {node.seconds:.2f}s")
    if report.write_pause is not None:
        lines.append(f"  writes paused {report.write_pause:.2f}s (from the primary's stop to the first commit on "
                     f"{report.primary})")
    if report.standby_wait is not None:
        lines.append(f"  commits waited {report.standby_wait:.2f}s while the standby restarted (synchronous replication)")
    lines.append(f"[green]Restart complete:[/green] {report.primary} is the primary of {report.pair!r}.")
    return lines


from pgaasctl import cli_service  # noqa: E402,F401 - registers serve, user and token
from pgaasctl import cli_cert  # noqa: E402,F401 - registers cert


def main() -> None:
    global out, err
    signal.signal(signal.SIGTERM, _terminate)
    # A command builds a large workspace's objects by the hundred thousand and drops them when it ends: collecting
    # cycles after every 700 allocations spent a third of a plan's time scanning them. The modules' objects are
    # frozen out of every scan; cycles are still collected, less often.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    try:
        args = normalise_argv(sys.argv[1:])
    except UnsupportedFlag as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if os.environ.get("NO_COLOR"):
        out, err = _console(stderr=False), _console(stderr=True)
    try:
        app(args=args, prog_name="pgaasctl")
    except BrokenPipeError:
        sys.stderr.close()


if __name__ == "__main__":
    main()
