"""The fencing guard: a small loop beside repmgrd on every node pgaasctl bootstraps.

Every half second it asks its own PostgreSQL what it is, and, when it is a primary, asks each peer (from
repmgr's node records) the same. It asks on one session it keeps open (application_name `pgaasctl-guard`, so a
plan can see over SQL that the guard runs): a look forks nothing and starts no backend. A fresh psql and a fresh
backend twice a second cost a node about 6% of a core; a fleet of 20 pairs on two cores spent most of its CPU on
them. A primary that sees a peer primary on a newer timeline is stale: the peer was
promoted after it (a failover while it was frozen, cut off or stopped). The guard fences it at once:
  - it writes `fenced` (why and when) in the node's run directory, and the virtual IP's track file says no;
  - it stops PostgreSQL (fast, then immediate): a stale primary serves no session at all, read or write.
A primary only ever fences itself, and only for a peer on a newer timeline, so two guards never fence both nodes.
`pgaasctl apply` then rewinds the fenced node onto the new primary; the guard clears the mark once the node
runs as a standby.

The guard also keeps the virtual IP's track file (keepalived `track_file`): 0 when this node is a primary and
not fenced, 1 otherwise, so keepalived never puts the address on a standby or a stale primary.

On a standby with automatic failover it is also repmgrd's watchdog. repmgrd runs queries on its connection to
the primary with no client-side deadline; when the primary hangs (its processes stopped, its kernel still
acknowledging every packet) in the middle of one, repmgrd waits forever and never fails over (measured: about 1
hung-primary trial in 20). The watchdog acts when all of these hold:
  - the upstream has sent nothing to this standby's WAL receiver for `stuck_after` seconds;
  - repmgrd runs, is not paused, and has written nothing to its log for as long (at work on a failure, it logs
    every second; one that lost an election or has no majority keeps logging too);
  - no promotion is under way;
  - the upstream refuses or times out a new connection;
  - the witness's repmgrd runs and has not seen the primary for 2 s or more (the majority repmgrd would ask for).
Then it kills the stuck repmgrd, promotes this node with the same promote hook repmgrd runs, and starts repmgrd
again, which monitors the node as the primary.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # providers.local imports this module for the track file's path
    from providers.base import Host, HostLayout

INTERVAL = 0.5  # seconds between two looks
ANSWER_WITHIN = 3  # seconds a look waits for its own server's answer; then the node counts as unknown (not eligible)
APPLICATION_NAME = "pgaasctl-guard"  # the guard's own session, in pg_stat_activity


def guard_script_path(layout: HostLayout) -> str:
    return f"{layout.config_dir}/guard.sh"


def guard_pid_file(layout: HostLayout) -> str:
    return f"{layout.socket_dir}/guard.pid"


def fenced_file(layout: HostLayout) -> str:
    return f"{layout.socket_dir}/fenced"


def promoting_file(layout: HostLayout) -> str:
    """Present while the promote hook runs: the node is about to be primary, the guard leaves the track file alone."""
    return f"{layout.socket_dir}/promoting"


def vip_timeline_file(layout: HostLayout) -> str:
    """The virtual IP's priority bonus: this node's timeline while it is an eligible primary, else 0."""
    return f"{layout.socket_dir}/vip.timeline"


def vip_track_file(layout: HostLayout) -> str:
    return f"{layout.socket_dir}/vip.track"


def guard_log(layout: HostLayout) -> str:
    return f"{layout.log_dir}/guard.log"


def guard_script(host: Host, layout: HostLayout, node_id: int, stuck_after: int | None, repmgrd_command: str) -> str:
    """`stuck_after`: seconds of silence before the watchdog looks closer; None (manual failover) turns it off."""
    q = shlex.quote
    return "\n".join([
        "#!/bin/bash",
        "# written by pgaasctl: the fencing guard (see pgaasctl/hosts/guard.py)",
        f"bin={q(host.bin_dir)}",
        f"conf={q(layout.config_dir)}",
        f"sock={q(layout.socket_dir)}",
        f"port={host.pg_port}",
        f"fenced={q(fenced_file(layout))}",
        f"track={q(vip_track_file(layout))}",
        f"promoting={q(promoting_file(layout))}",
        f"timeline_file={q(vip_timeline_file(layout))}",
        f"pidfile={q(guard_pid_file(layout))}",
        f"export PGPASSFILE={q(layout.config_dir + '/.pgpass')}",
        "export PGCONNECT_TIMEOUT=1",
        # the session lives as long as the guard: server-wide timeouts a DBA sets must not end it every minute
        "export PGOPTIONS='-c idle_session_timeout=0 -c idle_in_transaction_session_timeout=0'",
        'echo $$ >"$pidfile"',
        "trap '' PIPE  # a write to a session that ended fails; it does not end the guard",
        "trap 'end_session; exit 0' TERM INT",
        "exec {tick}<> <(:)  # a pipe nobody writes to: `read -t` on it sleeps without a fork",
        "say() { echo \"$(date -u '+%Y-%m-%d %H:%M:%S UTC') $*\"; }",
        # Every look runs on every node twice a second: shell builtins wherever they do (a fork costs more than
        # the rest of a look), so a node pays about 1% of a core for its guard.
        "put() { v=; [ -f \"$1\" ] && read -r v <\"$1\"; [ \"$v\" = \"$2\" ] || echo \"$2\" >\"$1\"; }",
        "nl='\n'; ifs=$IFS  # the shell's newline, to split the peers' list by lines alone; the usual separators",
        # eligibility for the virtual IP (0 = eligible) and, while eligible, the timeline as its priority bonus
        "track() { put \"$track\" \"$1\"; if [ \"$1\" = 0 ]; then put \"$timeline_file\" \"$((mine > 150 ? 150 : mine))\"; "
        "else put \"$timeline_file\" 0; fi; }",
        *_session_functions(),
        # A primary says its timeline (in the name of the WAL file it writes: pg_control's lags until a checkpoint)
        # and how many of its peers do not stream from it. A peer streaming from it is a standby, not a newer
        # primary (a promotion ends the standby's WAL receiver, and with it the walsender here): while every peer
        # streams, the guard asks none of them, the costliest part of a look.
        # A standby also says, for the watchdog: the time (its clock), when its upstream last sent anything (0: it
        # does not stream), and whether repmgrd is paused.
        "ROLE=\"SELECT CASE WHEN pg_is_in_recovery() THEN 'standby 0 ' || extract(epoch FROM now())::bigint || ' ' || "
        "coalesce((SELECT extract(epoch FROM last_msg_receipt_time)::bigint FROM pg_stat_wal_receiver "
        "WHERE status = 'streaming'), 0) || ' ' || repmgr.repmgrd_is_paused()::int ELSE 'primary ' || "
        "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int || ' ' || "
        "(SELECT count(*) FROM repmgr.nodes n WHERE n.type <> 'witness' AND n.node_id <> "
        f"{node_id} AND NOT EXISTS (SELECT 1 FROM pg_stat_replication r WHERE r.application_name = n.node_name "
        "AND r.state = 'streaming')) END\"",
        "PEERS=\"SELECT conninfo FROM repmgr.nodes WHERE type <> 'witness' AND node_id <> "
        f"{node_id}\"",
        'peers=""',
        "looks=0",
        *(_watchdog(host, layout, node_id, stuck_after, repmgrd_command) if stuck_after else ["watch() { :; }"]),
        "heard=  # when the upstream was last heard from; empty: from the next look as a standby",
        "while :; do",
        "  looks=$((looks + 1))",
        '  ask "$ROLE"; me=$answer',
        '  case "$me" in',
        "    standby*)",
        "      watch",
        "      # a promotion under way (the hook's mark, younger than a minute) keeps the address it was given",
        '      { [ -f "$promoting" ] && [ -n "$(find "$promoting" -mmin -1 2>/dev/null)" ]; } || track 1',
        '      if [ -f "$fenced" ]; then say "running as a standby now: fence lifted"; rm -f "$fenced"; fi ;;',
        "    primary*)",
        "      heard=  # the watchdog counts a standby's silence from when it became one",
        '      mine=${me#primary }; unstreamed=${mine#* }; mine=${mine%% *}',
        '      case "$unstreamed" in ""|*[!0-9]*) unstreamed=1 ;; esac',
        "      # the peers' conninfo, from repmgr's records: read again every 10 s (20 looks), or while unknown",
        '      if [ "$unstreamed" != 0 ] && { [ -z "$peers" ] || [ $((looks % 20)) = 0 ]; }; then',
        '        ask "$PEERS" && [ -n "$answer" ] && peers=$answer',
        "      fi",
        '      newer=""',
        '      IFS=$nl',
        '      [ "$unstreamed" = 0 ] || for info in $peers; do',
        '        IFS=$ifs',
        '        theirs=$("$bin/psql" -X -A -t -q -d "$info connect_timeout=1" -c "$ROLE" 2>/dev/null)',
        '        case "$theirs" in primary*) t=${theirs#primary }; t=${t%% *}',
        '          [ "$t" -gt "$mine" ] && newer="$(printf "%s" "$info" | sed -n "s/.*host=\\([^ ]*\\).*/\\1/p") is a primary on timeline $t";;',
        '        esac',
        "      done",
        '      IFS=$ifs',
        '      if [ -n "$newer" ]; then',
        '        track 1',
        '        say "fenced: a stale primary on timeline $mine ($newer, promoted later); PostgreSQL stopped" \\',
        '          | tee "$fenced"',
        '        "$bin/pg_ctl" -D "$conf" -m fast -w -t 10 stop || "$bin/pg_ctl" -D "$conf" -m immediate -w -t 10 stop',
        "      elif [ -f \"$fenced\" ]; then",
        '        track 1',
        "      else",
        '        track 0',
        "      fi ;;",
        "    *) track 1; heard= ;;",
        "  esac",
        f"  read -t {INTERVAL} -u \"$tick\"",
        "done",
        "",
    ])


def _session_functions() -> list[str]:
    """Shell functions over the guard's one session with its own server: a psql coprocess, asked line by line."""
    return [
        "sql_pid=",
        "start_session() {",
        '  coproc SQL { exec "$bin/psql" -X -A -t -q -h "$sock" -p "$port" -U repmgr '
        f'-d "dbname=repmgr application_name={APPLICATION_NAME}" 2>/dev/null; }}',
        "  # our own copies of its pipes: bash closes the coprocess's when it reaps it",
        '  [ -n "${SQL[1]:-}" ] && exec {sql_in}>&"${SQL[1]}" {sql_out}<&"${SQL[0]}" && sql_pid=$SQL_PID',
        "}",
        "end_session() {",
        '  [ -n "$sql_pid" ] || return 0',
        '  kill -9 "$sql_pid" 2>/dev/null; wait "$sql_pid" 2>/dev/null',
        '  exec {sql_in}>&- {sql_out}<&-; sql_pid=',
        "}",
        "# ask SQL: its rows in $answer, one per line (empty after an error); fails when the server did not answer",
        f"# within {ANSWER_WITHIN} s. A session that ended (a restart, a terminated backend) is opened again once.",
        "ask() {",
        "  answer=",
        "  for try in 1 2; do",
        '    [ -n "$sql_pid" ] || start_session || return 1',
        "    rc=1",
        r"""    if printf '%s;\n\\echo @@\n' "$1" >&"$sql_in" 2>/dev/null; then""",
        "      while :; do",
        f'        IFS= read -r -t {ANSWER_WITHIN} -u "$sql_out" line; rc=$?',
        '        [ "$rc" = 0 ] || break',
        '        [ "$line" = @@ ] && return 0',
        '        answer=${answer:+$answer$nl}$line',
        "      done",
        "    fi",
        "    end_session; answer=",
        '    [ "$rc" -gt 128 ] && return 1  # no answer in time: the next look asks on a new session',
        "  done",
        "  return 1",
        "}",
    ]


def _watchdog(host: Host, layout: HostLayout, node_id: int, stuck_after: int, repmgrd_command: str) -> list[str]:
    """The shell function `watch`, run on every look while the node is a standby (see the module's docstring)."""
    q = shlex.quote
    return [
        f"stuck_after={stuck_after}",
        f"repmgr_log={q(layout.log_dir + '/repmgr.log')}",
        f"repmgrd_pidfile={q(layout.socket_dir + '/repmgrd.pid')}",
        "UPSTREAM=\"SELECT u.conninfo FROM repmgr.nodes u JOIN repmgr.nodes me ON u.node_id = me.upstream_node_id "
        f"WHERE me.node_id = {node_id}\"",
        "WITNESS=\"SELECT conninfo FROM repmgr.nodes WHERE type = 'witness'\"",
        "WITNESS_SEEN=\"SELECT CASE WHEN repmgr.repmgrd_is_running() THEN repmgr.get_upstream_last_seen() ELSE 0 END\"",
        "watch() {",
        '  set -- $me  # standby 0 NOW LAST_HEARD PAUSED, from the look',
        '  [ "${3:-0}" -gt 0 ] 2>/dev/null || return 0',
        '  now=$3',
        '  [ "${4:-0}" -gt 0 ] 2>/dev/null && heard=$4',
        '  [ -n "$heard" ] || heard=$now',
        '  [ "${5:-1}" = 0 ] || return 0  # paused (a switchover under way)',
        '  [ $((now - heard)) -ge $stuck_after ] || return 0',
        '  [ -n "$(find "$promoting" -mmin -1 2>/dev/null)" ] && return 0',
        '  logged=$(stat -c %Y "$repmgr_log" 2>/dev/null || echo 0)',
        '  [ $((now - logged)) -ge $stuck_after ] || return 0  # repmgrd is at work on it',
        '  pid=$(cat "$repmgrd_pidfile" 2>/dev/null)',
        "  # no repmgrd, or a dead one: automatic failover is off (status says so), not stuck",
        '  [ -n "$pid" ] && [ "$(sed "s/.*) //" /proc/$pid/stat 2>/dev/null | cut -c1)" != Z ] '
        '&& [ -r /proc/$pid/stat ] || return 0',
        '  ask "$UPSTREAM"; upstream=$answer',
        '  [ -n "$upstream" ] || return 0',
        '  if "$bin/psql" -X -A -t -q -d "$upstream connect_timeout=2" -c "SELECT 1" >/dev/null 2>&1; then',
        "    heard=$now; return 0  # it answers: slow, not gone",
        "  fi",
        '  ask "$WITNESS"; witness=$answer',
        '  if [ -n "$witness" ]; then',
        '    seen=$("$bin/psql" -X -A -t -q -d "$witness connect_timeout=2" -c "$WITNESS_SEEN" 2>/dev/null)',
        '    case "$seen" in',
        '      -1) agrees="the witness has not seen it since its repmgrd started" ;;',
        '      [2-9]|[1-9][0-9]*) agrees="the witness has not seen it for $seen s" ;;',
        "      *) heard=$now; return 0 ;;  # no majority: the witness sees it, is not reachable, or runs no repmgrd",
        "    esac",
        '  else agrees="there is no witness"; fi',
        '  say "watchdog: repmgrd (pid $pid) has written nothing for $((now - logged)) s while the upstream has been '
        'silent for $((now - heard)) s and refuses connections, and $agrees: repmgrd is stuck; promoting this node '
        'in its place"',
        '  kill -9 "$pid" 2>/dev/null; rm -f "$repmgrd_pidfile"',
        '  if "$conf/promote.sh" failover; then say "watchdog: promoted"; else say "watchdog: the promotion failed"; fi',
        "  # what repmgrd does after its own promotion: tell the witness to follow the new primary",
        '  [ -z "$witness" ] || "$bin/psql" -X -A -t -q -d "$witness connect_timeout=2" '
        f'-c "SELECT repmgr.notify_follow_primary({node_id})" >/dev/null 2>&1 || say "watchdog: the witness was not told"',
        f"  {repmgrd_command}",
        "  heard=",
        "}",
    ]
