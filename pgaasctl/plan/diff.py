"""Desired versus live, per object, into typed changes with their statements."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgaasctl.hosts.bootstrap import NODE_FILES_VERSION
from pgaasctl.live.catalog import (
    DatabaseContents,
    LiveCatalog,
    LiveSchema,
    ObjectsInSchema,
)
from pgaasctl.passwords import PasswordCheck
from pgaasctl.plan import settings as settings_rules
from pgaasctl.plan import sqlgen
from pgaasctl.plan.model import SENSITIVE, AttributeChange, Change, Statement
from pgaasctl.spec.models import (
    DatabaseSpec,
    ExistingPairSpec,
    GrantSpec,
    CreatedPairSpec,
    RoleSpec,
    SchemaGrant,
    SettingValue,
)
from pgaasctl.store import ManagedObject

OBJECT_TYPES = ("tables", "sequences", "functions")

STATEMENTS_EXTENSION = "pg_stat_statements"  # a Pair's `statements: true`


@dataclass
class PairContext:
    """Everything one pair's diff reads. `passwords` holds resolved secrets by role name."""

    pair: str
    catalog: LiveCatalog
    managed: dict[str, ManagedObject]
    passwords: dict[str, PasswordCheck] = field(default_factory=dict)  # roles whose password is managed
    dropping_databases: set[str] = field(default_factory=set)
    sync_standby_names: str | None = None  # managed on repmgr pairs: "*" when synchronous and whole, else ""
    node_files: int | str = NODE_FILES_VERSION  # what a local pair's record says of its node files
    certificate_roles: list[str] = field(default_factory=list)  # roles that log in with a client certificate
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def admin(self) -> str:
        return self.catalog.user

    def note_once(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def record_of(self, address: str) -> dict[str, Any] | None:
        managed = self.managed.get(address)
        return managed.attributes if managed else None


def attribute_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names of the attributes that differ (order of lists ignored)."""
    if json.dumps(before, sort_keys=True, default=str) == json.dumps(after, sort_keys=True, default=str):
        return []  # the common case, far cheaper than a DeepDiff (and unlike ==, 1 is not true here)
    from deepdiff import (
        DeepDiff,  # imported when first needed: 30 ms of every command's start otherwise
    )

    diff = DeepDiff(before, after, ignore_order=True, report_repetition=False)
    return sorted(str(k) for k in diff.affected_root_keys)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def finish_update(change: Change, record: dict[str, Any] | None) -> Change | None:
    """An update with nothing to do on the server: None if the store is current, else a state-only change."""
    if change.action != "update" or change.attributes:
        return change
    if record == change.record:
        return None
    before, after = _flatten(record or {}), _flatten(change.record or {})
    change.attributes = [
        AttributeChange(name=key, before=before.get(key), after=after.get(key), note="state only")
        for key in attribute_changes(before, after)
    ]
    return change


def _action(exists: bool, managed: bool) -> str:
    return "create" if not exists else ("update" if managed else "adopt")


def _utc(value: dt.datetime | str | None) -> str | None:
    if isinstance(value, dt.datetime):
        # isoformat writes four-digit years: strftime writes year 1 as "1", which PostgreSQL reads as 2001
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    return value


def _setting_value(ctx: PairContext, name: str, value: SettingValue | str) -> str:
    return settings_rules.canonical(value, ctx.catalog.settings.get(name))


def _check_setting(ctx: PairContext, address: str, name: str, value: SettingValue) -> bool:
    if not ctx.catalog.settings:
        return True  # a pair not created yet: checked against the server once it runs
    setting = ctx.catalog.settings.get(name)
    if setting is None:
        if "." not in name:
            ctx.errors.append(f"{address}: unknown parameter {name!r} (not in pg_settings of PostgreSQL {ctx.catalog.server_version})")
            return False
        return True
    problem = settings_rules.is_valid(value, setting)
    if problem:
        ctx.errors.append(f"{address}: parameter {name}: {problem}")
        return False
    return True


def _object_settings(ctx: PairContext, address: str, kind: str, name: str, desired: dict[str, SettingValue],
                     live: dict[str, str], previously: list[str], change: Change) -> None:
    """Per-role/per-database parameters: set what is declared, reset what was declared before and is gone."""
    for key in sorted(set(desired) | (set(previously) & set(live))):
        if key in desired:
            if not _check_setting(ctx, address, key, desired[key]):
                continue
            want = settings_rules.as_text(desired[key])
            if key in live and _setting_value(ctx, key, live[key]) == _setting_value(ctx, key, want):
                continue
            change.attributes.append(AttributeChange(name=f"settings.{key}", before=live.get(key), after=want))
            change.statements.append(sqlgen.set_object_setting(kind, name, key, want))
        else:
            change.attributes.append(AttributeChange(name=f"settings.{key}", before=live[key], after=None))
            change.statements.append(sqlgen.set_object_setting(kind, name, key, None))


# ---------------------------------------------------------------- pair

def diff_pair(ctx: PairContext, spec: ExistingPairSpec | CreatedPairSpec | None, address: str, deleting: bool = False) -> Change | None:
    managed = address in ctx.managed
    if deleting or spec is None:
        if not managed:
            return None
        return Change(
            address=address, kind="pair", name=ctx.pair, action="delete", record=None,
            notes=["pgaasctl forgets this pair; its servers keep running with their settings"],
        )
    change = Change(address=address, kind="pair", name=ctx.pair, action="update" if managed else "adopt")
    previously = (ctx.record_of(address) or {}).get("settings", {})
    traits = pair_traits(spec)
    desired = _pair_settings(ctx, spec, traits, address)
    needs_reload = False
    for key in sorted(set(desired) | set(previously)):
        setting = ctx.catalog.settings.get(key)
        if key in desired:
            value = desired[key]
            if setting is None and "." in key and ctx.catalog.settings:
                ctx.errors.append(
                    f"{address}: custom parameter {key} cannot be set with ALTER SYSTEM; set it on a Database or Role"
                )
                continue
            if not _check_setting(ctx, address, key, value):
                continue
            want = settings_rules.as_text(value)
            if setting is not None:
                current = setting.file_value if setting.file_value is not None else setting.setting
                current_canonical = settings_rules.canonical(current, setting) if setting.file_value is not None \
                    else settings_rules.running_canonical(setting)
                if current_canonical == settings_rules.canonical(want, setting):
                    if settings_rules.restart_pending(setting):
                        ctx.warnings.append(_pending_warning(ctx.pair, traits, address, f"{key} = {want}", setting))
                    continue
            restart = setting is not None and settings_rules.needs_restart(setting)
            change.attributes.append(AttributeChange(
                name=key, before=settings_rules.shown(setting) if setting else None, after=want,
                note="restart required" if restart else "reload",
            ))
            change.statements.append(sqlgen.alter_system(key, want))
            needs_reload = True
        elif setting is not None and setting.file_value is not None:
            restart = settings_rules.needs_restart(setting)
            change.attributes.append(AttributeChange(
                name=key, before=setting.file_value, after="(default)", note="restart required" if restart else "reload"
            ))
            change.statements.append(sqlgen.alter_system(key, None))
            needs_reload = True
        elif setting is not None and settings_rules.restart_pending(setting):
            ctx.warnings.append(_pending_warning(ctx.pair, traits, address, f"{key} (reset to its default)", setting))
    if needs_reload:
        change.statements.append(sqlgen.reload_conf())
    if spec.statements and STATEMENTS_EXTENSION not in ctx.catalog.admin_extensions:
        change.attributes.append(AttributeChange(name="statements", before=None, after=STATEMENTS_EXTENSION,
                                                 note="extension in the admin database"))
        change.statements.append(sqlgen.create_extension(None, STATEMENTS_EXTENSION, None, None))
    change.record = pair_record(spec, ctx.node_files, ctx.certificate_roles)
    if not managed:
        change.notes.append("pgaasctl starts managing this pair")
    result = finish_update(change, ctx.record_of(address))
    for attr in result.attributes if result else []:
        if attr.name.startswith("failover."):
            attr.note = "rewrites repmgr.conf, restarts repmgrd"
    return result


def pair_traits(spec: ExistingPairSpec | CreatedPairSpec) -> settings_rules.PairTraits:
    """Who owns what on this pair: pgaasctl created it (local), drives repmgr on it (SSH), how many nodes."""
    created = isinstance(spec, CreatedPairSpec)
    repmgr = created or all(node.ssh is not None for node in spec.nodes)  # type: ignore[union-attr]
    return settings_rules.PairTraits(created=created, repmgr=repmgr, nodes=len(spec.nodes),
                                     synchronous=spec.replication == "synchronous")


def _pair_settings(ctx: PairContext, spec: ExistingPairSpec | CreatedPairSpec, traits: settings_rules.PairTraits,
                   address: str) -> dict[str, SettingValue]:
    """The spec's server settings, less the parameters replication owns (each a plan error with its reason),
    with repmgr kept in shared_preload_libraries and synchronous_standby_names as the pair's replication says."""
    desired = dict(spec.settings)
    for name, reason in settings_rules.owned_parameter_problems(desired, traits).items():
        ctx.errors.append(f"{address}: {reason}; remove it from settings")
        del desired[name]
    if spec.statements:  # added to what the spec gives, or else to what the server has (other libraries stay)
        current = ctx.catalog.settings.get("shared_preload_libraries")
        base = desired.get("shared_preload_libraries", (current.file_value if current.file_value is not None
                                                         else current.setting) if current else "")
        desired["shared_preload_libraries"] = settings_rules.with_library(base, STATEMENTS_EXTENSION)
    if traits.repmgr and "shared_preload_libraries" in desired:
        desired["shared_preload_libraries"] = settings_rules.with_repmgr(desired["shared_preload_libraries"])
    if traits.repmgr and "synchronous_standby_names" in desired:
        ctx.errors.append(f"{address}: synchronous_standby_names follows `replication:` on this pair; remove it from settings")
        del desired["synchronous_standby_names"]
    for name in sorted(settings_rules.PRELOAD_PARAMETERS & set(desired)):
        _check_libraries(ctx, address, name, desired)
    if ctx.sync_standby_names is not None:
        desired["synchronous_standby_names"] = ctx.sync_standby_names
    return desired


def _check_libraries(ctx: PairContext, address: str, name: str, desired: dict[str, SettingValue]) -> None:
    """A library that is not installed locks everyone out (session/local preload: every new connection fails,
    pgaasctl's own included) or stops the server at its next start (shared preload)."""
    if not ctx.catalog.settings:
        return  # a pair not created yet: checked once it runs
    if ctx.catalog.libraries is None:
        ctx.note_once(f"{address}: {ctx.admin} cannot list the server's libraries, so {name} is not checked")
        return
    missing = settings_rules.missing_libraries(desired[name], ctx.catalog.libraries)
    if missing:
        ctx.errors.append(f"{address}: {name}: {', '.join(missing)} is not installed on the server; with it every "
                          "new connection (or the next start) would fail. Install it first, or remove it")
        del desired[name]


def _pending_warning(pair: str, traits: settings_rules.PairTraits, address: str, what: str, setting: Any) -> str:
    """A setting the primary's configuration has but the primary does not run yet, and how to restart."""
    running = settings_rules.running_shown(setting)
    configured = setting.file_value if setting.file_value is not None else running
    if traits.repmgr:
        how = f"run `pgaasctl restart {pair} --pending`"
    elif traits.nodes == 1:
        how = "restart PostgreSQL"
    elif settings_rules.lowered(setting.name.lower(), setting.setting, configured):
        how = "restart PostgreSQL on the primary first, then on the standby (a standby may not run it lower than its primary)"
    else:
        how = "restart PostgreSQL on the standby first, then on the primary"
    return f"{address}: {what} takes effect only after a restart (the primary runs {running}); {how}"


def tls_record(spec: ExistingPairSpec | CreatedPairSpec, certificate_roles: list[str]) -> dict[str, Any] | None:
    """What a pair's nodes were set up with for TLS (None: nothing); a change of it reconfigures them (a reload)."""
    if not isinstance(spec, CreatedPairSpec) or spec.tls.mode == "disable":
        return None
    return {**spec.tls.model_dump(), **({"certificate_roles": sorted(certificate_roles)} if certificate_roles else {})}


def pair_record(spec: ExistingPairSpec | CreatedPairSpec, node_files: int | str = NODE_FILES_VERSION,
                certificate_roles: list[str] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "provider": spec.provider,
        "settings": {k: settings_rules.as_text(v) for k, v in spec.settings.items()},
        "deletion_protection": spec.deletion_protection,
    }
    if spec.statements:  # only when on: records of pairs from before the option stay as they were
        record["statements"] = True
    if isinstance(spec, CreatedPairSpec):
        record["failover"] = spec.failover.model_dump()
        record["node_files"] = node_files
        if spec.clients:  # only when given: records of pairs from before stay as they were
            record["clients"] = [str(n) for n in spec.clients]
        tls = tls_record(spec, certificate_roles or [])
        if tls is not None:  # only when on: records of pairs from before TLS stay as they were
            record["tls"] = tls
    return record


# ---------------------------------------------------------------- roles

def _role_attributes(spec: RoleSpec) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "login": spec.login, "superuser": spec.superuser, "createdb": spec.createdb, "createrole": spec.createrole,
        "replication": spec.replication, "bypassrls": spec.bypassrls, "inherit": spec.inherit,
        "connection_limit": spec.connection_limit, "member_of": sorted(spec.member_of),
    }
    attrs["valid_until"] = _utc(spec.valid_until) or "infinity"  # omitted: no expiry, and drift to one is corrected
    return attrs


def role_record(spec: RoleSpec) -> dict[str, Any]:
    record = spec.model_dump(mode="json", by_alias=True, exclude={"password", "adopt"})
    record["password_managed"] = spec.password is not None
    return record


def diff_role(ctx: PairContext, name: str, spec: RoleSpec) -> Change | None:
    address = f"role.{ctx.pair}.{name}"
    live = ctx.catalog.roles.get(name)
    managed = address in ctx.managed
    change = Change(address=address, kind="role", name=name, action=_action(live is not None, managed))
    desired = _role_attributes(spec)
    password = ctx.passwords.get(name)
    verifier = password.verifier if password is not None else None

    if live is None:
        given = {k: v for k, v in desired.items() if not (k == "valid_until" and v == "infinity")}  # the default
        change.attributes = [AttributeChange(name=k, after=v) for k, v in given.items()
                             if k == "login" or v != RoleSpec.model_fields[k].default and v not in ([], None)]
        if verifier:
            change.attributes.append(AttributeChange(name="password", before=None, after=SENSITIVE, sensitive=True))
        change.statements.append(sqlgen.create_role(name, {k: v for k, v in given.items() if k != "member_of"}, verifier))
        for parent in desired["member_of"]:
            change.statements.append(sqlgen.grant_membership(parent, name, True))
    else:
        current = live.model_dump(include=set(desired))
        current["member_of"] = sorted(r for r in live.member_of)
        current["valid_until"] = live.valid_until or "infinity"
        changed = [k for k in attribute_changes(current, desired)]
        flags = {k: desired[k] for k in changed if k not in ("member_of",)}
        for key in changed:
            change.attributes.append(AttributeChange(name=key, before=current.get(key), after=desired[key]))
        if flags:
            change.statements.append(sqlgen.alter_role(name, flags))
        if "member_of" in changed:
            for parent in sorted(set(desired["member_of"]) - set(current["member_of"])):
                change.statements.append(sqlgen.grant_membership(parent, name, True))
            for parent in sorted(set(current["member_of"]) - set(desired["member_of"])):
                change.statements.append(sqlgen.grant_membership(parent, name, False))
        if password is not None and not ctx.catalog.can_read_passwords:
            ctx.note_once(f"{ctx.admin} cannot read pg_authid, so password drift is not detected (passwords are set on create)")
        elif password is not None and not password.matches:
            change.attributes.append(AttributeChange(
                name="password", before=SENSITIVE if live.verifier else None, after=SENSITIVE, sensitive=True,
                note=_password_note(password, live.verifier),
            ))
            change.statements.append(sqlgen.set_password(name, verifier or ""))
    previously = list((ctx.record_of(address) or {}).get("settings", {}))
    _object_settings(ctx, address, "ROLE", name, spec.settings, live.settings if live else {}, previously, change)
    change.record = role_record(spec)
    if change.action == "adopt":
        change.notes.append("exists on the server; pgaasctl starts managing it")
    return finish_update(change, ctx.record_of(address))


def _password_note(check: PasswordCheck, live_verifier: str | None) -> str:
    if check.md5:
        return "stored as md5; rewritten as SCRAM-SHA-256"
    return "differs from the spec" if live_verifier else "not set"


def delete_role(ctx: PairContext, name: str) -> Change:
    address = f"role.{ctx.pair}.{name}"
    change = Change(address=address, kind="role", name=name, action="delete", record=None)
    live = ctx.catalog.roles.get(name)
    if live is None:
        change.notes.append("already gone from the server; only the state entry is removed")
        return change
    if name == ctx.admin:
        ctx.errors.append(f"{address}: pgaasctl connects as {name!r} and will not drop it")
        return change
    databases = [
        d for d in live.dependent_databases
        if d not in ctx.dropping_databases and d in ctx.catalog.databases and ctx.catalog.databases[d].allow_connections
    ]
    owned = [d for d in live.owns_databases if d not in ctx.dropping_databases]
    where: list[str | None] = list(databases)
    if (owned or live.shared_dependencies) and not databases:
        where = [None]  # in any database, REASSIGN/DROP OWNED also cover databases it owns or has privileges on
    if databases or owned:
        shown = ", ".join(sorted(set(databases) | set(owned)))
        change.notes.append(f"owns objects or holds privileges in {shown}: reassigned to {ctx.admin}, privileges dropped")
    change.statements.extend(sqlgen.drop_role_statements(name, ctx.admin, where))
    return change


# ---------------------------------------------------------------- databases

def database_record(spec: DatabaseSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude={"adopt"})


def diff_database(ctx: PairContext, name: str, spec: DatabaseSpec, contents: DatabaseContents | None) -> Change | None:
    address = f"database.{ctx.pair}.{name}"
    live = ctx.catalog.databases.get(name)
    managed = address in ctx.managed
    record = ctx.record_of(address) or {}
    owner = spec.owner or ctx.admin
    change = Change(address=address, kind="database", name=name, action=_action(live is not None, managed))

    if live is None:
        change.attributes.append(AttributeChange(name="owner", after=owner))
        for key in ("encoding", "locale", "template"):
            if getattr(spec, key) not in (None, "template1"):
                change.attributes.append(AttributeChange(name=key, after=getattr(spec, key)))
        if spec.connection_limit != -1:
            change.attributes.append(AttributeChange(name="connection_limit", after=spec.connection_limit))
        if not spec.allow_connections:
            change.attributes.append(AttributeChange(name="allow_connections", after=False))
        change.statements.append(sqlgen.create_database(
            name, owner, spec.template, spec.encoding, spec.locale, spec.connection_limit, spec.allow_connections
        ))
    else:
        if live.is_template:
            ctx.errors.append(f"{address}: {name!r} is a template database; pgaasctl does not manage templates")
        _create_only(ctx, address, "encoding", spec.encoding, live.encoding)
        if spec.locale is not None and any(_locale_key(v) != _locale_key(spec.locale) for v in (live.collate, live.ctype)):
            ctx.errors.append(
                f"{address}: locale is {live.collate!r} on the server but {spec.locale!r} in the spec; "
                "it is fixed at creation (recreate the database or change the spec)"
            )
        current = {"owner": live.owner, "connection_limit": live.connection_limit, "allow_connections": live.allow_connections}
        desired = {"owner": owner, "connection_limit": spec.connection_limit, "allow_connections": spec.allow_connections}
        changed = attribute_changes(current, desired)
        for key in changed:
            change.attributes.append(AttributeChange(name=key, before=current[key], after=desired[key]))
        if "owner" in changed:
            change.statements.append(sqlgen.database_owner(name, owner))
        if "connection_limit" in changed or "allow_connections" in changed:
            change.statements.append(sqlgen.alter_database(
                name,
                spec.connection_limit if "connection_limit" in changed else None,
                spec.allow_connections if "allow_connections" in changed else None,
            ))
    _object_settings(ctx, address, "DATABASE", name, spec.settings, live.settings if live else {},
                     list(record.get("settings", {})), change)
    _database_contents(ctx, address, name, spec, owner, contents, record, change)
    change.record = database_record(spec)
    if change.action == "adopt":
        change.notes.append("exists on the server; pgaasctl starts managing it")
    return finish_update(change, record)


def _locale_key(locale: str) -> str:
    return locale.lower().replace("-", "")  # C.UTF-8 and C.utf8 name the same locale


def _create_only(ctx: PairContext, address: str, key: str, desired: str | None, live: str) -> None:
    if desired is not None and desired.replace("-", "").upper() != live.replace("-", "").upper():
        ctx.errors.append(
            f"{address}: {key} is {live!r} on the server but {desired!r} in the spec; "
            "it is fixed at creation (recreate the database or change the spec)"
        )


def _database_contents(ctx: PairContext, address: str, name: str, spec: DatabaseSpec, owner: str,
                       contents: DatabaseContents | None, record: dict[str, Any], change: Change) -> None:
    """Schemas first (an extension may go into one), then extensions; drops in the reverse order."""
    live_ext = contents.extensions if contents else {}
    live_schemas = contents.schemas if contents else {}
    if not spec.allow_connections and (spec.extensions or spec.schemas):
        ctx.errors.append(
            f"{address}: allow_connections is false, so pgaasctl cannot manage its extensions and schemas; "
            "allow connections or remove them from the spec"
        )
        return
    for schema in spec.schemas:
        schema_owner = schema.owner or owner
        have_schema = live_schemas.get(schema.name)
        if have_schema is None:
            change.attributes.append(AttributeChange(name=f"schemas.{schema.name}", after=f"owner {schema_owner}"))
            change.statements.append(sqlgen.create_schema(name, schema.name, schema_owner))
            if name not in ctx.catalog.databases:
                # its template may hold the schema already (PostgreSQL 15's hold public, owned by
                # pg_database_owner), and CREATE SCHEMA IF NOT EXISTS then leaves its owner as it was
                change.statements.append(sqlgen.schema_owner(name, schema.name, schema_owner))
        elif have_schema.owner != schema_owner:
            change.attributes.append(AttributeChange(name=f"schemas.{schema.name}.owner", before=have_schema.owner, after=schema_owner))
            change.statements.append(sqlgen.schema_owner(name, schema.name, schema_owner))
    for ext in spec.extensions:
        have = live_ext.get(ext.name)
        if have is None:
            change.attributes.append(AttributeChange(name=f"extensions.{ext.name}", after=ext.version or "installed"))
            change.statements.append(sqlgen.create_extension(name, ext.name, ext.version, ext.schema_))
            continue
        if ext.schema_ and ext.schema_ != have.schema_:
            ctx.errors.append(f"{address}: extension {ext.name} is in schema {have.schema_!r}, the spec says {ext.schema_!r}; its schema is fixed at creation")
        if ext.version and ext.version != have.version:
            change.attributes.append(AttributeChange(name=f"extensions.{ext.name}", before=have.version, after=ext.version))
            change.statements.append(sqlgen.update_extension(name, ext.name, ext.version))
    declared_ext = {e.name for e in spec.extensions}
    for ext_name in sorted({e["name"] for e in record.get("extensions", [])} - declared_ext):
        if ext_name in live_ext:
            change.attributes.append(AttributeChange(name=f"extensions.{ext_name}", before=live_ext[ext_name].version, after=None))
            change.statements.append(sqlgen.drop_extension(name, ext_name))
    declared_schemas = {s.name for s in spec.schemas}
    for schema_name in sorted({s["name"] for s in record.get("schemas", [])} - declared_schemas):
        gone = live_schemas.get(schema_name)
        if gone is None:
            continue
        if gone.objects:
            ctx.errors.append(
                f"{address}: schema {schema_name} was removed from the spec but holds {gone.objects} objects; "
                "pgaasctl drops only empty schemas (move or drop its objects, or keep it in the spec)"
            )
            continue
        change.attributes.append(AttributeChange(name=f"schemas.{schema_name}", before=f"owner {gone.owner}", after=None))
        change.statements.append(sqlgen.drop_schema(name, schema_name))


def delete_database(ctx: PairContext, name: str) -> Change:
    address = f"database.{ctx.pair}.{name}"
    change = Change(address=address, kind="database", name=name, action="delete", record=None)
    live = ctx.catalog.databases.get(name)  # deletion protection is judged by the policy step
    if live is None:
        change.notes.append("already gone from the server; only the state entry is removed")
        return change
    if live.connections:
        change.notes.append(f"{live.connections} open connection(s) will be terminated")
    change.notes.append("all its data will be lost")
    change.statements.append(sqlgen.drop_database(name))
    return change


# ---------------------------------------------------------------- grants

def grant_record(spec: GrantSpec, for_roles: dict[str, str]) -> dict[str, Any]:
    record = spec.model_dump(mode="json", by_alias=True)
    record["default_for_roles"] = for_roles  # schema -> the role whose future objects get default privileges
    return record


def _schema_grants(record: dict[str, Any]) -> dict[str, SchemaGrant]:
    return {k: SchemaGrant.model_validate(v) for k, v in record.get("schemas", {}).items()}


def diff_grant(ctx: PairContext, database: str, role: str, spec: GrantSpec | None, database_owner: str,
               contents: DatabaseContents | None) -> Change | None:
    """A grant to create/update (spec given) or delete (spec None): authoritative over the lists it names."""
    address = f"grant.{ctx.pair}.{database}.{role}"
    managed = address in ctx.managed
    record = ctx.record_of(address) or {}
    live_db = ctx.catalog.databases.get(database)
    role_exists = role in ctx.catalog.roles
    deleting = spec is None
    if deleting:
        change = Change(address=address, kind="grant", name=f"{database}.{role}", action="delete", record=None)
        if live_db is None or not role_exists or database in ctx.dropping_databases:
            change.notes.append("its database or role is gone or going; only the state entry is removed")
            return change
    else:
        exists = managed or _has_any_privilege(role, live_db, contents)
        change = Change(address=address, kind="grant", name=f"{database}.{role}", action=_action(exists, managed))

    emit = change.statements.append

    def compare(label: str, wanted: list[str] | None, was_managed: bool, have: list[str],
                make: Callable[[list[str], bool], Statement], full: list[str] | None = None) -> None:
        """wanted None: not managed now (revoke all if it was); `full` are privileges held on every object."""
        if wanted is None and not was_managed:
            return
        target = set(wanted or [])
        complete = set(full if full is not None else have)
        to_grant = sorted(target - complete)
        to_revoke = sorted(set(have) - target)
        if not to_grant and not to_revoke:
            return
        change.attributes.append(AttributeChange(name=label, before=sorted(have) or None, after=sorted(target) or None))
        if to_grant:
            emit(make(to_grant, True))
        if to_revoke:
            emit(make(to_revoke, False))

    previous_db_privs = record.get("privileges")
    db_have = (live_db.acl.get(role, []) if live_db else [])
    compare("privileges", None if deleting else spec.privileges, previous_db_privs is not None, db_have,
            lambda p, g: sqlgen.database_privileges(database, role, p, g))

    previous = _schema_grants(record)
    previous_for_roles: dict[str, str] = record.get("default_for_roles", {})
    wanted_schemas = {} if deleting else spec.schemas
    for_roles: dict[str, str] = {}
    live_schemas = contents.schemas if contents else {}
    for schema in sorted(set(wanted_schemas) | set(previous)):
        want = wanted_schemas.get(schema)
        was = previous.get(schema)
        live = live_schemas.get(schema)
        if live is None and want is None:
            continue  # schema gone: nothing left to revoke
        prefix = f"schemas.{schema}"
        if live is None or live.owner != role:
            # the schema's owner holds every privilege on it by owning it: nothing to grant, never revoked
            compare(f"{prefix}.privileges", want.privileges if want else None,
                    bool(was and was.privileges is not None), live.acl.get(role, []) if live else [],
                    lambda p, g, s=schema: sqlgen.schema_privileges(database, s, role, p, g))
        for objtype in OBJECT_TYPES:
            objects: ObjectsInSchema | None = getattr(live, objtype) if live else None
            wanted_objects = getattr(want, objtype) if want else None
            any_held, all_held = _held(objects, role)
            if all_held is None and live_db is not None:
                all_held = list(wanted_objects or [])  # no such objects in the schema: vacuously held
            elif all_held is None:
                all_held = []  # a database created by this plan: its template may hold objects, so grant
            compare(f"{prefix}.{objtype}", wanted_objects, bool(was and getattr(was, objtype) is not None), any_held,
                    lambda p, g, s=schema, o=objtype: sqlgen.all_objects_privileges(database, s, o, role, p, g),
                    full=all_held)
        _default_privileges(ctx, database, role, schema, want, was, previous_for_roles.get(schema), database_owner,
                            live, for_roles, compare)
    if not deleting:
        change.record = grant_record(spec, for_roles)
        if change.action == "adopt":
            change.notes.append("privileges exist on the server; pgaasctl starts managing them")
        return finish_update(change, record)
    return change


def _held(objects: ObjectsInSchema | None, role: str) -> tuple[list[str], list[str] | None]:
    """Privileges `role` holds on any object, and on every object (None when there are no objects)."""
    if objects is None or objects.total == 0:
        return [], None
    counts = objects.held.get(role, {})
    return sorted(counts), sorted(p for p, n in counts.items() if n >= objects.total)


def _default_privileges(ctx: PairContext, database: str, role: str, schema: str, want: SchemaGrant | None,
                        was: SchemaGrant | None, was_for_role: str | None, database_owner: str,
                        live: LiveSchema | None, for_roles: dict[str, str], compare: Callable[..., None]) -> None:
    wanted = want.default_privileges if want else None
    for_role = (wanted.for_role or database_owner) if wanted else None
    if for_role:
        for_roles[schema] = for_role
    targets = {r for r in (for_role, was_for_role) if r}
    for target in sorted(targets):
        have_by_type = live.default_acl.get(target, {}) if live else {}
        for objtype in OBJECT_TYPES:
            wanted_privs = getattr(wanted, objtype) if (wanted and target == for_role) else None
            managed_before = bool(was and was.default_privileges is not None and target == was_for_role)
            compare(f"schemas.{schema}.default_privileges.{objtype}" + ("" if target == for_role else f" (for {target})"),
                    wanted_privs if wanted_privs is not None else ([] if wanted and target == for_role else None),
                    managed_before, have_by_type.get(objtype, {}).get(role, []),
                    lambda p, g, t=target, o=objtype: sqlgen.default_privileges(database, schema, t, o, role, p, g))


def _has_any_privilege(role: str, live_db: Any, contents: DatabaseContents | None) -> bool:
    if live_db is None:
        return False
    if live_db.acl.get(role):
        return True
    for schema in (contents.schemas.values() if contents else []):
        if schema.acl.get(role) or any(getattr(schema, t).held.get(role) for t in OBJECT_TYPES):
            return True
    return False


def needs_contents(spec: DatabaseSpec | None, record: dict[str, Any] | None, grants: list[GrantSpec],
                   grant_records: list[dict[str, Any]]) -> bool:
    """Whether the plan must look inside a database (extensions, schemas, schema-level grants)."""
    if spec and (spec.extensions or spec.schemas):
        return True
    if record and (record.get("extensions") or record.get("schemas")):
        return True
    return any(g.schemas for g in grants) or any(r.get("schemas") for r in grant_records)


def role_order(changes: dict[str, Change], specs: dict[str, RoleSpec]) -> list[str]:
    """Role names in an order where every parent role comes before its members. Iterative: a chain of
    thousands of roles must not reach Python's recursion limit. (Cycles are refused when specs are loaded.)"""
    order: list[str] = []
    done: set[str] = set()
    for root in sorted(specs):
        if root in done:
            continue
        on_path: set[str] = {root}
        stack: list[tuple[str, list[str]]] = [(root, sorted(p for p in specs[root].member_of if p in specs))]
        while stack:
            name, parents = stack[-1]
            while parents and parents[-1] in done:
                parents.pop()
            if not parents:
                stack.pop()
                on_path.discard(name)
                done.add(name)
                if name in changes:
                    order.append(name)
                continue
            parent = parents.pop()
            if parent in on_path:
                raise ValueError(" -> ".join([n for n, _ in stack] + [parent]))
            on_path.add(parent)
            stack.append((parent, sorted(p for p in specs[parent].member_of if p in specs)))
    return order
