"""Compare parameter values the way PostgreSQL reads them: 8MB equals 1024 (8kB units), 30s equals 30000 (ms)."""

from __future__ import annotations

import re

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
