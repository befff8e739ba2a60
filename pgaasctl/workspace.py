"""The workspace: where the specs are, which state store, and the operations the CLI, API and console share."""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgaasctl.apply.executor import (
    ApplyResult,
    Executor,
    ProgressCallback,
    take_advisory_lock,
    wait_for_standbys,
)
from pgaasctl.apply.operations import HostOperator, OperationCallback
from pgaasctl.apply.promote import promote
from pgaasctl.apply.restart import PairRestart, RestartReport
from pgaasctl.apply.switchover import switchover
from pgaasctl.errors import PgaasError
from pgaasctl.hosts.bootstrap import node_files_version
from pgaasctl.plan.build import certificate_roles
from pgaasctl.plan.diff import tls_record
from pgaasctl.tls.workspace_ca import resolved
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.plan.build import (
    LivePair,
    PairInputs,
    close_pairs,
    finish_pair_plan,
    make_plan,
    pair_inputs,
    pairs_targeted,
    plan_pair,
)
from pgaasctl.plan.model import Change, HostOperation, PairPlan, Plan, count_changes
from pgaasctl.parallel import ThreadPool
from pgaasctl.password_memory import remember
from pgaasctl.plan.planfile import check_still_valid
from pgaasctl.live import scram_keys
from pgaasctl.live.topology import probe_pair
from pgaasctl.locate import WorkspaceLocation, locate
from pgaasctl.spec.desired import DesiredPair, DesiredState, load_desired
from pgaasctl.spec.models import CreatedPairSpec
from pgaasctl.store import Store, StoreMissing, open_store
from pgaasctl.store.store import OpenMode

DEFAULT_SPECS = Path("specs")


@dataclass
class LoadedWorkspace:
    """The specs of a whole workspace, where it lives, and the part of it PATH named."""

    location: WorkspaceLocation
    desired: DesiredState
    part_addresses: list[str] | None  # the objects the named file or directory declares; None: all of it

    @property
    def spec_dir(self) -> Path:
        return self.location.spec_dir

    def open_store(self, flag: str | None, mode: OpenMode) -> Store:
        setting = self.location.store(flag)
        try:
            return open_store(setting.value, self.location.root, mode)
        except StoreMissing as exc:
            raise StoreMissing(f"{exc.message} (from {setting.source})", exc.hint) from None

    def targets(self, given: list[str] | None) -> list[str] | None:
        """--target addresses (a trailing dot is a prefix's), else the addresses the named part declares, else
        None (everything)."""
        if given and any(not t.strip(".").strip() for t in given):
            raise PgaasError("--target needs an address, e.g. --target role.orders.app (or a prefix: role.orders)")
        return [t.rstrip(".") for t in given] if given else self.part_addresses

    def pairs_in_scope(self) -> list[DesiredPair]:
        return pairs_targeted(self.desired, self.part_addresses)


def load(path: Path) -> LoadedWorkspace:
    """Find the workspace of `path`, load all of it, and resolve its paths against its root."""
    location = locate(path)
    desired = load_desired(location.spec_dir)
    desired.workspace = desired.workspace.model_copy(update={
        "local_dir": location.local_dir().value, "tls": resolved(desired.workspace.tls, location.root),
        "cloud_dir": str(location.cloud_dir()), "secrets_dir": str(location.secrets_dir())})
    scram_keys.load_salts(Path(desired.workspace.secrets_dir) / scram_keys.SALTS_FILE)
    part: list[str] | None = None
    if location.part is not None:
        inside = [d for d in desired.documents
                  if d.address != "workspace" and (d.source.file == location.part or location.part in d.source.file.parents)]
        if not inside:
            raise PgaasError(f"{location.part} declares no pair, role, database or grant",
                             f"Name the workspace ({location.spec_dir}) or a file that declares objects.")
        part = sorted(d.address for d in inside)
    return LoadedWorkspace(location=location, desired=desired, part_addresses=part)


def check_targets(desired: DesiredState, store: Store, targets: list[str] | None) -> None:
    """Every --target must name (or be a prefix of) an address the specs declare or the store manages."""
    if not targets:
        return
    known = set(desired.by_address()) | set(store.managed()) | {f"pair.{p}" for p in desired.pairs}
    known.discard("workspace")
    for target in targets:
        stem = target.rstrip(".")
        if target == "pair" or any(a == stem or a.startswith(stem + ".") for a in known):
            continue
        close = difflib.get_close_matches(stem, sorted(known), n=3, cutoff=0.5)
        hint = f"Did you mean {', '.join(close)}?" if close else "See the addresses with `pgaasctl state list` and the specs."
        raise PgaasError(f"--target {target} matches nothing in the specs or the state", hint)


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
    check_targets(desired, store, targets)
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
                saved_path: Path | None = None, lock_timeout: float | None = None) -> Iterator[PlannedWork]:
    """Lock every pair of the specs (store lock, then pg_advisory_lock on each primary), then plan.

    With `saved`, the fresh plan must match it exactly, or StalePlan is raised.
    """
    lock_timeout = desired.workspace.lock_timeout if lock_timeout is None else lock_timeout
    check_targets(desired, store, targets)
    with ExitStack() as stack:
        for pair in sorted(p.name for p in pairs_targeted(desired, targets)):
            stack.enter_context(store.locked(pair, "destroy" if destroy else "apply", lock_timeout))
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
    """Apply every pair, up to Workspace parallel_pairs at once (pairs are independent: each has its own lock,
    hosts and primary): host operations first, then the pair is planned again and its changes run; then wait for
    standbys; record history. A pair that fails does not stop the others; the failures are raised together."""
    operation = "destroy" if work.plan.destroy else "apply"
    todo = [p for p in work.plan.pairs if p.changes or p.operations]

    def one(pair_plan: PairPlan) -> ApplyResult:
        with recorded(store, pair_plan.pair, operation) as recording:
            done = _Done(on_progress, on_operation, recording)  # what ran, for the history, however it ends
            result = _apply_pair(work, store, pair_plan.pair, done.on_progress, done.on_operation)
            result.counts = count_changes(pair_plan.changes)  # what the reviewed plan showed, not the re-plan
        return result

    if len(todo) <= 1:
        work.results.extend(one(p) for p in todo)
        return work.results
    failures: list[tuple[str, PgaasError]] = []
    with ThreadPool(max_workers=min(work.desired.workspace.parallel_pairs, len(todo))) as pool:
        futures = [(p.pair, pool.submit(one, p)) for p in todo]
        for pair, future in futures:  # in plan order, whichever finishes first
            try:
                work.results.append(future.result())
            except PgaasError as exc:
                failures.append((pair, exc))
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        raise PgaasError(f"{len(failures)} pairs failed:\n" + "\n".join(f"  {pair}: {exc.message}" for pair, exc in failures),
                         "The other pairs were applied. Fix the causes, then apply again: it goes on from here.")
    return work.results


@dataclass
class _Done:
    """Passes progress on, keeping the changes and host operations that completed."""

    forward_change: ProgressCallback | None
    forward_operation: OperationCallback | None
    recording: Recording  # the history entry's: changes and operations, as they complete

    def on_progress(self, pair: str, change: Change, status: str) -> None:
        if status == "done":
            self.recording.add("changes", change.address)
        if self.forward_change is not None:
            self.forward_change(pair, change, status)

    def on_operation(self, pair: str, op: HostOperation, status: str) -> None:
        if status == "done":
            self.recording.add("operations", f"node {op.node}: {op.detail}")
        if self.forward_operation is not None:
            self.forward_operation(pair, op, status)


def _record_failover(store: Store, live: LivePair) -> None:
    """repmgr.conf now says what the spec says: the store must too, or the next plan reconfigures again."""
    address = f"pair.{live.plan.pair}"
    managed = store.managed_object(address)
    spec = live.inputs.pair.doc.spec
    if managed is not None and isinstance(spec, CreatedPairSpec):
        store.record(address, live.plan.pair, "pair", live.plan.pair,
                     {**{k: v for k, v in managed.attributes.items() if k not in ("tls", "clients")},
                      **({"clients": [str(n) for n in spec.clients]} if spec.clients else {}),
                      "failover": spec.failover.model_dump(),
                      "node_files": node_files_version(live.inputs.push),
                      **({"tls": tls} if (tls := tls_record(spec, certificate_roles(live.inputs.pair))) else {})})


def _record_node_ids(store: Store, pair: str, operations: list[HostOperation], before: bool) -> None:
    """The repmgr node id of each node an operation registers, kept before it runs; a removed node's, dropped
    after. Ids are never reused for another node name."""
    for op in operations:
        if before and op.node_id is not None and op.kind != "remove_node":
            store.record_node_id(pair, op.node, op.node_id)
        elif not before and op.kind == "remove_node":
            store.forget_node_id(pair, op.node)


MAX_OPERATION_ROUNDS = 3  # e.g. start a host, then find its PostgreSQL needs a rejoin


def _apply_pair(work: PlannedWork, store: Store, name: str, on_progress: ProgressCallback | None,
                on_operation: OperationCallback | None) -> ApplyResult:
    live = work.live[name]
    operations_done: list[str] = []
    shown = {(c.address, c.action) for c in live.plan.changes}  # the reviewed plan
    created = next((c for c in live.plan.changes if c.kind == "pair" and c.action == "create"), None)
    if created is not None and created.record is not None:
        # intent first: a pair whose creation is killed midway is still pgaasctl's creation, not an adoption
        store.record_intent(created.address, name, "pair", name, created.record, "created")
    rounds = 0
    while live.plan.operations:
        rounds += 1
        if rounds > MAX_OPERATION_ROUNDS:
            raise PgaasError(f"pair {name!r} still needs host operations after {MAX_OPERATION_ROUNDS} rounds",
                             "Look at `pgaasctl status`, then run apply again.")
        _record_node_ids(store, name, live.plan.operations, before=True)
        operations_done += HostOperator(live.inputs, work.ssh, on_operation).run(live.plan.operations)
        _record_node_ids(store, name, live.plan.operations, before=False)
        if any(op.kind == "reconfigure_repmgr" for op in live.plan.operations):
            _record_failover(store, live)
        if any(op.kind == "destroy_hosts" for op in live.plan.operations):
            live.plan.operations = []
            break
        # The hosts changed under the plan: plan the pair again, now that it has a primary. Only what the
        # reviewed plan showed may run; anything else waits for a new plan.
        live.close()
        live = plan_pair(pair_inputs(live.inputs.pair, work.desired.workspace, store, role_secrets=True), store,
                         work.ssh, work.plan.destroy, work.plan.targets)
        try:
            finish_pair_plan(live, store, work.plan.targets or None)
        except BaseException:
            live.close()
            raise
        unshown = sorted(f"{action} {address}" for address, action in {(c.address, c.action) for c in live.plan.changes}
                         - shown if not address.startswith("pair.") and (address, "create") not in shown)
        if unshown:
            live.close()
            raise PgaasError(
                f"pair {name!r}: its hosts are up, but it needs changes the plan did not show: {', '.join(unshown)}",
                "Review them with `pgaasctl plan`, then apply again.",
            )
        for change in live.plan.changes:  # what the reviewed plan showed as created is recorded as created
            if change.action == "adopt" and (change.address, "create") in shown:
                change.action = "create"
        work.live[name] = live
        if live.state is not None:
            take_advisory_lock(live.state.connection, name)
    result = Executor(live, store, on_progress, sessions=work.desired.workspace.sessions).run()
    result.operations = operations_done
    checked = {role: facts for role, facts in live.inputs.checked_passwords.items()
               if facts[2] or f"role.{name}.{role}" in result.done}  # matched before, or set by this apply
    remember(work.desired.workspace.secrets_dir, store, name, {r: (p, v) for r, (p, v, _) in checked.items()})
    if live.state is not None:
        result.standby_wait = wait_for_standbys(live, work.desired.workspace.standby_timeout)
    return result


def forget_destroyed_pairs(work: PlannedWork, store: Store) -> None:
    """After a destroy, drop pairs with nothing left managed from the store's node lookup."""
    for pair in work.plan.pairs:
        if not store.managed(pair.pair):
            store.forget_pair(pair.pair)
            store.forget_certificates(pair.pair)


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
    if store.managed_object(address) is not None:
        raise PgaasError(f"{address} is already managed")
    pair_name = address.split(".")[1]
    ssh = SshSessions(store)
    try:
        plan, live = make_plan(desired, store, path, ssh, targets=[address], adopting=frozenset([address]))
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
        store.record(address, pair_name, kind, name, record, origin="imported")
    finally:
        close_pairs(live)
    return address


def _repmgr_pair(desired: DesiredState, store: Store, pair_name: str, cannot: str, hint: str) -> PairInputs:
    """The inputs of a declared pair that pgaasctl reaches over SSH (it drives repmgr there)."""
    pair = desired.pairs.get(pair_name)
    if pair is None:
        raise PgaasError(f"pair {pair_name!r} is not declared (pairs: {', '.join(sorted(desired.pairs)) or 'none'})")
    inputs = pair_inputs(pair, desired.workspace, store)
    if not inputs.uses_ssh:
        raise PgaasError(f"pair {pair_name!r} has no SSH access, so pgaasctl cannot {cannot}", hint)
    return inputs


@dataclass
class Recording:
    """A history entry being written: what ran so far is saved as it goes (at most four times a second), so even a
    kill -9 leaves a record of it."""

    store: Store
    entry: str
    summary: dict[str, Any] = field(default_factory=dict)
    saved_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)  # changes complete on the executor's threads

    def add(self, key: str, item: str) -> None:
        with self.lock:
            self.summary.setdefault(key, []).append(item)
            if time.monotonic() - self.saved_at >= 0.25:
                self.saved_at = time.monotonic()
                self.store.save_progress(self.entry, self.summary)


@contextmanager
def recorded(store: Store, pair: str, operation: str) -> Iterator[Recording]:
    """One history entry for the block: `failed` with its error, `interrupted` (a signal, Ctrl-C), or `applied`;
    the block fills in the summary as it goes, so a failure still records what ran."""
    rec = Recording(store=store, entry=store.begin(pair, operation))
    try:
        yield rec
    except PgaasError as exc:
        store.finish(rec.entry, "failed", {"error": exc.message, **rec.summary})
        raise
    except BaseException:
        store.finish(rec.entry, "interrupted", {"error": "interrupted (a signal or Ctrl-C)", **rec.summary})
        raise
    store.finish(rec.entry, "applied", rec.summary)


def switchover_pair(desired: DesiredState, store: Store, pair_name: str, to: str | None) -> tuple[str, str]:
    """Planned switchover of a repmgr pair, holding the pair's lock."""
    inputs = _repmgr_pair(desired, store, pair_name, "drive repmgr there", "Give its nodes `ssh:` settings in the Pair spec.")
    with store.locked(pair_name, "switchover", desired.workspace.lock_timeout), \
            recorded(store, pair_name, "switchover") as recording:
        ssh = SshSessions(store)
        try:
            topology = inputs.topology(ssh)
            if topology.state is not None:
                topology.state.close()
            operator = HostOperator(inputs, ssh)
            hosts = {h.node: h for h in inputs.hosts}
            old, new = switchover(topology, hosts, inputs.addresses, operator.bootstrap, to, inputs.synchronous)
        finally:
            ssh.close()
        recording.add("operations", f"{new} promoted; {old} follows it")
        return old, new


def restart_pair(desired: DesiredState, store: Store, pair_name: str, pending_only: bool) -> RestartReport:
    """Restart a repmgr pair's PostgreSQL, the standby first, holding the pair's lock (see apply/restart.py).
    With `pending_only`, only the nodes whose settings wait for a restart. Recorded in the history when a node
    restarts."""
    inputs = _repmgr_pair(desired, store, pair_name, "restart its servers",
                          "Restart PostgreSQL on each node yourself (the standby first), or give its nodes `ssh:` settings.")
    with store.locked(pair_name, "restart", desired.workspace.lock_timeout):
        ssh = SshSessions(store)
        try:
            restart = PairRestart(inputs.topology(ssh), {h.node: h for h in inputs.hosts}, inputs.addresses,
                                  HostOperator(inputs, ssh).bootstrap, inputs.synchronous)
            report = restart.prepare(pending_only)
            if report.order is None:
                return report
            with recorded(store, pair_name, "restart") as recording:
                restart.run(report)
                recording.summary.update(report.summary())
            return report
        finally:
            ssh.close()


def promote_node(desired: DesiredState, store: Store, pair_name: str, node: str) -> None:
    """Promote a standby by hand, through pgaasctl's promote hook, holding the pair's lock (apply/promote.py)."""
    inputs = _repmgr_pair(desired, store, pair_name, "promote its nodes",
                          "Promote it on the server yourself, then clear synchronous_standby_names there.")
    with store.locked(pair_name, "promote", desired.workspace.lock_timeout), \
            recorded(store, pair_name, "promote") as recording:
        ssh = SshSessions(store)
        try:
            reports = probe_pair(pair_name, inputs.hosts, inputs.addresses, ssh)
            promote(pair_name, reports, node, HostOperator(inputs, ssh).bootstrap)
        finally:
            ssh.close()
        recording.add("operations", f"node {node}: promoted by hand")


def renew_certificates(desired: DesiredState, store: Store, pair_name: str, crl_only: bool = False) -> list[str]:
    """`pgaasctl cert rotate`: a fresh server certificate on every node of a pair with TLS, then a reload (no
    downtime: sessions and replication go on); with `crl_only`, the revocation list alone. Holds the pair's lock;
    returns the nodes done. A node that is down gets its files at its next start by apply."""
    inputs = _repmgr_pair(desired, store, pair_name, "install certificates there", "Give its nodes `ssh:` settings.")
    spec = inputs.pair.doc.spec
    managed = store.managed_object(f"pair.{pair_name}")
    if not isinstance(spec, CreatedPairSpec) or managed is None:
        raise PgaasError(f"pair {pair_name!r} has no certificates pgaasctl issued", "Only pairs pgaasctl creates "
                         "(providers local, openstack and gcp) get them, at their `pgaasctl apply`.")
    done: list[str] = []
    with store.locked(pair_name, "cert rotate", desired.workspace.lock_timeout), \
            recorded(store, pair_name, "cert rotate" if not crl_only else "cert revoke") as recording:
        ssh = SshSessions(store)
        try:
            bootstrap = HostOperator(inputs, ssh).bootstrap
            witness = inputs.witness_host()
            for host in [*inputs.hosts, *([witness] if witness is not None else [])]:
                if not host.exists or not bootstrap.postgres_running(host):
                    continue
                bootstrap.renew_tls(host, crl_only)
                done.append(host.node)
        finally:
            ssh.close()
        recording.add("operations", f"{'revocation list' if crl_only else 'server certificates'} renewed on "
                      f"{', '.join(done) or 'no node'}")
    return done
