"""The bootstrap path, over SSH, the same for every provider: configuration, initdb, repmgr, repmgrd.

Configuration lives outside the data directory (config_dir), so that pg_basebackup and pg_rewind, which
copy the data directory from the other node, never bring that node's addresses along.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from pgaasctl.errors import ConnectionFailed, PgaasError
from pgaasctl.hosts import initdb_cache
from pgaasctl.hosts.guard import fenced_file, guard_log, promoting_file, guard_pid_file, guard_script, guard_script_path, vip_track_file
from pgaasctl.hosts.ssh import SshSessions, SshTarget
from pgaasctl.monitor.push import EVENTS as PUSH_EVENTS
from pgaasctl.monitor.push import PushTarget, event_script
from pgaasctl.passwords import scram_verifier
from pgaasctl.plan.settings import HOT_STANDBY_PARAMETERS
from pgaasctl.spec.models import FailoverSettings
from pgaasctl.tls.node_files import ROOT_CRL, SERVER_CERT, NodeTls, client_parameters, pg_hba, ssl_parameters, tls_dir
from providers.base import Host, HostLayout

# Bumped whenever the files pgaasctl writes on a node (repmgr.conf, start.sh, promote.sh) change: nodes of
# pairs made with older files get them rewritten by the next apply (a reconfigure_repmgr operation).
NODE_FILES_VERSION = 7  # 3: the fencing guard; 4: the fast failover promotion and the guard's watchdog; 5: a lighter guard;
# 6: pg_hba lets in the pair's own network (or its `clients`), not every address; every node serves TLS;
# 7: the guard asks on one kept session (bash), and destroy stops it first
REPMGR_USER = "repmgr"
REPMGR_DATABASE = "repmgr"
LOG_LINES = 10  # lines of a node's PostgreSQL log shown when it did not start

# What `repmgr node rejoin --force-rewind` prints when pg_rewind itself cannot work (its prerequisites, the WAL
# since the fork, the timelines). Only then is a re-clone the way out; any other failure is reported as itself.
REWIND_FAILURES = (
    "pg_rewind execution failed",
    "pg_rewind cannot be used",
    "pg_rewind can only be used",
    "pg_rewind will not be able to run",
    "cannot attach to",
)


class StartFailed(PgaasError):
    """PostgreSQL did not start on a node; the message carries the end of its log."""


class RewindFailed(PgaasError):
    """pg_rewind could not bring the node onto the primary's timeline: only a re-clone can."""


def target_of(host: Host) -> SshTarget:
    assert host.ssh_port is not None and host.ssh_user and host.key_file
    return SshTarget(host=host.connect_address, port=host.ssh_port, user=host.ssh_user, key_file=host.key_file,
                     label=f"node {host.node} of pair {host.pair} ({host.address})")


def repmgr_env(host: Host) -> str:
    """The environment prefix repmgr commands need on hosts pgaasctl bootstrapped (their .pgpass)."""
    return f"PGPASSFILE={shlex.quote(host.layout.config_dir + '/.pgpass')} " if host.layout else ""


def repmgrd_command(host: Host) -> str:
    """Starts repmgrd as a daemon (pgaasctl over SSH, and the guard's watchdog on the node)."""
    log = shlex.quote((host.layout.log_dir if host.layout else "/tmp") + "/repmgrd.out")
    conf = shlex.quote(host.repmgr_conf or "/etc/repmgr.conf")
    return f"{repmgr_env(host)}{_bin(host, 'repmgrd')} -f {conf} --daemonize >>{log} 2>&1 </dev/null"


def watchdog_after(failover: FailoverSettings) -> int | None:
    """Seconds of upstream and repmgrd silence after which the guard's watchdog looks closer: longer than
    repmgrd's own detection (a check, its reconnect attempts, a connect timeout each) with a margin."""
    if failover.mode != "automatic":
        return None
    detection = failover.monitor_interval + failover.reconnect_attempts * (
        failover.reconnect_interval + failover.connect_timeout) + failover.connect_timeout
    return max(5, int(detection) + 2)


def alive_from_pid_file(pid_file: str) -> str:
    """Shell: exits 0 when the process a pid file names runs. Not `kill -0`: a zombie (dead, not yet reaped)
    passes that; /proc/PID/stat says Z for it."""
    return (f"pid=$(head -n 1 {shlex.quote(pid_file)} 2>/dev/null); [ -n \"$pid\" ] && "
            f"st=$(awk '{{print $3}}' /proc/$pid/stat 2>/dev/null) && [ -n \"$st\" ] && [ \"$st\" != Z ]")


def reaped_from_pid_file(pid_file: str, seconds: int = 30) -> str:
    """Shell: waits (up to `seconds`) while the process a pid file names is a zombie. repmgr's and pg_ctl's own
    checks (kill -0) take a killed postmaster that init has not reaped yet for a running one, and refuse to clone
    or rejoin over it; some inits reap orphans only every few seconds."""
    return (f"pid=$(head -n 1 {shlex.quote(pid_file)} 2>/dev/null); i=0; "
            f"while [ -n \"$pid\" ] && [ \"$(awk '{{print $3}}' /proc/$pid/stat 2>/dev/null)\" = Z ] "
            f"&& [ $i -lt {seconds * 10} ]; do sleep 0.1; i=$((i + 1)); done; true")


def _bin(host: Host, program: str) -> str:
    return shlex.quote(f"{host.bin_dir}/{program}")


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def postgresql_conf(host: Host, layout: HostLayout, tls: bool = False) -> str:
    settings = {
        "data_directory": _q(layout.data_dir),
        "hba_file": _q(f"{layout.config_dir}/pg_hba.conf"),
        "ident_file": _q(f"{layout.config_dir}/pg_ident.conf"),
        # a node in its own network namespace listens on all of its addresses: its own and the virtual IP
        "listen_addresses": _q("*" if host.namespace or host.cloud else host.address),
        "port": str(host.pg_port),
        "unix_socket_directories": _q(layout.socket_dir),
        "unix_socket_permissions": "0700",  # local connections are trusted: the server's OS user alone
        "max_connections": "200",
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "hot_standby": "on",
        "wal_log_hints": "on",  # pg_rewind, for `repmgr node rejoin --force-rewind`
        "wal_keep_size": _q("512MB"),
        "wal_retrieve_retry_interval": _q("500ms"),  # a standby reconnects soon after its primary restarts
        # a standby reports every second, so a silence of a few seconds means it is cut off (status says so), and
        # either side drops a connection whose peer vanished after 5 s instead of a minute
        "wal_receiver_status_interval": _q("1s"),
        "wal_sender_timeout": _q("5s"),
        "wal_receiver_timeout": _q("5s"),
        "shared_preload_libraries": _q("repmgr"),
        "password_encryption": "scram-sha-256",
        "log_line_prefix": _q("%m [%p] %q%u@%d "),
    }
    if tls:  # the node's certificate, the CA and its revocation list (pgaasctl/tls/node_files.py)
        settings.update(ssl_parameters(layout.config_dir))
    return "# written by pgaasctl; server parameters of the pair are set with ALTER SYSTEM\n" + "".join(
        f"{k} = {v}\n" for k, v in settings.items()
    )


DATA_DIR_CONF = """# written by pgaasctl: the configuration is in the node's config directory (see postgres -D there).
# This file is read only when PostgreSQL runs on the data directory alone (pg_rewind's crash recovery).
wal_log_hints = on
"""

def pg_ctl(host: Host, layout: HostLayout, action: str) -> str:
    """The command for `action`; starts (and restarts) go through the node's start script."""
    if action in ("start", "restart"):
        script = shlex.quote(start_script_path(layout))
        return script if action == "start" else f"{script} restart"
    base = f"{_bin(host, 'pg_ctl')} -D {shlex.quote(layout.config_dir)} -w -t 120"
    if action == "stop":
        return f"{base} -m fast stop"
    return f"{base} {action}"


def postgres_log(layout: HostLayout) -> str:
    return f"{layout.log_dir}/postgresql.log"


def start_script_path(layout: HostLayout) -> str:
    return f"{layout.config_dir}/start.sh"


def start_script(host: Host, layout: HostLayout) -> str:
    """How PostgreSQL starts on a node pgaasctl bootstrapped: repmgr's service_start_command (so `node rejoin`,
    `node service` and `standby follow` use it too) and pgaasctl's own starts.

    A standby must run the hot-standby parameters at no less than the values its pg_control holds, or
    PostgreSQL refuses to start it ("max_connections = 150 is a lower setting than on the primary server").
    pg_control is the robust source: it is exactly what that start-up check compares against; it holds the
    primary's running values (the clone or pg_rewind copied it from the primary, and replaying the primary's
    parameter changes updates it); and it is read on the node itself, with no connection to a primary that may
    be down or restarting. Where the node's configured value is lower (it was lowered on the pair and the primary
    has not restarted with it yet), this start raises it for this run only, on the command line: the
    configuration keeps the spec's value, pg_settings.pending_restart says a restart is due, and the next start
    after the primary runs the lower value uses it.
    """
    pairs = " ".join(f"{name}:{label.split()[0]}" for name, label in HOT_STANDBY_PARAMETERS.items())
    return "\n".join([
        "#!/bin/sh",
        "# written by pgaasctl: how PostgreSQL starts on this node (see pgaasctl/hosts/bootstrap.py, start_script)",
        "# usage: start.sh [restart]",
        f"bin={shlex.quote(host.bin_dir)}",
        f"conf={shlex.quote(layout.config_dir)}",
        f"data={shlex.quote(layout.data_dir)}",
        f"log={shlex.quote(postgres_log(layout))}",
        'if [ "${1:-start}" = restart ] && "$bin/pg_ctl" -D "$conf" status >/dev/null; then',
        '  "$bin/pg_ctl" -D "$conf" -w -t 120 -m fast stop || exit $?',
        "fi",
        'opts=""',
        'if [ -f "$data/standby.signal" ]; then',
        '  control=$("$bin/pg_controldata" "$data" 2>/dev/null)',
        f"  for pair in {pairs}; do",
        '    name=${pair%%:*}; label=${pair#*:}',
        '    primary=$(printf "%s\\n" "$control" | sed -n "s/^$label setting: *//p")',
        '    mine=$("$bin/postgres" -D "$conf" -C "$name" 2>/dev/null)',
        '    case "$primary" in ""|*[!0-9]*) continue;; esac',
        '    case "$mine" in ""|*[!0-9]*) continue;; esac',
        '    if [ "$primary" -gt "$mine" ]; then',
        '      opts="$opts -c $name=$primary"',
        '      echo "pgaasctl: starting a standby with $name=$primary, its primary\'s value in pg_control'
        ' (configured: $mine; a restart is pending)" >>"$log"',
        "    fi",
        "  done",
        "fi",
        'if [ -n "$opts" ]; then',
        '  exec "$bin/pg_ctl" -D "$conf" -l "$log" -w -t 120 -o "$opts" start',
        "fi",
        'exec "$bin/pg_ctl" -D "$conf" -l "$log" -w -t 120 start',
        "",
    ])


def conninfo(host: Host, failover: FailoverSettings, tls_client: str = "") -> str:
    """How repmgr (and the replication it sets up) reaches `host`; `tls_client`: the pair's sslmode and CA file."""
    return (f"host={host.address} port={host.pg_port} user={REPMGR_USER} dbname={REPMGR_DATABASE} "
            f"connect_timeout={failover.connect_timeout}{tls_client}")


def repmgr_conf(host: Host, layout: HostLayout, node_id: int, failover: FailoverSettings,
                push: PushTarget | None = None, tls_client: str = "") -> str:
    conf = layout.repmgr_conf
    env = f"PGPASSFILE={layout.config_dir}/.pgpass"
    items = {
        "node_id": str(node_id),
        "node_name": _q(host.node),
        "conninfo": _q(conninfo(host, failover, tls_client)),
        "data_directory": _q(layout.data_dir),
        "config_directory": _q(layout.config_dir),
        "pg_bindir": _q(host.bin_dir),
        "passfile": _q(f"{layout.config_dir}/.pgpass"),
        "replication_user": _q(REPMGR_USER),
        "use_replication_slots": "yes",
        "log_file": _q(f"{layout.log_dir}/repmgr.log"),
        "log_level": "INFO",
        "failover": failover.mode,
        "promote_command": _q(f"{layout.config_dir}/promote.sh failover"),
        "follow_command": _q(f"{env} {host.bin_dir}/repmgr -f {conf} standby follow --upstream-node-id=%n --log-to-file"),
        "monitor_interval_secs": str(failover.monitor_interval),
        "reconnect_attempts": str(failover.reconnect_attempts),
        "reconnect_interval": str(failover.reconnect_interval),
        "repmgrd_pid_file": _q(f"{layout.socket_dir}/repmgrd.pid"),
        # No primary_visibility_consensus: repmgr 5.3 cancels an election when the witness saw the primary within
        # 2 x monitor_interval and never holds another one, so a primary killed outright (refused at once) would
        # never be failed over. The witness still counts for the majority: a standby that sees neither the primary
        # nor the witness does not promote.
        "service_start_command": _q(pg_ctl(host, layout, "start")),
        "service_stop_command": _q(pg_ctl(host, layout, "stop")),
        "service_restart_command": _q(pg_ctl(host, layout, "restart")),
        "service_reload_command": _q(pg_ctl(host, layout, "reload")),
    }
    if push is not None:  # the agent hears of a promotion at once (pgaasctl/monitor/push.py)
        items["event_notification_command"] = _q(f"{event_script_path(layout)} %n %e %s '%t'")
        items["event_notifications"] = _q(",".join(PUSH_EVENTS))
    return "# written by pgaasctl\n" + "".join(f"{k}={v}\n" for k, v in items.items())


def event_script_path(layout: HostLayout) -> str:
    return f"{layout.config_dir}/event.sh"


def push_header_path(layout: HostLayout) -> str:
    return f"{layout.config_dir}/.push-header"


def node_files_version(push: PushTarget | None) -> int | str:
    """What the pair's record keeps of the node files: their version, and where they push to (a new agent_url
    rewrites them)."""
    return NODE_FILES_VERSION if push is None else f"{NODE_FILES_VERSION} push {push.url}"


def promote_hook(host: Host, layout: HostLayout, node_id: int) -> str:
    """Promotes this standby: run by repmgrd (argument `failover`) on the standby it elected, and by
    `pgaasctl promote` (no argument). A synchronous primary whose standby is gone would block every commit, so the
    new primary stops waiting for one; `pgaasctl apply` restores it when whole.

    repmgrd has just found the primary unreachable and won the election with the witness, so its path promotes
    at once with pg_promote() (which waits in 0.1 s steps) and then updates repmgr's records as `repmgr standby
    promote` does. That command would first look for a reachable primary, costing connect_timeout when the old one
    hangs, then check the promotion once a second: about 3 s of a hung primary's failover. A person's promotion
    keeps `repmgr standby promote` and its check that no primary runs."""
    q = shlex.quote
    psql = f"{_bin(host, 'psql')} -X -q -h {q(layout.socket_dir)} -p {host.pg_port} -U postgres"
    promoting, log = q(promoting_file(layout)), q(f"{layout.log_dir}/repmgr.log")
    records = (
        "BEGIN; "
        f"UPDATE repmgr.nodes SET active = false WHERE type = 'primary' AND active AND node_id <> {node_id}; "
        f"UPDATE repmgr.nodes SET type = 'primary', upstream_node_id = NULL, active = true WHERE node_id = {node_id}; "
        # the witness counts in the next election only as a sibling of the primary it watches
        f"UPDATE repmgr.nodes SET upstream_node_id = {node_id} WHERE type = 'witness'; "
        f"INSERT INTO repmgr.events (node_id, event, successful, details) VALUES ({node_id}, 'standby_promote', true, "
        f"'promoted by repmgrd through pgaasctl''s promote hook (pg_promote)'); "
        "COMMIT;"
    )
    return "\n".join([
        "#!/bin/sh",
        "# written by pgaasctl: the promote hook (see promote_hook in pgaasctl/hosts/bootstrap.py)",
        f"export PGPASSFILE={q(layout.config_dir + '/.pgpass')}",
        "say() { echo \"[$(date '+%Y-%m-%d %H:%M:%S')] [NOTICE] promote hook: $*\" >>" + log + "; }",
        "# cleared before the promotion, so the new primary never waits for the standby that just failed",
        f"{psql} -d postgres -c \"ALTER SYSTEM SET synchronous_standby_names = ''\" -c 'SELECT pg_reload_conf()' >/dev/null",
        "# the virtual IP may come here now: the old primary is gone, and a client that reaches this node a moment",
        "# before its promotion completes is refused (read-only) and retries. The guard keeps the file from now on",
        "# (and takes the address back if the promotion fails); `promoting` tells it to leave the file alone until then.",
        f"touch {promoting}",
        f"echo 0 >{q(vip_track_file(layout))}",
        'if [ "$1" = failover ]; then',
        f"  promoted=$({psql} -d postgres -A -t -c 'SELECT pg_promote(true, 60)' 2>&1)",
        '  if [ "$promoted" != t ]; then',
        f'    say "pg_promote() failed: $promoted"; rm -f {promoting}; exit 1',
        "  fi",
        f"  if ! {psql} -d repmgr -v ON_ERROR_STOP=1 -c {q(records)} >/dev/null; then",
        "    # promoted all the same; repmgrd updates the records itself once it sees the node primary",
        f'    say "promoted, but repmgr\'s node records were not updated"; rm -f {promoting}; exit 1',
        "  fi",
        '  say "promoted with pg_promote(); repmgr\'s node records updated"',
        "else",
        f"  {_bin(host, 'repmgr')} -f {q(layout.repmgr_conf)} standby promote --log-to-file "
        f"|| {{ rm -f {promoting}; exit 1; }}",
        "fi",
        f"rm -f {promoting}",
        "# pg_rewind (PostgreSQL 15) reads the new timeline from pg_control: write it there now",
        f"{psql} -d postgres -c 'CHECKPOINT'",
        "",
    ])


@dataclass
class Bootstrap:
    """Brings the hosts of one pair from empty to a replicating repmgr cluster."""

    ssh: SshSessions
    failover: FailoverSettings
    admin_password: str
    push: PushTarget | None = None  # where repmgr's events go (the agent), if the workspace says
    tls: NodeTls | None = None  # the pair's TLS: certificates, pg_hba rules, sslmode of repmgr and replication
    clients: list[str] = field(default_factory=list)  # networks pg_hba lets in besides the node's own
    networks: list[str] = field(default_factory=list)  # every node's own network (a pair across clouds has two)

    def _networks(self, host: Host) -> list[str]:
        """Where clients may connect from: the node's own network (its peers, the witness and pgaasctl are there:
        never left out, or replication stops), and the pair's `clients`."""
        own = host.own_network or "127.0.0.0/8"
        return list(dict.fromkeys([own, *self.networks, *self.clients]))

    def _pg_hba(self, host: Host) -> str:
        return pg_hba(self.tls.settings if self.tls else None, self.tls.certificate_roles if self.tls else [],
                      self._networks(host))

    def _client(self, host: Host) -> str:
        """The sslmode (and CA file) of connections made from `host`."""
        if host.layout is None or self.tls is None:
            return ""
        return client_parameters(self.tls.settings, host.layout.config_dir)

    def _serves_tls(self, host: Host) -> bool:
        """Whether the node serves TLS: every node of a pair pgaasctl creates does (the tls mode says whether it is
        required and verified), and a node that has a certificate keeps offering it, so that no client that asks
        for it (repmgrd, a WAL receiver) is ever cut off."""
        if self.tls is not None:
            return True
        assert host.layout is not None
        found = self.ssh.run(target_of(host), f"test -f {shlex.quote(tls_dir(host.layout.config_dir) + '/' + SERVER_CERT)}")
        return found.exited == 0

    def _write_tls(self, host: Host) -> None:
        """The node's certificate (freshly issued), key, CA and revocation list, when the pair has TLS."""
        layout = host.layout
        assert layout is not None
        if self.tls is None:
            return
        target = target_of(host)
        directory = tls_dir(layout.config_dir)
        self.ssh.check(target, f"mkdir -p -m 700 {shlex.quote(directory)}", "making the tls directory")
        for name, (content, mode) in self.tls.files(host.node, [host.address, *([host.reach] if host.reach else [])]).items():
            self.ssh.put_text(target, content.decode(), f"{directory}/{name}", mode)

    def _write_push(self, host: Host) -> None:
        """The event script and its token header (0600), or neither when nothing listens."""
        layout = host.layout
        assert layout is not None
        target = target_of(host)
        if self.push is None:
            self.ssh.run(target, f"rm -f {shlex.quote(event_script_path(layout))} {shlex.quote(push_header_path(layout))}")
            return
        self.ssh.put_text(target, f"Authorization: Bearer {self.push.token.get_secret_value()}\n",
                          push_header_path(layout), 0o600)
        self.ssh.put_text(target, event_script(host.pair, self.push.endpoint, push_header_path(layout)),
                          event_script_path(layout), 0o755)

    def _write_config(self, host: Host, node_id: int, repmgr_password: str) -> None:
        layout = host.layout
        assert layout is not None
        target = target_of(host)
        self._write_tls(host)
        tls_on = self._serves_tls(host)
        self.ssh.put_text(target, postgresql_conf(host, layout, tls_on), f"{layout.config_dir}/postgresql.conf", 0o644)
        self.ssh.put_text(target, self._pg_hba(host), f"{layout.config_dir}/pg_hba.conf",
                          0o640)
        self.ssh.put_text(target, "", f"{layout.config_dir}/pg_ident.conf", 0o640)
        self.ssh.put_text(target, repmgr_conf(host, layout, node_id, self.failover, self.push, self._client(host)),
                          layout.repmgr_conf, 0o644)
        self._write_push(host)
        self.ssh.put_text(target, promote_hook(host, layout, node_id), f"{layout.config_dir}/promote.sh", 0o755)
        self.ssh.put_text(target, start_script(host, layout), start_script_path(layout), 0o755)
        self.ssh.put_text(target, self._guard_script(host, node_id), guard_script_path(layout), 0o755)
        self.ssh.put_text(target, f"*:*:*:{REPMGR_USER}:{repmgr_password}\n", f"{layout.config_dir}/.pgpass", 0o600)

    def _guard_script(self, host: Host, node_id: int) -> str:
        assert host.layout is not None
        return guard_script(host, host.layout, node_id, watchdog_after(self.failover), repmgrd_command(host))

    def _repmgr(self, host: Host, args: str, what: str, timeout: float = 300) -> str:
        env = repmgr_env(host)
        conf = shlex.quote(host.repmgr_conf or "/etc/repmgr.conf")
        return self.ssh.check(target_of(host), f"{env}{_bin(host, 'repmgr')} -f {conf} {args}", what, timeout=timeout)

    def _psql_any(self, host: Host, sql: str, what: str) -> str:
        """psql as the repmgr user over TCP: works on any node, including those pgaasctl did not bootstrap."""
        env = repmgr_env(host)
        command = (f"{env}{_bin(host, 'psql')} -X -q -v ON_ERROR_STOP=1 -h {shlex.quote(host.address)} -p {host.pg_port} "
                   f"-U {REPMGR_USER} -d {REPMGR_DATABASE} -c {shlex.quote(sql)}")
        return self.ssh.check(target_of(host), command, what)

    def refuse_frozen(self, host: Host) -> None:
        """A postmaster stopped by a signal (SIGSTOP, a debugger) neither answers nor stops: nothing may touch
        its data directory (no standby.signal, no rewind), and waiting for a clean stop would hang."""
        if host.layout is None:
            return
        pid_file = shlex.quote(f"{host.layout.data_dir}/postmaster.pid")
        probe = (f"pid=$(head -1 {pid_file} 2>/dev/null); [ -n \"$pid\" ] && "
                 f"awk '{{print $3}}' /proc/$pid/stat 2>/dev/null && echo $pid")
        words = self.ssh.run(target_of(host), probe).stdout.split()
        if len(words) == 2 and words[0] == "T":
            raise PgaasError(
                f"{target_of(host).label}: its PostgreSQL (postmaster pid {words[1]}) is frozen (stopped by a signal): "
                "pgaasctl will neither stop it nor rewind its data directory",
                f"Resume it (kill -CONT {words[1]}) or kill it, then run apply again.",
            )

    def wait_reaped(self, host: Host) -> None:
        """A killed postmaster still a zombie: wait for init to reap it before repmgr looks at the data directory."""
        if host.layout is not None:
            self.ssh.run(target_of(host), reaped_from_pid_file(f"{host.layout.data_dir}/postmaster.pid"), timeout=60)

    def postgres_running(self, host: Host) -> bool:
        if host.layout is not None:  # pg_ctl status: 0 running, 3 not (repmgr node status also fails on warnings)
            # pg_ctl takes a killed postmaster that init has not reaped yet (a zombie) for a running one
            command = (f"{_bin(host, 'pg_ctl')} -D {shlex.quote(host.layout.config_dir)} status >/dev/null && "
                       + alive_from_pid_file(f"{host.layout.data_dir}/postmaster.pid"))
            return self.ssh.run(target_of(host), command).exited == 0
        env = repmgr_env(host)
        conf = shlex.quote(host.repmgr_conf or "/etc/repmgr.conf")
        result = self.ssh.run(target_of(host), f"{env}{_bin(host, 'repmgr')} -f {conf} node status --csv")
        return result.exited == 0

    def _psql(self, host: Host, sql: str, what: str, database: str = "postgres") -> str:
        assert host.layout is not None
        command = (f"{_bin(host, 'psql')} -X -q -v ON_ERROR_STOP=1 -h {shlex.quote(host.layout.socket_dir)} "
                   f"-p {host.pg_port} -U postgres -d {database} -c {shlex.quote(sql)}")
        return self.ssh.check(target_of(host), command, what)

    def _initdb(self, host: Host, options: str, if_missing: bool = False) -> None:
        """initdb with the admin password (in a file only for its run), then the data directory's own
        postgresql.conf: read only when PostgreSQL runs on the data directory alone (pg_rewind's single-user crash
        recovery), and copied between nodes, so it says nothing node-specific."""
        layout = host.layout
        assert layout is not None
        target = target_of(host)
        data = shlex.quote(layout.data_dir)
        pwfile = f"{layout.config_dir}/.initdb-password"
        self.ssh.put_text(target, self.admin_password + "\n", pwfile, 0o600)
        try:
            self.ssh.check(target, (
                (f"test -f {data}/PG_VERSION || " if if_missing else "")
                + f"{_bin(host, 'initdb')} -D {data} {initdb_cache.INITDB_ARGUMENTS} --pwfile={shlex.quote(pwfile)} {options}"
            ), "initdb")
        finally:
            self.ssh.run(target, f"rm -f {shlex.quote(pwfile)}")
        self.ssh.put_text(target, DATA_DIR_CONF, f"{layout.data_dir}/postgresql.conf", 0o600)

    def _copy_initdb(self, host: Host, options: str) -> None:
        """The data directory from the host's cached initdb, with an identity of its own; the superuser has no
        password until create_primary sets it (only the server's OS user can log in meanwhile)."""
        layout = host.layout
        assert layout is not None and host.initdb_cache is not None
        target = target_of(host)
        cached = self.ssh.check(target, initdb_cache.copy_script(host.bin_dir, host.initdb_cache, layout.data_dir, options),
                                "copying the cached initdb")
        try:
            control, system_identifier = initdb_cache.with_new_identity(self.ssh.read_bytes(target, f"{cached}/pg_control"))
            self.ssh.put_bytes(target, control, f"{layout.data_dir}/global/pg_control", 0o600)
            shown = self.ssh.check(target, initdb_cache.reset_command(host.bin_dir, layout.data_dir),
                                   "giving the copy its own WAL (pg_resetwal)")
            initdb_cache.check_identity(shown, system_identifier, host.label)
        except (PgaasError, OSError) as exc:
            self.ssh.run(target, initdb_cache.emptied_command(layout.data_dir))
            if isinstance(exc, PgaasError):
                raise
            raise PgaasError(f"{host.label}: copying the cached initdb failed: {exc}") from None
        self.ssh.put_text(target, DATA_DIR_CONF, f"{layout.data_dir}/postgresql.conf", 0o600)

    def create_primary(self, host: Host, node_id: int) -> None:
        layout = host.layout
        assert layout is not None
        target = target_of(host)
        repmgr_password = secrets.token_urlsafe(24)
        self._write_config(host, node_id, repmgr_password)
        if host.initdb_cache:
            self._copy_initdb(host, "--data-checksums")
        else:
            self._initdb(host, "--data-checksums")
        self._started(host, "starting PostgreSQL",
                      lambda: self.ssh.check(target, pg_ctl(host, layout, "start"), "starting PostgreSQL"))
        verifier = scram_verifier(repmgr_password)
        admin = f"ALTER ROLE postgres PASSWORD '{scram_verifier(self.admin_password)}'; " if host.initdb_cache else ""
        self._psql(host, f"{admin}CREATE ROLE {REPMGR_USER} WITH LOGIN SUPERUSER REPLICATION PASSWORD '{verifier}'",
                   "creating the repmgr role")
        self._psql(host, f"CREATE DATABASE {REPMGR_DATABASE} OWNER {REPMGR_USER}", "creating the repmgr database")
        self._repmgr(host, "primary register", "repmgr primary register")

    def create_witness(self, host: Host, node_id: int, primary: Host, repmgr_password: str) -> None:
        """A small PostgreSQL of its own, registered as the pair's repmgr witness."""
        layout = host.layout
        assert layout is not None
        if len(self.networks) > 1:
            self.let_in(primary)
        target = target_of(host)
        self._write_config(host, node_id, repmgr_password)
        self._initdb(host, "", if_missing=True)  # a retried witness keeps the data directory it made
        if not self.postgres_running(host):
            self._started(host, "starting the witness",
                          lambda: self.ssh.check(target, pg_ctl(host, layout, "start"), "starting PostgreSQL"))
        verifier = scram_verifier(repmgr_password)
        self._psql(host, f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{REPMGR_USER}') THEN "
                         f"CREATE ROLE {REPMGR_USER} WITH LOGIN SUPERUSER REPLICATION; END IF; END$$", "creating the repmgr role")
        self._psql(host, f"ALTER ROLE {REPMGR_USER} PASSWORD '{verifier}'", "setting the repmgr password")
        exists = self.ssh.check(target, f"{_bin(host, 'psql')} -X -A -t -h {shlex.quote(layout.socket_dir)} -p {host.pg_port} "
                                        f"-U postgres -d postgres -c \"SELECT 1 FROM pg_database WHERE datname = '{REPMGR_DATABASE}'\"",
                                "looking for the repmgr database").strip()
        if exists != "1":
            self._psql(host, f"CREATE DATABASE {REPMGR_DATABASE} OWNER {REPMGR_USER}", "creating the repmgr database")
        self.register_witness(host, primary)

    def register_witness(self, host: Host, primary: Host) -> None:
        self._repmgr(host, f"-d {shlex.quote(conninfo(primary, self.failover, self._client(host)))} witness register -F",
                     "repmgr witness register")

    def repmgr_password(self, host: Host) -> str:
        """The repmgr password, read from a bootstrapped node's .pgpass (it lives only on the nodes)."""
        assert host.layout is not None
        text = self.ssh.check(target_of(host), f"cat {shlex.quote(host.layout.config_dir + '/.pgpass')}", "reading .pgpass")
        return text.strip().split(":", 4)[4]

    def let_in(self, primary: Host) -> None:
        """The primary's pg_hba as the pair's networks say now, reloaded when it changed: a node added in another
        cloud (another network) must be let in before it clones or registers."""
        assert primary.layout is not None
        target = target_of(primary)
        path = f"{primary.layout.config_dir}/pg_hba.conf"
        wanted = self._pg_hba(primary)
        current = self.ssh.run(target, f"cat {shlex.quote(path)}").stdout
        if current != wanted:
            self.ssh.put_text(target, wanted, path, 0o640)
            self._psql(primary, "SELECT pg_reload_conf()", "reloading pg_hba.conf")

    def create_standby(self, host: Host, node_id: int, primary: Host, repmgr_password: str, force: bool = False) -> None:
        layout = host.layout
        assert layout is not None
        if len(self.networks) > 1:
            self.let_in(primary)
        self._write_config(host, node_id, repmgr_password)
        self.wait_reaped(host)
        self._repmgr(  # primary_conninfo is made of this conninfo: the pair's sslmode and CA file with it
            host,
            f"-d {shlex.quote(conninfo(primary, self.failover, self._client(host)))} standby clone -c"
            + (" -F" if force else ""),
            "repmgr standby clone",
        )
        self._started(host, "starting the cloned standby",
                      lambda: self.ssh.check(target_of(host), pg_ctl(host, layout, "start"), "starting PostgreSQL"))
        self._repmgr(host, "standby register --wait-sync=60" + (" -F" if force else ""), "repmgr standby register")

    def rejoin(self, host: Host, primary: Host) -> None:
        """Make a failed primary follow the new one, rewinding what it wrote after the fork.

        Raises RewindFailed when pg_rewind itself cannot work (then only a re-clone can), StartFailed (with the
        end of the node's log) when PostgreSQL did not start, and PgaasError or ConnectionFailed otherwise."""
        self.refuse_frozen(host)
        self.wait_reaped(host)
        # pg_rewind (15) compares timelines from pg_control, which a promotion updates only at its next checkpoint
        self._psql_any(primary, "CHECKPOINT", "CHECKPOINT on the primary")
        if self.postgres_running(host):
            self.stop_postgres(host)
        self._install_start_script(host)
        what = "repmgr node rejoin --force-rewind"
        command = (f"{repmgr_env(host)}{_bin(host, 'repmgr')} -f {shlex.quote(host.repmgr_conf or '/etc/repmgr.conf')} "
                   f"node rejoin -d {shlex.quote(conninfo(primary, self.failover, self._client(host)))} "
                   "--force-rewind --verbose")
        log_offset = self._log_size(host)
        result = self.ssh.run(target_of(host), command, timeout=300)
        if result.exited == 0:
            return
        output = (result.stderr + "\n" + result.stdout).strip()
        detail = "\n    ".join(_last_lines(output, 8))
        label = target_of(host).label
        if rewind_impossible(output):
            raise RewindFailed(f"{label}: pg_rewind cannot bring it onto {primary.node}'s timeline:\n    {detail}")
        self._raise_if_not_started(host, what, log_offset, attempted_only=True)
        raise PgaasError(f"{label}: {what} failed (exit {result.exited}):\n    {detail}")

    def fence(self, host: Host, reason: str) -> None:
        """Stop a stale primary, marking it fenced (the guard's mark, lifted once it runs as a standby)."""
        self.refuse_frozen(host)
        if host.layout is None:
            self.stop_postgres(host)
            return
        target = target_of(host)
        stamp = "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        self.ssh.run(target, f"echo \"{stamp} fenced by pgaasctl apply: \"{shlex.quote(reason)} "
                             f">>{shlex.quote(fenced_file(host.layout))}")
        base = f"{_bin(host, 'pg_ctl')} -D {shlex.quote(host.layout.config_dir)} -w -t 30"
        self.ssh.check(target, f"{base} status >/dev/null || exit 0; {base} -m fast stop || {base} -m immediate stop",
                       "fencing: stopping PostgreSQL")

    def stop_postgres(self, host: Host) -> None:
        self._repmgr(host, "node service --action=stop --checkpoint", "stopping PostgreSQL")

    def start_postgres(self, host: Host) -> None:
        self._install_start_script(host)
        self._started(host, "starting PostgreSQL",
                      lambda: self._repmgr(host, "node service --action=start", "starting PostgreSQL"))

    def _install_start_script(self, host: Host) -> None:
        """The current start script, before a start repmgr runs (nodes bootstrapped by an older pgaasctl too)."""
        if host.layout is not None:
            self.ssh.put_text(target_of(host), start_script(host, host.layout), start_script_path(host.layout), 0o755)

    def _started(self, host: Host, what: str, start: Callable[[], object]) -> None:
        """Run `start`; when it fails and PostgreSQL is not running, say so with the end of the node's log."""
        log_offset = self._log_size(host)
        try:
            start()
        except ConnectionFailed:
            raise
        except PgaasError:
            self._raise_if_not_started(host, what, log_offset)
            raise

    def _log_size(self, host: Host) -> int:
        """Bytes in the node's PostgreSQL log now: what a start writes after them is that start's."""
        if host.layout is None:
            return 0
        log = shlex.quote(postgres_log(host.layout))
        size = self.ssh.run(target_of(host), f"stat -c %s {log} 2>/dev/null || echo 0").stdout.strip()
        return int(size) if size.isdigit() else 0

    def _raise_if_not_started(self, host: Host, what: str, log_offset: int, attempted_only: bool = False) -> None:
        """StartFailed with the log lines this start wrote (else the log's last lines), unless PostgreSQL runs.
        `attempted_only`: only if a start was attempted at all (the log grew)."""
        if self.postgres_running(host):
            return
        label = target_of(host).label
        if host.layout is None:
            if attempted_only:
                return
            raise StartFailed(f"{label}: {what}: PostgreSQL did not start",
                              "See PostgreSQL's log on that node, fix the cause, then run `pgaasctl apply`.")
        log = postgres_log(host.layout)
        new = self.ssh.run(target_of(host), f"tail -c +{log_offset + 1} {shlex.quote(log)} 2>/dev/null").stdout
        if attempted_only and not new.strip():
            return
        text = new if new.strip() else self.ssh.run(target_of(host), f"tail -n {LOG_LINES} {shlex.quote(log)}").stdout
        raise StartFailed(
            f"{label}: {what}: PostgreSQL did not start. The end of its log, {log}:\n    "
            + "\n    ".join(_last_lines(text, LOG_LINES)),
            "Fix the cause, then run `pgaasctl apply`: it starts or rejoins the node without re-cloning it.",
        )

    def register_standby(self, host: Host) -> None:
        self._repmgr(host, "standby register -F --wait-sync=60", "repmgr standby register")

    def repmgrd_running(self, host: Host) -> bool:
        pid_file = f"{host.layout.socket_dir}/repmgrd.pid" if host.layout else None
        if pid_file is None:
            return False
        result = self.ssh.run(target_of(host), alive_from_pid_file(pid_file))
        return result.exited == 0

    def guard_running(self, host: Host) -> bool:
        if host.layout is None:
            return False
        return self.ssh.run(target_of(host), alive_from_pid_file(guard_pid_file(host.layout))).exited == 0

    def start_guard(self, host: Host) -> None:
        """The fencing guard beside repmgrd (pgaasctl/hosts/guard.py), on nodes pgaasctl bootstrapped."""
        layout = host.layout
        if layout is None or self.guard_running(host):
            return
        target = target_of(host)
        script, pid_file = shlex.quote(guard_script_path(layout)), guard_pid_file(layout)
        # the redirections on the background command itself: nothing may hold the SSH channel open
        self.ssh.check(target, f"test -x {script} || exit 1; setsid -f {script} >>{shlex.quote(guard_log(layout))} 2>&1 "
                               "</dev/null", "starting the fencing guard")
        waited = self.ssh.run(target, f"for i in $(seq 100); do if {alive_from_pid_file(pid_file)}; then exit 0; fi; "
                                      "sleep 0.05; done; exit 1")
        if waited.exited != 0:
            raise PgaasError(f"{target.label}: the fencing guard did not start; see {guard_log(layout)}")

    def stop_guard(self, host: Host) -> None:
        if host.layout is None:
            return
        self._stop_by_pid_file(host, guard_pid_file(host.layout))

    def _stop_by_pid_file(self, host: Host, pid_file: str) -> None:
        """SIGTERM the process a pid file names, wait up to 5 s for it to go, remove the file."""
        quoted = shlex.quote(pid_file)
        self.ssh.run(target_of(host), f"kill $(cat {quoted}) 2>/dev/null; for i in $(seq 100); do "
                                      f"kill -0 $(cat {quoted} 2>/dev/null) 2>/dev/null || break; sleep 0.05; done; "
                                      f"rm -f {quoted}")

    def start_repmgrd(self, host: Host) -> None:
        """repmgrd and, beside it, the fencing guard (not on a witness, which is no data node): whichever of them
        is not running."""
        if not host.witness:
            self.start_guard(host)
        if self.repmgrd_running(host):
            return
        if host.layout is not None:
            # a pid file naming a dead (or zombie) repmgrd: repmgrd's own check (kill -0) would take the zombie for
            # a running repmgrd and exit without a word
            self.ssh.run(target_of(host), f"rm -f {shlex.quote(host.layout.socket_dir + '/repmgrd.pid')}")
        self.ssh.check(target_of(host), repmgrd_command(host), "starting repmgrd")
        if host.layout is not None:  # it daemonizes: wait for its pid file, so the next look finds it running
            alive = alive_from_pid_file(host.layout.socket_dir + "/repmgrd.pid")
            waited = self.ssh.run(target_of(host), f"for i in $(seq 100); do if {alive}; then exit 0; fi; sleep 0.05; done; "
                                                   "exit 1")
            if waited.exited != 0:
                raise PgaasError(f"{target_of(host).label}: repmgrd did not start; see {host.layout.log_dir}/repmgrd.out "
                                 "and repmgr.log there")

    def reconfigure_repmgr(self, host: Host, node_id: int, primary: Host | None = None) -> None:
        """New failover settings, TLS or node files: rewrite postgresql.conf, pg_hba.conf and the TLS files (a reload
        applies them all), repmgr.conf, the start, promote and guard scripts, then restart repmgrd and the guard.
        repmgr's record of the node then gets the new conninfo, and a standby (`primary` given: the host it
        streams from) the new primary_conninfo: a reload restarts its WAL receiver with the pair's sslmode."""
        layout = host.layout
        assert layout is not None
        target = target_of(host)
        self._write_tls(host)
        tls_on = self._serves_tls(host)
        self.ssh.put_text(target, postgresql_conf(host, layout, tls_on), f"{layout.config_dir}/postgresql.conf", 0o644)
        self.ssh.put_text(target, self._pg_hba(host), f"{layout.config_dir}/pg_hba.conf",
                          0o640)
        if self.postgres_running(host):
            self._reload(host)
        self.ssh.put_text(target, start_script(host, layout), start_script_path(layout), 0o755)
        self.ssh.put_text(target, repmgr_conf(host, layout, node_id, self.failover, self.push, self._client(host)),
                          layout.repmgr_conf, 0o644)
        self._write_push(host)
        self.ssh.put_text(target, promote_hook(host, layout, node_id), f"{layout.config_dir}/promote.sh", 0o755)
        self.ssh.put_text(target, self._guard_script(host, node_id), guard_script_path(layout), 0o755)
        self.stop_guard(host)  # the next start runs the new script
        if self.postgres_running(host):
            self._register_anew(host, primary)
        self.restart_repmgrd(host)

    def _register_anew(self, host: Host, primary: Host | None) -> None:
        """repmgr's record of the node with its conninfo as repmgr.conf now says; on a standby, primary_conninfo
        made of it when it differs (a reload restarts the WAL receiver, with the pair's sslmode)."""
        layout = host.layout
        assert layout is not None
        if primary is None:
            self._repmgr(host, "primary register --force", "repmgr primary register")
            return
        self._repmgr(host, "standby register --force", "repmgr standby register")
        wanted = (f"{conninfo(primary, self.failover, self._client(host))} application_name={host.node} "
                  f"passfile={layout.config_dir}/.pgpass").replace(f" dbname={REPMGR_DATABASE}", "")
        current = self.ssh.check(target_of(host), f"{_bin(host, 'psql')} -X -A -t -h {shlex.quote(layout.socket_dir)} "
                                 f"-p {host.pg_port} -U postgres -d postgres -c 'SHOW primary_conninfo'",
                                 "reading primary_conninfo").strip()
        if _conninfo_words(current) != _conninfo_words(wanted):
            self._psql(host, f"ALTER SYSTEM SET primary_conninfo = {_q(wanted)}", "setting primary_conninfo")
            self._psql(host, "SELECT pg_reload_conf()", "reloading")

    def renew_tls(self, host: Host, crl_only: bool = False) -> None:
        """A fresh server certificate (or, with `crl_only`, the revocation list alone) on the node, then a reload:
        PostgreSQL reads its TLS files anew for every new connection after it, and the sessions (replication too)
        go on: no downtime."""
        layout = host.layout
        assert layout is not None and self.tls is not None
        target = target_of(host)
        if crl_only:
            self.ssh.put_text(target, self.tls.crl_pem.decode(), f"{tls_dir(layout.config_dir)}/{ROOT_CRL}", 0o644)
        else:
            self._write_tls(host)
        if self.postgres_running(host):
            self._reload(host)

    def _reload(self, host: Host) -> None:
        """pg_ctl reload, then wait until the postmaster has read the files (pg_ctl only sends the signal): the
        sessions that follow (repmgr's, the next plan's) get the new pg_hba.conf and certificates."""
        layout = host.layout
        assert layout is not None
        loaded = (f"{_bin(host, 'psql')} -X -A -t -h {shlex.quote(layout.socket_dir)} -p {host.pg_port} -U postgres "
                  "-d postgres -c 'SELECT pg_conf_load_time()'")  # a new session's: the postmaster's last load
        script = (f"before=$({loaded}) && {pg_ctl(host, layout, 'reload')} && for i in $(seq 200); do "
                  f"[ \"$({loaded})\" != \"$before\" ] && exit 0; sleep 0.05; done; exit 1")
        if self.ssh.run(target_of(host), script).exited != 0:
            raise PgaasError(f"{target_of(host).label}: PostgreSQL did not read its new configuration within 10 s",
                             f"Look at {layout.log_dir} for what it said about its files, then run apply again.")

    def restart_repmgrd(self, host: Host) -> None:
        """A fresh repmgrd: after a rejoin, one that watched this node as a primary must not linger in that
        role (under load it may take seconds to notice, and miss the next failover)."""
        if host.layout is None:
            self.start_repmgrd(host)
            return
        self._stop_by_pid_file(host, f"{host.layout.socket_dir}/repmgrd.pid")
        self.start_repmgrd(host)

    def pause_repmgrd(self, host: Host) -> None:
        self._repmgr(host, "service pause", "repmgr service pause")

    def unpause_repmgrd(self, host: Host) -> None:
        self._repmgr(host, "service unpause", "repmgr service unpause")

    def promote(self, host: Host) -> None:
        """repmgr standby promote, through the promote hook where pgaasctl installed one."""
        if host.layout is not None:
            self.ssh.check(target_of(host), shlex.quote(f"{host.layout.config_dir}/promote.sh"), "promoting the standby")
        else:
            self._repmgr(host, "standby promote", "repmgr standby promote")


def _conninfo_words(text: str) -> set[tuple[str, str]]:
    """A conninfo's key=value pairs (values unquoted), to compare two that say the same in another order."""
    words = set()
    for part in shlex.split(text):
        key, _, value = part.partition("=")
        words.add((key, value))
    return words


def rewind_impossible(output: str) -> bool:
    """Whether `repmgr node rejoin --force-rewind` failed because pg_rewind itself cannot work."""
    return any(marker in output for marker in REWIND_FAILURES)


def _last_lines(text: str, count: int) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines() if line.strip()][-count:]
