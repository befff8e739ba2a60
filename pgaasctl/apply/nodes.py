"""Removing a node the spec no longer declares: the primary stops waiting for it, its host goes (for hosts a
provider made), repmgr forgets it, and its replication slot is dropped so the primary keeps no WAL for it."""

from __future__ import annotations

import shlex
import time

from pgaasctl.errors import PgaasError
from pgaasctl.hosts.bootstrap import repmgr_env, target_of
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.live.connect import connect
from pgaasctl.plan.build import PairInputs
from pgaasctl.plan.model import HostOperation

SLOT_RELEASE_TIMEOUT = 15.0  # seconds for the walsender of a stopped standby to let go of its slot


def remove_node(inputs: PairInputs, ssh: SshSessions, op: HostOperation) -> None:
    pair = inputs.pair.name
    primary = next((h for h in inputs.hosts if h.node == op.peer), None)
    if primary is None or op.peer not in inputs.addresses:
        raise PgaasError(f"pair {pair!r}: cannot remove node {op.node}: its primary {op.peer} is not known")
    if len(inputs.hosts) == 1:
        # the primary is about to be alone: a synchronous primary would wait for the departing standby forever
        with connect(inputs.addresses[primary.node]) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
            conn.execute("SELECT pg_reload_conf()")
    if any(h.node == op.node for h in inputs.undeclared):
        inputs.provider.remove_host(inputs.pair.doc, op.node)
    if op.node_id is None:
        return
    with connect(inputs.addresses[primary.node], "repmgr") as conn:
        row = conn.execute("SELECT type FROM repmgr.nodes WHERE node_id = %s", (op.node_id,)).fetchone()
        if row is not None and row[0] == "witness":
            # `repmgr witness unregister` runs on the witness, whose host is gone: its record goes by hand
            conn.execute("DELETE FROM repmgr.nodes WHERE node_id = %s AND type = 'witness'", (op.node_id,))
            return
    env, conf = repmgr_env(primary), shlex.quote(primary.repmgr_conf or "/etc/repmgr.conf")
    ssh.check(target_of(primary),
              f"{env}{shlex.quote(primary.bin_dir + '/repmgr')} -f {conf} standby unregister --node-id={op.node_id}",
              f"repmgr standby unregister of node {op.node}")
    _drop_slot(inputs, primary.node, f"repmgr_slot_{op.node_id}")


def _drop_slot(inputs: PairInputs, primary: str, slot: str) -> None:
    deadline = time.monotonic() + SLOT_RELEASE_TIMEOUT
    with connect(inputs.addresses[primary]) as conn:
        while True:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if row is None:
                return
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            if time.monotonic() > deadline:
                raise PgaasError(
                    f"pair {inputs.pair.name!r}: replication slot {slot} is still in use: the removed node streams",
                    "Stop its PostgreSQL, then run apply again to drop the slot.",
                )
            time.sleep(0.1)  # polling the walsender's exit
