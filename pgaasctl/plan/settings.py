"""Compare parameter values the way PostgreSQL reads them: 8MB equals 1024 (8kB units), 30s equals 30000 (ms)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgaasctl.live.catalog import LiveSetting
from pgaasctl.spec.models import SettingValue

_MEMORY = {"B": 1 / 1024, "kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}
_TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_NUMBER_UNIT = re.compile(r"^\s*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*([A-Za-z]*)\s*$")
_TRUE = {"on", "true", "yes", "1", "t", "y"}
_FALSE = {"off", "false", "no", "0", "f", "n"}


def as_text(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _unit_scale(unit: str | None) -> tuple[dict[str, float], float] | None:
    """The unit table a parameter uses and the size of its base unit in that table."""
    if not unit:
        return None
    match = re.match(r"^(\d*)([A-Za-z]+)$", unit)
    if not match:
        return None
    count = int(match.group(1) or 1)
    name = match.group(2)
    for table in (_MEMORY, _TIME):
        if name in table:
            return table, count * table[name]
    return None


# Parameters PostgreSQL reads as lists of (possibly quoted) items.
LIST_PARAMETERS = {"search_path", "temp_tablespaces", "shared_preload_libraries", "session_preload_libraries",
                   "local_preload_libraries"}


def canonical(value: SettingValue | str, setting: LiveSetting | None) -> str:
    """A comparable form of `value` for `setting` (None: an unknown/custom parameter, compared as text)."""
    text = as_text(value).strip()
    if setting is not None and setting.name.lower() in LIST_PARAMETERS:
        return ", ".join(item.strip().strip('"') for item in text.split(",") if item.strip())  # "$user", public
    if setting is None:
        return text
    if setting.vartype == "bool":
        low = text.lower()
        return "on" if low in _TRUE else "off" if low in _FALSE else low
    if setting.vartype in ("integer", "real"):
        scale = _unit_scale(setting.unit)
        match = _NUMBER_UNIT.match(text)
        if not match:
            return text
        number, suffix = float(match.group(1)), match.group(2)
        if scale and suffix:
            table, base = scale
            if suffix not in table:
                return text
            number = number * table[suffix] / base
        return f"{number:.15g}"
    if setting.vartype == "enum":
        return text.lower()
    return text


def is_valid(value: SettingValue, setting: LiveSetting) -> str | None:
    """Why `value` cannot be given to `setting`, or None."""
    text = as_text(value).strip()
    if setting.vartype == "bool" and text.lower() not in _TRUE | _FALSE:
        return f"expects on or off, got {text!r}"
    if setting.vartype in ("integer", "real"):
        match = _NUMBER_UNIT.match(text)
        scale = _unit_scale(setting.unit)
        if not match:
            return f"expects a number{' with a unit' if scale else ''}, got {text!r}"
        if match.group(2) and (scale is None or match.group(2) not in scale[0]):
            units = ", ".join(scale[0]) if scale else "none"
            return f"unit {match.group(2)!r} is not valid here (units: {units})"
    if setting.vartype == "enum" and setting.enumvals and text.lower() not in [v.lower() for v in setting.enumvals]:
        return f"expects one of {', '.join(setting.enumvals)}, got {text!r}"
    return None


def shown(setting: LiveSetting) -> str:
    """The live value as a person writes it: the auto.conf text if set there, else e.g. 4MB rather than 512 (8kB)."""
    if setting.file_value is not None:
        return setting.file_value
    scale = _unit_scale(setting.unit)
    if setting.vartype in ("integer", "real") and float(setting.setting) <= 0:
        return setting.setting  # -1 and 0 mean "off" or "no limit": a unit would mislead
    if scale is None or setting.vartype != "integer":
        return f"{setting.setting}{setting.unit or ''}" if setting.vartype in ("integer", "real") else setting.setting
    table, base = scale
    amount = int(setting.setting) * base  # in the table's reference unit (kB or ms)
    for name, size in sorted(table.items(), key=lambda item: -item[1]):
        if size >= 1 and amount % size == 0:
            return f"{int(amount // size)}{name}"
    return f"{setting.setting}{setting.unit}"


def needs_restart(setting: LiveSetting) -> bool:
    return setting.context == "postmaster"


# ---------------------------------------------------------------- parameters replication depends on

# A hot standby must run these at no less than its primary does, or PostgreSQL refuses to start it (and pauses
# replay when the primary raises one). Each maps to its label in pg_controldata, which holds the primary's values.
HOT_STANDBY_PARAMETERS: dict[str, str] = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prep_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}

REPMGR_LIBRARY = "repmgr"
MIN_WAL_SENDERS = 4  # the standby's stream, pg_basebackup's two while a node is cloned, one a crashed peer holds
MIN_REPLICATION_SLOTS = 2  # repmgr keeps a slot per standby; a former primary's slot lingers until dropped
_WAL_LEVELS = ("minimal", "replica", "logical")


@dataclass(frozen=True)
class PairTraits:
    """What a pair is, as far as the parameters its replication owns are concerned."""

    created: bool  # pgaasctl bootstrapped the nodes (provider local): it owns their layout and sockets
    repmgr: bool  # pgaasctl drives repmgr on the nodes over SSH
    nodes: int
    synchronous: bool = False  # `replication: synchronous`: a commit returns once the standby has it

    @property
    def replicated(self) -> bool:
        return self.repmgr or self.nodes > 1


_CONNECTION = ("pgaasctl (and repmgr, and every client) connect through it; an ALTER SYSTEM change would cut "
               "them off at the next restart")
_FILES = "it locates the server's files, which pgaasctl does not move"
_PER_NODE = "it names one node's upstream (repmgr writes it on each standby), and pair settings go to every node"


PRELOAD_PARAMETERS = frozenset({"shared_preload_libraries", "session_preload_libraries", "local_preload_libraries"})

# Recovery belongs to repmgr and pgaasctl's failover: with one of these a standby may promote itself (two primaries)
# or stop following the primary after a failover.
RECOVERY_PARAMETERS = frozenset({
    "promote_trigger_file", "recovery_target", "recovery_target_name", "recovery_target_time", "recovery_target_xid",
    "recovery_target_lsn", "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action",
    "restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_min_apply_delay",
})


def missing_libraries(value: SettingValue, installed: list[str]) -> list[str]:
    """The items of a *_preload_libraries value with no shared library in the server's library directory."""
    have = {name.removesuffix(".so") for name in installed}
    out = []
    for item in (i.strip().strip('"') for i in as_text(value).split(",")):
        name = item.removeprefix("$libdir/").removesuffix(".so")
        if item and "/" not in name and name not in have:
            out.append(item)
    return out


def owned_parameter_problems(settings: dict[str, SettingValue], pair: PairTraits) -> dict[str, str]:
    """Parameters of a Pair's `settings` that its replication owns, each with why it is refused.

    Every pair: what pgaasctl connects through (port, listen_addresses), where the server's files are, and the
    per-node primary_conninfo / primary_slot_name. Replicated pairs (repmgr, or two nodes): the values that stop
    replication at the next restart. Pairs pgaasctl created: its socket directory, and wal_log_hints (pg_rewind).
    A single server of the user's own (provider existing without SSH) may set wal_level minimal and the like.
    """
    problems: dict[str, str] = {}
    for name, value in settings.items():
        reason = _owned_reason(name, as_text(value).strip(), pair)
        if reason is not None:
            problems[name] = reason
    return problems


def _owned_reason(name: str, text: str, pair: PairTraits) -> str | None:
    if name in ("port", "listen_addresses"):
        return f"{name} is owned by pgaasctl: {_CONNECTION}"
    if name in ("data_directory", "config_file", "hba_file", "ident_file"):
        return f"{name} is owned by pgaasctl: {_FILES}"
    if name in ("primary_conninfo", "primary_slot_name"):
        return f"{name} is owned by pgaasctl's replication: {_PER_NODE}"
    if pair.created and name == "unix_socket_directories":
        return (f"{name} is owned by pgaasctl: its promote hook and bootstrap connect through the socket directory "
                "it set up")
    if pair.created and name == "wal_log_hints" and _boolean(text) is False:
        return "wal_log_hints off is refused: pg_rewind needs it to rejoin a failed primary without a full re-clone"
    if pair.synchronous and pair.nodes > 1 and name == "synchronous_commit" and text.lower() in ("off", "local"):
        return (f"synchronous_commit {text} is refused on a synchronous pair: commits would be acknowledged before "
                "the standby has them, and a failover could lose them (set it per Role or Database where that is meant)")
    if name == "default_transaction_read_only" and _boolean(text) is True:
        return ("default_transaction_read_only on is refused: every session, pgaasctl's and your clients' through "
                "the connection URI, would start read-only (set it on a Role or Database instead)")
    if name == "fsync" and _boolean(text) is False:
        return "fsync off is refused: a crash of the node could corrupt its data, and a standby cloned from it"
    if pair.created and name == "full_page_writes" and _boolean(text) is False:
        return "full_page_writes off is refused: pg_rewind needs it to rejoin a failed primary, and a crash may tear pages"
    if not pair.replicated:
        return None
    if name in RECOVERY_PARAMETERS:
        return (f"{name} is owned by pgaasctl's failover (repmgr): on a standby it may promote the node by itself "
                "(two primaries) or stop it following the primary")
    if name == "wal_level" and text.lower() in _WAL_LEVELS and _WAL_LEVELS.index(text.lower()) < 1:
        return (f"wal_level {text} is refused: a standby needs replica or logical; {text} stops replication at the "
                "next restart")
    if name == "hot_standby" and _boolean(text) is False:
        return "hot_standby off is refused: the standby would refuse connections, so pgaasctl could not see or check it"
    minimum = {"max_wal_senders": MIN_WAL_SENDERS if pair.repmgr else 1,
               "max_replication_slots": MIN_REPLICATION_SLOTS if pair.repmgr else 0}.get(name)
    number = _integer(text)
    if minimum is not None and number is not None and number < minimum:
        why = ("one stream per standby, two for pg_basebackup while a node is cloned, and one a crashed node may "
               "still hold" if name == "max_wal_senders" else "repmgr keeps a replication slot for each standby")
        if not pair.repmgr:
            why = "the standby streams through one"
        return f"{name} {number} is refused: this pair needs at least {minimum} ({why})"
    return None


def _boolean(text: str) -> bool | None:
    low = text.lower()
    return True if low in _TRUE else False if low in _FALSE else None


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def with_repmgr(value: SettingValue) -> str:
    """shared_preload_libraries as the spec gives it, with repmgr appended unless it is already there."""
    return with_library(value, REPMGR_LIBRARY)


def with_library(value: SettingValue, library: str) -> str:
    """A list of libraries with `library` appended unless it is already there."""
    items = [item.strip() for item in as_text(value).split(",") if item.strip()]
    if library not in [item.strip('"') for item in items]:
        items.append(library)
    return ", ".join(items)


def restart_pending(setting: LiveSetting) -> bool:
    """The server runs another value than its configuration gives: PostgreSQL's own flag, or a postmaster
    parameter raised on the command line for one run (a standby started at its primary's hot-standby values)."""
    if setting.pending_restart:
        return True
    if not needs_restart(setting) or setting.file_value is None:
        return False
    return canonical(setting.file_value, setting) != running_canonical(setting)


def running_canonical(setting: LiveSetting) -> str:
    """pg_settings.setting is already in the parameter's base unit."""
    return canonical(setting.setting, setting.model_copy(update={"unit": None}))


def running_shown(setting: LiveSetting) -> str:
    """The value the server runs, as a person writes it."""
    return shown(setting.model_copy(update={"file_value": None}))


def lowered(name: str, running: str, configured: str) -> bool:
    """A hot-standby parameter whose configured value is below the one the server runs."""
    if name not in HOT_STANDBY_PARAMETERS:
        return False
    now, then = _integer(running.strip()), _integer(configured.strip())
    return now is not None and then is not None and then < now
