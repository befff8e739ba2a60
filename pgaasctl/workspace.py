"""The workspace: where the specs are, which state store, and the operations the CLI, API and console share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pgaasctl.apply.executor import (
    ApplyResult,
    Executor,
    ProgressCallback,
    take_advisory_lock,
    wait_for_standbys,
)
from pgaasctl.apply.operations import HostOperator, OperationCallback
from pgaasctl.apply.switchover import switchover
from pgaasctl.errors import PgaasError, SpecError
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.plan.build import (
    LivePair,
    close_pairs,
    filter_targets,
    make_plan,
    pair_inputs,
    plan_pair,
)
from pgaasctl.plan.model import Plan
from pgaasctl.plan.planfile import check_still_valid
from pgaasctl.spec.desired import DesiredState
from pgaasctl.spec.loader import load_path
from pgaasctl.spec.models import LocalPairSpec, WorkspaceDoc, WorkspaceSpec
from pgaasctl.store import Store, open_store

DEFAULT_SPECS = Path("specs")
STORE_ENV = "PGAASCTL_STORE"


def workspace_settings(path: Path) -> WorkspaceSpec:
    """The Workspace document under `path`, or the defaults. Spec errors elsewhere are not raised here."""
    try:
        docs = load_path(path)
    except SpecError:
        return WorkspaceSpec()
    found = [d.doc.spec for d in docs if isinstance(d.doc, WorkspaceDoc)]
    return found[0] if found else WorkspaceSpec()


def open_workspace_store(path: Path, explicit: str | None, desired: DesiredState | None = None) -> Store:
    """The store named by --store, $PGAASCTL_STORE, the Workspace document, or the default, in that order."""
    url = explicit or os.environ.get(STORE_ENV)
    if url is None:
        url = desired.workspace.store if desired is not None else workspace_settings(path).store
    return open_store(url)


@dataclass
class PlannedWork:
    """A plan with its live connections and SSH sessions, ready to apply; close() when done."""

    desired: DesiredState
    plan: Plan
    live: dict[str, LivePair]
    ssh: SshSessions
    results: list[ApplyResult] = field(default_factory=list)

    def close(self) -> None:
        close_pairs(self.live)
        self.ssh.close()


def plan_specs(desired: DesiredState, path: Path, store: Store, destroy: bool = False,
               targets: list[str] | None = None) -> PlannedWork:
    ssh = SshSessions(store)
    try:
        plan, live = make_plan(desired, store, path, ssh, destroy=destroy, targets=targets)
    except BaseException:
        ssh.close()
        raise
    return PlannedWork(desired=desired, plan=plan, live=live, ssh=ssh)


@contextmanager
def locked_plan(desired: DesiredState, path: Path, store: Store, destroy: bool = False,
                targets: list[str] | None = None, saved: Plan | None = None,
                saved_path: Path | None = None) -> Iterator[PlannedWork]:
    """Lock every pair of the specs (store lock, then pg_advisory_lock on each primary), then plan.

    With `saved`, the fresh plan must match it exactly, or StalePlan is raised.
    """
    with ExitStack() as stack:
        for pair in sorted(desired.pairs):
            stack.enter_context(store.locked(pair, "destroy" if destroy else "apply", desired.workspace.lock_timeout))
        ssh = SshSessions(store)
        stack.callback(ssh.close)
        plan, live = make_plan(desired, store, path, ssh, destroy=destroy, targets=targets)
        work = PlannedWork(desired=desired, plan=plan, live=live, ssh=ssh)
        stack.callback(work.close)
        for name, item in live.items():
            if item.state is not None:
                take_advisory_lock(item.state.connection, name)
        if saved is not None:
            check_still_valid(saved, plan, saved_path or Path("plan"))
        yield work


def execute(work: PlannedWork, store: Store, on_progress: ProgressCallback | None = None,
            on_operation: OperationCallback | None = None) -> list[ApplyResult]:
    """Apply every pair (one after another): host operations first, then the pair is planned again and its
    changes run; then wait for standbys; record history."""
    operation = "destroy" if work.plan.destroy else "apply"
    for pair_plan in work.plan.pairs:
        if not pair_plan.changes and not pair_plan.operations:
            continue
        entry = store.begin(pair_plan.pair, operation)
        try:
            result = _apply_pair(work, store, pair_plan.pair, on_progress, on_operation)
        except PgaasError as exc:
            store.finish(entry, "failed", {"error": exc.message})
            raise
        except BaseException:
            store.finish(entry, "interrupted", {})
            raise
        store.finish(entry, "applied", {"changes": result.done, "operations": result.operations})
        work.results.append(result)
    return work.results


def _record_failover(store: Store, live: LivePair) -> None:
    """repmgr.conf now says what the spec says: the store must too, or the next plan reconfigures again."""
    address = f"pair.{live.plan.pair}"
    managed = store.managed(live.plan.pair).get(address)
    spec = live.inputs.pair.doc.spec
    if managed is not None and isinstance(spec, LocalPairSpec):
        store.record(address, live.plan.pair, "pair", live.plan.pair, {**managed.attributes, "failover": spec.failover.model_dump()})


MAX_OPERATION_ROUNDS = 3  # e.g. start a host, then find its PostgreSQL needs a rejoin


def _apply_pair(work: PlannedWork, store: Store, name: str, on_progress: ProgressCallback | None,
                on_operation: OperationCallback | None) -> ApplyResult:
    live = work.live[name]
    operations_done: list[str] = []
    rounds = 0
    while live.plan.operations:
        rounds += 1
        if rounds > MAX_OPERATION_ROUNDS:
            raise PgaasError(f"pair {name!r} still needs host operations after {MAX_OPERATION_ROUNDS} rounds",
                             "Look at `pgaasctl status`, then run apply again.")
        operations_done += HostOperator(live.inputs, work.ssh, on_operation).run(live.plan.operations)
        if any(op.kind == "reconfigure_repmgr" for op in live.plan.operations):
            _record_failover(store, live)
        if any(op.kind == "destroy_hosts" for op in live.plan.operations):
            live.plan.operations = []
            break
        # The hosts changed under the plan: plan the pair again, now that it has a primary. Only what the
        # reviewed plan showed may run; anything else waits for a new plan.
        shown = {(c.address, c.action) for c in live.plan.changes}
        live.close()
        live = plan_pair(pair_inputs(live.inputs.pair, work.desired.workspace, store), store, work.ssh,
                         work.plan.destroy, work.plan.targets)
        if work.plan.targets:
            live.plan.changes = filter_targets(live.plan.changes, work.plan.targets)
        unshown = sorted(f"{action} {address}" for address, action in {(c.address, c.action) for c in live.plan.changes}
                         - shown if not address.startswith("pair.") and (address, "create") not in shown)
        if unshown:
            live.close()
            raise PgaasError(
                f"pair {name!r}: its hosts are up, but it needs changes the plan did not show: {', '.join(unshown)}",
                "Review them with `pgaasctl plan`, then apply again.",
            )
        work.live[name] = live
        if live.state is not None:
            take_advisory_lock(live.state.connection, name)
    result = Executor(live, store, on_progress).run()
    result.operations = operations_done
    if live.state is not None:
        result.standby_wait = wait_for_standbys(live, work.desired.workspace.standby_timeout)
    return result


def forget_destroyed_pairs(work: PlannedWork, store: Store) -> None:
    """After a destroy, drop pairs with nothing left managed from the store's node lookup."""
    for pair in work.plan.pairs:
        if not store.managed(pair.pair):
            store.forget_pair(pair.pair)


def import_object(desired: DesiredState, path: Path, store: Store, address: str) -> str:
    """Start managing an object that exists on the server and is declared in the specs."""
    loaded = desired.by_address().get(address)
    if loaded is None:
        raise PgaasError(
            f"{address} is not declared in the specs under {path}",
            "Declare it first (so the next plan does not drop it), then import it.",
        )
    kind = address.split(".", 1)[0]
    if kind == "pair":
        raise PgaasError("pairs are not imported: the first apply of a Pair starts managing it")
    if store.managed().get(address):
        raise PgaasError(f"{address} is already managed")
    pair_name = address.split(".")[1]
    ssh = SshSessions(store)
    try:
        plan, live = make_plan(desired, store, path, ssh, targets=[address])
    finally:
        ssh.close()
    try:
        change = next((c for p in plan.pairs for c in p.changes if c.address == address), None)
        catalog = live[pair_name].catalog
        if change is not None and change.action == "create":
            raise PgaasError(f"{address} does not exist on pair {pair_name!r}; apply creates it, there is nothing to import")
        if kind == "role" and loaded.doc.metadata.name not in catalog.roles or (
            kind == "database" and loaded.doc.metadata.name not in catalog.databases
        ):
            raise PgaasError(f"{address} does not exist on pair {pair_name!r}")
        if change is None or change.record is None:
            raise PgaasError(f"{address} cannot be imported: the plan has no entry for it")
        record = change.record
        name = address.split(".", 2)[2]
        store.record(address, pair_name, kind, name, record)
    finally:
        close_pairs(live)
    return address


def switchover_pair(desired: DesiredState, store: Store, pair_name: str, to: str | None) -> tuple[str, str]:
    """Planned switchover of a repmgr pair, holding the pair's lock."""
    pair = desired.pairs.get(pair_name)
    if pair is None:
        raise PgaasError(f"pair {pair_name!r} is not declared (pairs: {', '.join(sorted(desired.pairs)) or 'none'})")
    inputs = pair_inputs(pair, desired.workspace, store)
    if not inputs.uses_ssh:
        raise PgaasError(f"pair {pair_name!r} has no SSH access, so pgaasctl cannot drive repmgr there",
                         "Give its nodes `ssh:` settings in the Pair spec.")
    with store.locked(pair_name, "switchover", desired.workspace.lock_timeout):
        ssh = SshSessions(store)
        try:
            topology = inputs.topology(ssh)
            if topology.state is not None:
                topology.state.close()
            operator = HostOperator(inputs, ssh)
            hosts = {h.node: h for h in inputs.hosts}
            return switchover(topology, hosts, inputs.addresses, operator.bootstrap, to, inputs.synchronous)
        finally:
            ssh.close()
