"""Print plans for people (text, colours on a terminal), for machines (--json) and as SQL (--sql)."""

from __future__ import annotations

import json
import re
from typing import Any

from rich.console import Console
from rich.markup import escape

from pgaasctl.errors import PgaasError
from pgaasctl.plan.model import AttributeChange, Change, Plan

SYMBOLS = {"create": ("+", "green"), "update": ("~", "yellow"), "adopt": ("~", "cyan"), "delete": ("-", "red")}


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "[]"
    return str(value)


def _attribute_line(attr: AttributeChange, width: int, action: str) -> str:
    label = f"{attr.name}:".ljust(width + 1)
    if action == "create" or (attr.before is None and not attr.sensitive and action != "delete"):
        text = _value(attr.after) if attr.before is None else f"{_value(attr.before)} -> {_value(attr.after)}"
    else:
        text = f"{_value(attr.before)} -> {_value(attr.after)}"
    if attr.note:
        text += f"  ({attr.note})"
    return f"{label} {text}"


def render_change(change: Change) -> list[str]:
    symbol, colour = SYMBOLS[change.action]
    title = f"[{colour}]{symbol} {escape(change.address)}[/{colour}]"
    lines = [f"  {title}"]
    width = max((len(a.name) for a in change.attributes), default=0)
    for attr in change.attributes:
        lines.append("      " + escape(_attribute_line(attr, width, change.action)))
    for note in change.notes:
        lines.append(f"      [dim]# {escape(note)}[/dim]")
    return lines


def render_text(plan: Plan, console: Console) -> None:
    """The plan as people read it. Printed at once (soft-wrapped, as a terminal wraps): a print per line cost a
    second and a half for a plan of four thousand changes."""
    lines: list[str] = []
    if plan.targets:
        shown = ", ".join(plan.targets[:5]) + (f" and {len(plan.targets) - 5} more" if len(plan.targets) > 5 else "")
        lines += [f"[bold yellow]Targeted plan:[/bold yellow] only {escape(shown)} (and what they need) "
                  "were planned; other objects may have changes this plan does not show.", ""]
    for pair in plan.pairs:
        lines.append(escape(pair.header))
        lines += [f"  [bold yellow]warning:[/bold yellow] {escape(warning)}" for warning in pair.warnings]
        if pair.changes:
            lines.append("")
            for host in pair.hosts:
                symbol, colour = SYMBOLS[host.action]
                lines.append(f"  [{colour}]{symbol} {escape(host.address)}[/{colour}] ({escape(host.description)})")
            for change in pair.changes:
                lines += render_change(change)
                if change.kind == "pair" and pair.operations:
                    width = max(len(op.node) for op in pair.operations) + 5
                    for op in pair.operations:
                        label = f"node {op.node}:".ljust(width + 1)
                        lines.append(f"      {escape(label)} {escape(op.detail)}")
        else:
            lines.append("  No changes: the pair matches the specs.")
        lines.append("")
    counts = plan.counts()
    if plan.has_changes:
        lines.append(f"[bold]Plan:[/bold] {counts['add']} to add, {counts['change']} to change, "
                     f"{counts['destroy']} to destroy.")
    else:
        lines.append("[bold]No changes.[/bold] The servers match the specs.")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def render_json(plan: Plan) -> str:
    data = plan.fingerprinted().model_dump(mode="json")
    data["summary"] = plan.counts()
    return json.dumps(data, indent=2, sort_keys=False)


def render_sql(plan: Plan) -> str:
    """The statements in order, as a psql script (\\connect switches databases); secrets redacted.
    Every line is a comment, a statement, or a \\connect whose argument is quoted: nothing else runs."""
    out: list[str] = []
    for pair in plan.pairs:
        out.append(_comment(f"pair {pair.pair}: run on the primary {pair.primary}"))
        for op in pair.operations:
            out.append(_comment(f"first, over SSH on node {op.node}: {op.detail}"))
        current = pair.admin_database
        out.append(_connect(current))
        for change in pair.changes:
            out.append(_comment(f"{change.action} {change.address}"))
            for statement in change.sql:
                database = statement.database or pair.admin_database
                if database != current:
                    out.append(_connect(database))
                    current = database
                out.append(statement.text + ";")
    return "\n".join(out) + "\n"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PSQL_ESCAPES = {"'": "''", "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _comment(text: str) -> str:
    """A comment line: a newline in `text` would end it, and psql would run what follows."""
    return "-- " + _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _connect(database: str) -> str:
    if "=" in database or database.startswith(("postgresql://", "postgres://")):
        # validated names never look like this; psql would connect wherever the string says
        raise PgaasError(f"database name {database!r} would be read by psql as a connection string")
    if database == "-":
        raise PgaasError("database name '-' means the previous connection's database to psql")
    return f"\\connect {psql_quote(database)}"


def psql_quote(argument: str) -> str:
    """One argument of a psql meta-command, single-quoted: psql reads '' as a quote and expands backslash
    escapes there, so a backslash, newline or other control character cannot end the command or start another."""
    def escape(char: str) -> str:
        if char in _PSQL_ESCAPES:
            return _PSQL_ESCAPES[char]
        return f"\\x{ord(char):02x}" if _CONTROL.fullmatch(char) else char

    return "'" + "".join(map(escape, argument)) + "'"
