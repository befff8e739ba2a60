"""Read the live catalog of a primary in a handful of batched queries, never one per object."""

from __future__ import annotations

import hashlib
import json

import psycopg
from pydantic import BaseModel, Field

from pgaasctl.errors import ConnectionFailed
from pgaasctl.live.connect import NodeAddress, connect
from pgaasctl.parallel import ThreadPool

Privileges = dict[str, list[str]]  # grantee -> sorted privileges


class LiveSetting(BaseModel):
    name: str
    setting: str
    unit: str | None
    vartype: str
    context: str
    enumvals: list[str] | None
    file_value: str | None  # the value in postgresql.auto.conf, if any
    pending_restart: bool


class LiveRole(BaseModel):
    login: bool
    superuser: bool
    createdb: bool
    createrole: bool
    replication: bool
    bypassrls: bool
    inherit: bool
    connection_limit: int
    valid_until: str | None
    member_of: list[str]
    settings: dict[str, str]
    dependent_databases: list[str]  # databases holding objects or privileges of this role
    owns_databases: list[str]
    shared_dependencies: bool = False  # privileges on databases or other shared objects
    verifier: str | None = Field(None, exclude=True, repr=False)  # pg_authid.rolpassword; never dumped


class LiveDatabase(BaseModel):
    owner: str
    encoding: str
    collate: str
    ctype: str
    connection_limit: int
    allow_connections: bool
    is_template: bool
    settings: dict[str, str]
    acl: Privileges
    connections: int = Field(0, exclude=True)


class ObjectsInSchema(BaseModel):
    """Privileges over all objects of one type in a schema: how many objects have each privilege, per grantee."""

    total: int
    held: dict[str, dict[str, int]]  # grantee -> privilege -> objects having it


class LiveSchema(BaseModel):
    owner: str
    acl: Privileges
    objects: int
    tables: ObjectsInSchema
    sequences: ObjectsInSchema
    functions: ObjectsInSchema
    default_acl: dict[str, dict[str, Privileges]]  # for_role -> object type -> grantee -> privileges


class LiveExtension(BaseModel):
    version: str
    schema_: str = Field(alias="schema")


class DatabaseContents(BaseModel):
    extensions: dict[str, LiveExtension]
    schemas: dict[str, LiveSchema]


class LiveCatalog(BaseModel):
    server_version: str
    user: str
    can_read_passwords: bool = True  # False when the admin user may not read pg_authid
    settings: dict[str, LiveSetting]
    roles: dict[str, LiveRole]
    databases: dict[str, LiveDatabase]
    contents: dict[str, DatabaseContents]  # only for databases whose contents matter to the plan
    libraries: list[str] | None = None  # shared libraries installed on the server (None: not read, or not readable)
    admin_extensions: list[str] = []  # extensions in the admin database (the pair's `statements` needs one there)

    def fingerprint(self) -> str:
        """A digest of what the plan was computed from (no secrets, no connection counts)."""
        data = self.model_dump(mode="json", by_alias=True)
        verifiers = {name: hashlib.sha256((r.verifier or "").encode()).hexdigest() for name, r in self.roles.items()}
        for setting in data["settings"].values():
            setting.pop("pending_restart", None)
        blob = json.dumps([data, verifiers], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


# One pass over each catalog, joined per role (correlated subqueries per role cost 15x more at 2,000 roles).
ROLES_SQL = """
WITH members AS (
    SELECT m.member, array_agg(g.rolname ORDER BY g.rolname) AS parents
    FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid GROUP BY m.member
), dependencies AS (
    SELECT sd.refobjid, array_agg(DISTINCT d.datname ORDER BY d.datname) AS databases
    FROM pg_shdepend sd JOIN pg_database d ON d.oid = sd.dbid
    WHERE sd.refclassid = 'pg_authid'::regclass GROUP BY sd.refobjid
), owned AS (
    SELECT datdba, array_agg(datname ORDER BY datname) AS databases FROM pg_database GROUP BY datdba
), shared AS (  -- privileges on or ownership of shared objects (databases, tablespaces): dbid 0
    SELECT DISTINCT refobjid FROM pg_shdepend WHERE dbid = 0 AND refclassid = 'pg_authid'::regclass
)
SELECT a.rolname, a.rolcanlogin, a.rolsuper, a.rolcreatedb, a.rolcreaterole, a.rolreplication,
       a.rolbypassrls, a.rolinherit, a.rolconnlimit,
       CASE WHEN a.rolvaliduntil = 'infinity' THEN 'infinity' ELSE to_char(a.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END,
       a.rolpassword,
       coalesce(mb.parents, '{}'), coalesce(rs.setconfig, '{}'), coalesce(dp.databases, '{}'), coalesce(ow.databases, '{}'),
       sh.refobjid IS NOT NULL
FROM {roles_table} a
LEFT JOIN members mb ON mb.member = a.oid
LEFT JOIN pg_db_role_setting rs ON rs.setrole = a.oid AND rs.setdatabase = 0
LEFT JOIN dependencies dp ON dp.refobjid = a.oid
LEFT JOIN owned ow ON ow.datdba = a.oid
LEFT JOIN shared sh ON sh.refobjid = a.oid
WHERE a.rolname !~ '^pg_'
"""

DATABASES_SQL = """
SELECT d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
       d.datconnlimit, d.datallowconn, d.datistemplate,
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}'),
       coalesce((SELECT json_object_agg(grantee, privs) FROM (
           SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
                  array_agg(a.privilege_type ORDER BY a.privilege_type) AS privs
           FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a GROUP BY 1) x), '{}'),
       coalesce(st.numbackends, 0)
FROM pg_database d LEFT JOIN pg_stat_database st ON st.datid = d.oid
"""

SETTINGS_SQL = """
SELECT s.name, s.setting, s.unit, s.vartype, s.context, s.enumvals, f.setting, s.pending_restart
FROM pg_settings s
LEFT JOIN (SELECT DISTINCT ON (name) name, setting FROM pg_file_settings
           WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY name, seqno DESC) f ON f.name = s.name
"""

AUTO_CONF_ONLY_SQL = """
SELECT DISTINCT ON (name) name, setting FROM pg_file_settings
WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY name, seqno DESC
"""

EXTENSIONS_SQL = "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"

SCHEMAS_SQL = """
SELECT n.nspname, pg_get_userbyid(n.nspowner),
       coalesce((SELECT json_object_agg(grantee, privs) FROM (
           SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
                  array_agg(a.privilege_type ORDER BY a.privilege_type) AS privs
           FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a GROUP BY 1) x), '{}'),
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid)
     + (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = n.oid)
     + (SELECT count(*) FROM pg_type t WHERE t.typnamespace = n.oid AND t.typtype IN ('d', 'e', 'r', 'm')
           AND NOT EXISTS (SELECT 1 FROM pg_depend dp WHERE dp.classid = 'pg_type'::regclass AND dp.objid = t.oid AND dp.deptype = 'e'))
FROM pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
"""

# Objects of each grantable type per schema, with how many of them grant each privilege to each grantee.
OBJECT_PRIVILEGES_SQL = """
WITH objs AS (
    SELECT c.relnamespace AS nsp, CASE WHEN c.relkind = 'S' THEN 'sequences' ELSE 'tables' END AS objtype,
           coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)) AS acl
    FROM pg_class c WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
    UNION ALL
    SELECT p.pronamespace, 'functions', coalesce(p.proacl, acldefault('f', p.proowner)) FROM pg_proc p
), scoped AS (
    SELECT n.nspname, o.objtype, o.acl FROM objs o JOIN pg_namespace n ON n.oid = o.nsp
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
)
SELECT nspname, objtype, NULL, NULL, count(*) FROM scoped GROUP BY 1, 2
UNION ALL
SELECT s.nspname, s.objtype, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, count(*)
FROM scoped s CROSS JOIN LATERAL aclexplode(s.acl) a GROUP BY 1, 2, 3, 4
"""

DEFAULT_ACL_SQL = """
SELECT n.nspname, pg_get_userbyid(d.defaclrole),
       CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions' ELSE d.defaclobjtype::text END,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, array_agg(a.privilege_type ORDER BY a.privilege_type)
FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace CROSS JOIN LATERAL aclexplode(d.defaclacl) a
GROUP BY 1, 2, 3, 4
"""


def empty_catalog(admin: str = "postgres") -> LiveCatalog:
    """What a cluster fresh from initdb holds, for planning a pair before it exists.
    Its settings are unknown (empty): they are checked against the real server once it runs."""
    admin_role = LiveRole(
        login=True, superuser=True, createdb=True, createrole=True, replication=True, bypassrls=True, inherit=True,
        connection_limit=-1, valid_until=None, member_of=[], settings={}, dependent_databases=[], owns_databases=[],
    )
    default_acl = {"PUBLIC": ["CONNECT", "TEMPORARY"], admin: ["CONNECT", "CREATE", "TEMPORARY"]}

    def database(template: bool, connections: bool) -> LiveDatabase:
        return LiveDatabase(owner=admin, encoding="UTF8", collate="C.UTF-8", ctype="C.UTF-8", connection_limit=-1,
                            allow_connections=connections, is_template=template, settings={}, acl=default_acl)

    return LiveCatalog(
        server_version="15", user=admin, settings={}, roles={admin: admin_role}, contents={},
        databases={"postgres": database(False, True), "template0": database(True, False), "template1": database(True, True)},
    )


def _setconfig(items: list[str]) -> dict[str, str]:
    return {key.lower(): value for key, value in (item.split("=", 1) for item in items)}


LIBRARIES_SQL = "SELECT pg_ls_dir(setting) FROM pg_config WHERE name = 'PKGLIBDIR'"


def read_cluster(conn: psycopg.Connection, list_libraries: bool = False) -> LiveCatalog:
    """Roles, databases and server settings: three queries, whatever their number; with `list_libraries`, the
    libraries installed (one more, superusers only), to check the *_preload_libraries a spec sets."""
    version, user, can_read_passwords = conn.execute(
        "SELECT current_setting('server_version'), current_user, has_table_privilege('pg_authid', 'SELECT')"
    ).fetchone()  # type: ignore[misc]
    # pg_roles has the same columns as pg_authid but masks rolpassword: used when pg_authid is out of reach.
    roles_sql = ROLES_SQL.replace("{roles_table}", "pg_authid" if can_read_passwords else "pg_roles")
    if not can_read_passwords:
        roles_sql = roles_sql.replace("a.rolpassword", "NULL::text")
    roles: dict[str, LiveRole] = {}
    for r in conn.execute(roles_sql):
        roles[r[0]] = LiveRole(
            login=r[1], superuser=r[2], createdb=r[3], createrole=r[4], replication=r[5], bypassrls=r[6], inherit=r[7],
            connection_limit=r[8], valid_until=r[9], verifier=r[10], member_of=list(r[11]), settings=_setconfig(r[12]),
            dependent_databases=list(r[13]), owns_databases=list(r[14]), shared_dependencies=r[15],
        )
    databases: dict[str, LiveDatabase] = {}
    for r in conn.execute(DATABASES_SQL):
        databases[r[0]] = LiveDatabase(
            owner=r[1], encoding=r[2], collate=r[3], ctype=r[4], connection_limit=r[5], allow_connections=r[6],
            is_template=r[7], settings=_setconfig(r[8]), acl=r[9], connections=r[10],
        )
    settings: dict[str, LiveSetting] = {}
    for r in conn.execute(SETTINGS_SQL):
        settings[r[0].lower()] = LiveSetting(
            name=r[0], setting=r[1], unit=r[2], vartype=r[3], context=r[4], enumvals=r[5], file_value=r[6],
            pending_restart=r[7],
        )
    for name, value in conn.execute(AUTO_CONF_ONLY_SQL):
        name = name.lower()
        if name not in settings:  # a custom (dotted) parameter set only in postgresql.auto.conf
            settings[name] = LiveSetting(
                name=name, setting=value, unit=None, vartype="string", context="user", enumvals=None, file_value=value,
                pending_restart=False,
            )
    libraries: list[str] | None = None
    if list_libraries:
        try:
            libraries = sorted(r[0] for r in conn.execute(LIBRARIES_SQL))
        except psycopg.Error:
            libraries = None  # not a superuser: the check is skipped, and the plan says so
    admin_extensions = sorted(r[0] for r in conn.execute("SELECT extname FROM pg_extension"))
    return LiveCatalog(
        server_version=version, user=user, can_read_passwords=can_read_passwords, settings=settings, roles=roles,
        databases=databases, contents={}, libraries=libraries, admin_extensions=admin_extensions,
    )


def read_database_contents(conn: psycopg.Connection) -> DatabaseContents:
    """Extensions, schemas and privileges inside the database `conn` is connected to: four queries."""
    extensions = {r[0]: LiveExtension(version=r[1], schema=r[2]) for r in conn.execute(EXTENSIONS_SQL)}
    counts: dict[tuple[str, str], int] = {}
    held: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    for nsp, objtype, grantee, privilege, n in conn.execute(OBJECT_PRIVILEGES_SQL):
        if grantee is None:
            counts[(nsp, objtype)] = n
        else:
            held.setdefault((nsp, objtype), {}).setdefault(grantee, {})[privilege] = n
    defaults: dict[str, dict[str, dict[str, dict[str, list[str]]]]] = {}
    for nsp, for_role, objtype, grantee, privs in conn.execute(DEFAULT_ACL_SQL):
        defaults.setdefault(nsp, {}).setdefault(for_role, {}).setdefault(objtype, {})[grantee] = list(privs)

    def objects(nsp: str, objtype: str) -> ObjectsInSchema:
        return ObjectsInSchema(total=counts.get((nsp, objtype), 0), held=held.get((nsp, objtype), {}))

    schemas = {
        r[0]: LiveSchema(
            owner=r[1], acl=r[2], objects=r[3], tables=objects(r[0], "tables"), sequences=objects(r[0], "sequences"),
            functions=objects(r[0], "functions"), default_acl=defaults.get(r[0], {}),
        )
        for r in conn.execute(SCHEMAS_SQL)
    }
    return DatabaseContents(extensions=extensions, schemas=schemas)


def read_contents(node: NodeAddress, databases: list[str], workers: int = 8) -> dict[str, DatabaseContents | ConnectionFailed]:
    """Contents of several databases, read over parallel sessions. A database that cannot be reached
    (it may not exist yet) gives its ConnectionFailed instead: the caller knows whether that matters."""

    def one(database: str) -> tuple[str, DatabaseContents | ConnectionFailed]:
        try:
            with connect(node, database) as conn:
                return database, read_database_contents(conn)
        except ConnectionFailed as exc:
            return database, exc

    if not databases:
        return {}
    with ThreadPool(max_workers=min(workers, len(databases))) as pool:
        return dict(pool.map(one, databases))
