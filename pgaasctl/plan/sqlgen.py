"""SQL for each kind of change. Identifiers always go through sql.Identifier, values through sql.Literal."""

from __future__ import annotations

from psycopg import sql

from pgaasctl.plan.model import Statement
from pgaasctl.plan.settings import LIST_PARAMETERS

I = sql.Identifier  # noqa: E741
L = sql.Literal

ROLE_FLAGS = {
    "login": ("LOGIN", "NOLOGIN"),
    "superuser": ("SUPERUSER", "NOSUPERUSER"),
    "createdb": ("CREATEDB", "NOCREATEDB"),
    "createrole": ("CREATEROLE", "NOCREATEROLE"),
    "replication": ("REPLICATION", "NOREPLICATION"),
    "bypassrls": ("BYPASSRLS", "NOBYPASSRLS"),
    "inherit": ("INHERIT", "NOINHERIT"),
}


def role_options(attrs: dict[str, object]) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for name, (yes, no) in ROLE_FLAGS.items():
        if name in attrs:
            out.append(sql.SQL(yes if attrs[name] else no))
    if "connection_limit" in attrs:
        out.append(sql.SQL("CONNECTION LIMIT {}").format(L(attrs["connection_limit"])))
    if attrs.get("valid_until") is not None:
        out.append(sql.SQL("VALID UNTIL {}").format(L(attrs["valid_until"])))
    return out


def create_role(name: str, attrs: dict[str, object], verifier: str | None) -> Statement:
    options = role_options(attrs)
    query = sql.SQL("CREATE ROLE {} WITH {}").format(I(name), sql.SQL(" ").join(options))
    if verifier is None:
        return Statement(query)
    secret = sql.SQL("{} PASSWORD {}").format(query, L(verifier))
    return Statement(secret, shown=sql.SQL("{} PASSWORD '(sensitive)'").format(query))


def alter_role(name: str, attrs: dict[str, object]) -> Statement:
    return Statement(sql.SQL("ALTER ROLE {} WITH {}").format(I(name), sql.SQL(" ").join(role_options(attrs))))


def set_password(name: str, verifier: str) -> Statement:
    return Statement(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(I(name), L(verifier)),
        shown=sql.SQL("ALTER ROLE {} PASSWORD '(sensitive)'").format(I(name)),
    )


def set_object_setting(kind: str, name: str, setting: str, value: str | None) -> Statement:
    target = sql.SQL("ALTER {} {}").format(sql.SQL(kind), I(name))
    if value is None:
        return Statement(sql.SQL("{} RESET {}").format(target, _setting(setting)))
    return Statement(sql.SQL("{} SET {} = {}").format(target, _setting(setting), _setting_value(setting, value)))


def grant_membership(parent: str, member: str, grant: bool) -> Statement:
    template = "GRANT {} TO {}" if grant else "REVOKE {} FROM {}"
    return Statement(sql.SQL(template).format(I(parent), I(member)))


def drop_role_statements(name: str, admin: str, databases: list[str | None]) -> list[Statement]:
    out: list[Statement] = []
    for database in databases:
        out.append(Statement(sql.SQL("REASSIGN OWNED BY {} TO {}").format(I(name), I(admin)), database=database))
        out.append(Statement(sql.SQL("DROP OWNED BY {}").format(I(name)), database=database))
    out.append(Statement(sql.SQL("DROP ROLE {}").format(I(name))))
    return out


def create_database(name: str, owner: str, template: str, encoding: str | None, locale: str | None,
                    connection_limit: int, allow_connections: bool) -> Statement:
    parts = [sql.SQL("CREATE DATABASE {} WITH OWNER {} TEMPLATE {}").format(I(name), I(owner), I(template))]
    if encoding:
        parts.append(sql.SQL("ENCODING {}").format(L(encoding)))
    if locale:
        parts.append(sql.SQL("LOCALE {}").format(L(locale)))
    parts.append(sql.SQL("CONNECTION LIMIT {} ALLOW_CONNECTIONS {}").format(L(connection_limit), L(allow_connections)))
    return Statement(sql.SQL(" ").join(parts), transactional=False)


def alter_database(name: str, connection_limit: int | None, allow_connections: bool | None) -> Statement:
    parts: list[sql.Composable] = []
    if connection_limit is not None:
        parts.append(sql.SQL("CONNECTION LIMIT {}").format(L(connection_limit)))
    if allow_connections is not None:
        parts.append(sql.SQL("ALLOW_CONNECTIONS {}").format(L(allow_connections)))
    return Statement(sql.SQL("ALTER DATABASE {} WITH {}").format(I(name), sql.SQL(" ").join(parts)))


def database_owner(name: str, owner: str) -> Statement:
    return Statement(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(I(name), I(owner)))


def drop_database(name: str) -> Statement:
    return Statement(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(I(name)), transactional=False)


def create_extension(database: str | None, name: str, version: str | None, schema: str | None) -> Statement:
    query = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(I(name))
    if schema:
        query = sql.SQL("{} SCHEMA {}").format(query, I(schema))
    if version:
        query = sql.SQL("{} VERSION {}").format(query, L(version))
    return Statement(query, database=database)


def update_extension(database: str, name: str, version: str) -> Statement:
    return Statement(sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(I(name), L(version)), database=database)


def drop_extension(database: str, name: str) -> Statement:
    return Statement(sql.SQL("DROP EXTENSION IF EXISTS {}").format(I(name)), database=database)


def create_schema(database: str, name: str, owner: str) -> Statement:
    return Statement(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(I(name), I(owner)), database=database)


def schema_owner(database: str, name: str, owner: str) -> Statement:
    return Statement(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(I(name), I(owner)), database=database)


def drop_schema(database: str, name: str) -> Statement:
    return Statement(sql.SQL("DROP SCHEMA IF EXISTS {}").format(I(name)), database=database)




def _setting_value(name: str, value: str) -> sql.Composable:
    """List parameters get one literal per item, or "a, b" would become one item."""
    if name.lower() in LIST_PARAMETERS:
        items = [item.strip().strip('"') for item in value.split(",") if item.strip()]
        return sql.SQL(", ").join(L(item) for item in items) if items else L("")
    return L(value)


def _setting(name: str) -> sql.Identifier:
    return I(*name.split("."))  # custom parameters are written myapp.key


def _privs(privileges: list[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(p) for p in sorted(privileges))


def database_privileges(database: str, role: str, privileges: list[str], grant: bool) -> Statement:
    template = "GRANT {} ON DATABASE {} TO {}" if grant else "REVOKE {} ON DATABASE {} FROM {}"
    return Statement(sql.SQL(template).format(_privs(privileges), I(database), I(role)))


def schema_privileges(database: str, schema: str, role: str, privileges: list[str], grant: bool) -> Statement:
    template = "GRANT {} ON SCHEMA {} TO {}" if grant else "REVOKE {} ON SCHEMA {} FROM {}"
    return Statement(sql.SQL(template).format(_privs(privileges), I(schema), I(role)), database=database)


_ALL_IN_SCHEMA = {"tables": "TABLES", "sequences": "SEQUENCES", "functions": "ROUTINES"}
_DEFAULT_OBJECTS = {"tables": "TABLES", "sequences": "SEQUENCES", "functions": "ROUTINES"}


def all_objects_privileges(database: str, schema: str, objtype: str, role: str, privileges: list[str],
                           grant: bool) -> Statement:
    template = "GRANT {} ON ALL {} IN SCHEMA {} TO {}" if grant else "REVOKE {} ON ALL {} IN SCHEMA {} FROM {}"
    return Statement(
        sql.SQL(template).format(_privs(privileges), sql.SQL(_ALL_IN_SCHEMA[objtype]), I(schema), I(role)),
        database=database,
    )


def default_privileges(database: str, schema: str, for_role: str, objtype: str, role: str, privileges: list[str],
                       grant: bool) -> Statement:
    action = "GRANT {} ON {} TO {}" if grant else "REVOKE {} ON {} FROM {}"
    template = "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} " + action
    return Statement(
        sql.SQL(template).format(I(for_role), I(schema), _privs(privileges), sql.SQL(_DEFAULT_OBJECTS[objtype]), I(role)),
        database=database,
    )


def alter_system(setting: str, value: str | None) -> Statement:
    if value is None:
        return Statement(sql.SQL("ALTER SYSTEM RESET {}").format(_setting(setting)), transactional=False, every_node=True)
    return Statement(sql.SQL("ALTER SYSTEM SET {} = {}").format(_setting(setting), _setting_value(setting, value)),
                     transactional=False, every_node=True)


def reload_conf() -> Statement:
    return Statement(sql.SQL("SELECT pg_reload_conf()"), transactional=False, every_node=True)
