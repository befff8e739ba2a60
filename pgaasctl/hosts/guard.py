"""The fencing guard: a small loop beside repmgrd on every node pgaasctl bootstraps.

Every half second it asks its own PostgreSQL what it is, and, when it is a primary, asks each peer (from
repmgr's node records) the same. A primary that sees a peer primary on a newer timeline is stale: the peer was
promoted after it (a failover while it was frozen, cut off or stopped). The guard fences it at once:
  - it writes `fenced` (why and when) in the node's run directory, and the virtual IP's track file says no;
  - it stops PostgreSQL (fast, then immediate): a stale primary serves no session at all, read or write.
A primary only ever fences itself, and only for a peer on a newer timeline, so two guards never fence both nodes.
`pgaasctl apply` then rewinds the fenced node onto the new primary; the guard clears the mark once the node
runs as a standby.

The guard also keeps the virtual IP's track file (keepalived `track_file`): 0 when this node is a primary and
not fenced, 1 otherwise, so keepalived never puts the address on a standby or a stale primary.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # providers.local imports this module for the track file's path
    from providers.base import Host, HostLayout

INTERVAL = 0.5  # seconds between two looks


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


def guard_script(host: Host, layout: HostLayout, node_id: int) -> str:
    q = shlex.quote
    return "\n".join([
        "#!/bin/sh",
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
        'echo $$ >"$pidfile"',
        "trap 'exit 0' TERM INT",
        "say() { echo \"$(date -u '+%Y-%m-%d %H:%M:%S UTC') $*\"; }",
        "put() { [ \"$(cat \"$1\" 2>/dev/null)\" = \"$2\" ] || echo \"$2\" >\"$1\"; }",
        # eligibility for the virtual IP (0 = eligible) and, while eligible, the timeline as its priority bonus
        "track() { put \"$track\" \"$1\"; if [ \"$1\" = 0 ]; then put \"$timeline_file\" \"$((mine > 150 ? 150 : mine))\"; "
        "else put \"$timeline_file\" 0; fi; }",
        'local_sql() { "$bin/psql" -X -A -t -q -h "$sock" -p "$port" -U repmgr -d repmgr -c "$1" 2>/dev/null; }',
        # a primary's timeline is in the name of the WAL file it writes (pg_control's lags until a checkpoint)
        "ROLE=\"SELECT CASE WHEN pg_is_in_recovery() THEN 'standby 0' ELSE 'primary ' || "
        "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END\"",
        "PEERS=\"SELECT conninfo FROM repmgr.nodes WHERE type <> 'witness' AND node_id <> "
        f"{node_id}\"",
        'peers=""',
        "while :; do",
        '  me=$(local_sql "$ROLE")',
        '  case "$me" in',
        "    standby*)",
        "      # a promotion under way (the hook's mark, younger than a minute) keeps the address it was given",
        '      [ -n "$(find "$promoting" -mmin -1 2>/dev/null)" ] || track 1',
        '      if [ -f "$fenced" ]; then say "running as a standby now: fence lifted"; rm -f "$fenced"; fi ;;',
        "    primary*)",
        '      mine=${me#primary }',
        '      found=$(local_sql "$PEERS") && [ -n "$found" ] && peers=$found',
        '      newer=""',
        '      for peer in $(printf "%s\\n" "$peers" | tr " " "~"); do',
        '        info=$(printf "%s" "$peer" | tr "~" " ")',
        '        theirs=$("$bin/psql" -X -A -t -q -d "$info connect_timeout=1" -c "$ROLE" 2>/dev/null)',
        '        case "$theirs" in primary*) t=${theirs#primary }',
        '          [ "$t" -gt "$mine" ] && newer="$(printf "%s" "$info" | sed -n "s/.*host=\\([^ ]*\\).*/\\1/p") is a primary on timeline $t";;',
        '        esac',
        "      done",
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
        "    *) track 1 ;;",
        "  esac",
        f"  sleep {INTERVAL}",
        "done",
        "",
    ])
