"""The spec models on their own: normalisation, validators, addresses, JSON Schema."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import BaseModel, ValidationError

from pgaasctl.spec.models import (
    ALL_PRIVILEGES,
    DatabaseDoc,
    DatabaseSpec,
    DefaultPrivileges,
    GrantDoc,
    GrantSpec,
    PairDoc,
    RoleDoc,
    RoleSpec,
    SchemaGrant,
    SecretSource,
    WorkspaceDoc,
    address_of,
)
from pgaasctl.spec.schema import spec_json_schema


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.value.errors())


# ---------------------------------------------------------------- privileges

def test_all_expands_to_every_privilege_of_the_object_type():
    grant = GrantSpec.model_validate({
        "role": "r", "database": "d", "privileges": ["ALL"],
        "schemas": {"public": {
            "privileges": ["all"], "tables": ["ALL PRIVILEGES"], "sequences": ["All"], "functions": ["all"],
            "default_privileges": {"tables": ["ALL"], "sequences": ["all"], "functions": ["ALL"]},
        }},
    })
    assert grant.privileges == sorted(ALL_PRIVILEGES["database"]) == ["CONNECT", "CREATE", "TEMPORARY"]
    public = grant.schemas["public"]
    assert public.privileges == ["CREATE", "USAGE"]
    assert public.tables == sorted(ALL_PRIVILEGES["tables"])
    assert public.sequences == ["SELECT", "UPDATE", "USAGE"]
    assert public.functions == ["EXECUTE"]
    assert public.default_privileges is not None
    assert public.default_privileges.tables == sorted(ALL_PRIVILEGES["tables"])
    assert public.default_privileges.sequences == ["SELECT", "UPDATE", "USAGE"]
    assert public.default_privileges.functions == ["EXECUTE"]


def test_temp_lower_case_spaces_and_duplicates_are_normalised():
    grant = GrantSpec(role="r", database="d", privileges=["temp", " connect ", "CONNECT", "Temporary"])
    assert grant.privileges == ["CONNECT", "TEMPORARY"]


def test_a_single_string_is_taken_as_a_one_item_list():
    grant = GrantSpec.model_validate({"role": "r", "database": "d", "privileges": "connect",
                                      "schemas": {"s": {"tables": "select", "privileges": "usage"}}})
    assert grant.privileges == ["CONNECT"]
    assert grant.schemas["s"].tables == ["SELECT"]
    assert grant.schemas["s"].privileges == ["USAGE"]


def test_omitted_privileges_stay_none_and_empty_lists_stay_empty():
    # None means "leave alone"; [] means "revoke everything": the two must not be confused.
    grant = GrantSpec.model_validate({"role": "r", "database": "d", "schemas": {"s": {"tables": []}}})
    assert grant.privileges is None
    assert grant.schemas["s"].tables == []
    assert grant.schemas["s"].sequences is None
    assert grant.schemas["s"].privileges is None


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (GrantSpec, "privileges", ["SELECT"]),  # a table privilege on a database
        (SchemaGrant, "privileges", ["SELECT"]),
        (SchemaGrant, "tables", ["EXECUTE"]),
        (SchemaGrant, "sequences", ["DELETE"]),
        (SchemaGrant, "functions", ["SELECT"]),
        (DefaultPrivileges, "tables", ["USAGE"]),
    ],
)
def test_privileges_not_valid_for_the_object_type_are_rejected(model: type[BaseModel], field: str, value: list[str]):
    data = {"role": "r", "database": "d"} if model is GrantSpec else {}
    with pytest.raises(ValidationError) as info:
        model.model_validate({**data, field: value})
    assert field in errors_of(info)


# ---------------------------------------------------------------- databases

def test_extensions_and_schemas_may_be_plain_strings():
    spec = DatabaseSpec.model_validate({
        "extensions": ["pgcrypto", {"name": "hstore", "version": "1.8", "schema": "ext"}],
        "schemas": ["billing", {"name": "audit", "owner": "auditor"}],
    })
    assert [(e.name, e.version, e.schema_) for e in spec.extensions] == [("pgcrypto", None, None), ("hstore", "1.8", "ext")]
    assert [(s.name, s.owner) for s in spec.schemas] == [("billing", None), ("audit", "auditor")]
    # the alias is what a dump (the stored record) uses
    assert spec.model_dump(by_alias=True)["extensions"][1]["schema"] == "ext"


def test_extension_and_schema_names_are_validated_as_identifiers():
    with pytest.raises(ValidationError) as info:
        DatabaseSpec.model_validate({"extensions": ["bad name"], "schemas": ["pg_mine"]})
    text = errors_of(info)
    assert "extensions.0" in text and "schemas.0" in text


@pytest.mark.parametrize("field", ["extensions", "schemas"])
def test_listing_an_extension_or_schema_twice_is_an_error(field: str):
    with pytest.raises(ValidationError) as info:
        DatabaseSpec.model_validate({field: ["a", {"name": "a"}]})
    assert "listed twice: a" in errors_of(info)


def test_database_defaults():
    spec = DatabaseSpec()
    assert (spec.owner, spec.template, spec.connection_limit, spec.allow_connections, spec.deletion_protection) == (
        None, "template1", -1, True, False)


@pytest.mark.parametrize("limit", [-2, -100])
def test_connection_limit_below_minus_one_is_rejected(limit: int):
    with pytest.raises(ValidationError):
        DatabaseSpec(connection_limit=limit)
    with pytest.raises(ValidationError):
        RoleSpec(connection_limit=limit)


# ---------------------------------------------------------------- secrets

@pytest.mark.parametrize("data", [{}, {"env": "A", "file": "pw.txt"}])
def test_secret_source_needs_exactly_one_of_env_or_file(data: dict[str, str]):
    with pytest.raises(ValidationError) as info:
        SecretSource.model_validate(data)
    assert "exactly one of env or file" in errors_of(info)


def test_secret_source_with_one_source_is_fine():
    assert SecretSource(env="PW").env == "PW"
    assert SecretSource(file="pw.txt").file == "pw.txt"


def test_a_password_value_in_the_spec_text_is_rejected():
    with pytest.raises(ValidationError) as info:
        RoleSpec.model_validate({"password": "hunter2"})
    assert "password" in errors_of(info)
    with pytest.raises(ValidationError) as info:
        RoleSpec.model_validate({"password": {"value": "hunter2"}})
    assert "password.value" in errors_of(info)


# ---------------------------------------------------------------- roles

def test_valid_until_needs_a_time_zone():
    with pytest.raises(ValidationError) as info:
        RoleSpec.model_validate({"valid_until": "2027-01-01T00:00:00"})
    assert "needs a time zone" in errors_of(info)


def test_valid_until_with_a_time_zone_or_infinity():
    spec = RoleSpec.model_validate({"valid_until": "2027-01-01T02:00:00+02:00"})
    assert isinstance(spec.valid_until, dt.datetime)
    assert spec.valid_until.astimezone(dt.timezone.utc) == dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)
    assert RoleSpec.model_validate({"valid_until": "infinity"}).valid_until == "infinity"
    assert RoleSpec().valid_until is None


def test_role_defaults_match_postgresql():
    spec = RoleSpec()
    assert (spec.login, spec.superuser, spec.createdb, spec.createrole, spec.replication, spec.bypassrls) == (
        False, False, False, False, False, False)
    assert spec.inherit is True
    assert spec.connection_limit == -1


def test_models_are_strict_and_frozen():
    with pytest.raises(ValidationError):
        RoleSpec.model_validate({"lgoin": True})
    spec = RoleSpec()
    with pytest.raises(ValidationError):
        spec.login = True  # type: ignore[misc]


# ---------------------------------------------------------------- settings names

@pytest.mark.parametrize("name", ["work_mem", "statement_timeout", "myapp.tenant_id", "_x", "auto_explain.log_min_duration"])
def test_valid_setting_names(name: str):
    assert name in RoleSpec.model_validate({"settings": {name: "1"}}).settings
    assert name in DatabaseSpec.model_validate({"settings": {name: 1}}).settings


@pytest.mark.parametrize("name", ["work-mem", "1abc", "a.b.c", "work mem", "x;y", "", "ext.", ".x"])
def test_invalid_setting_names_are_rejected(name: str):
    with pytest.raises(ValidationError) as info:
        RoleSpec.model_validate({"settings": {name: "1"}})
    assert "not a PostgreSQL parameter name" in errors_of(info)
    with pytest.raises(ValidationError):
        DatabaseSpec.model_validate({"settings": {name: "1"}})


def test_setting_values_keep_their_yaml_type():
    spec = DatabaseSpec.model_validate({"settings": {"a": True, "b": 3, "c": "8MB", "d": 0.5}})
    assert spec.settings == {"a": True, "b": 3, "c": "8MB", "d": 0.5}
    assert type(spec.settings["a"]) is bool and type(spec.settings["b"]) is int


def test_pair_node_names_must_be_unique():
    with pytest.raises(ValidationError) as info:
        PairDoc.model_validate({"kind": "Pair", "metadata": {"name": "p"}, "spec": {
            "provider": "existing", "nodes": [{"name": "a", "host": "h1"}, {"name": "a", "host": "h2"}]}})
    assert "node names must be unique" in errors_of(info)


def test_pair_allows_one_or_two_nodes():
    base = {"kind": "Pair", "metadata": {"name": "p"}}
    for nodes in ([], [{"name": f"n{i}", "host": "h"} for i in range(3)]):
        with pytest.raises(ValidationError):
            PairDoc.model_validate({**base, "spec": {"provider": "existing", "nodes": nodes}})


# ---------------------------------------------------------------- addresses

def test_address_of_each_kind():
    pair = PairDoc.model_validate({"kind": "Pair", "metadata": {"name": "orders"},
                                   "spec": {"provider": "existing", "nodes": [{"name": "a", "host": "h"}]}})
    role = RoleDoc.model_validate({"kind": "Role", "metadata": {"name": "app", "pair": "orders"}})
    database = DatabaseDoc.model_validate({"kind": "Database", "metadata": {"name": "shop", "pair": "orders"}})
    grant = GrantDoc.model_validate({"kind": "Grant", "metadata": {"pair": "orders", "name": "label-ignored"},
                                     "spec": {"role": "reporting", "database": "shop"}})
    workspace = WorkspaceDoc.model_validate({"kind": "Workspace"})
    assert address_of(pair) == "pair.orders"
    assert address_of(role) == "role.orders.app"
    assert address_of(database) == "database.orders.shop"
    assert address_of(grant) == "grant.orders.shop.reporting"
    assert address_of(workspace) == "workspace"
    with pytest.raises(TypeError):
        address_of(RoleSpec())


# ---------------------------------------------------------------- JSON Schema

def test_json_schema_has_every_kind_behind_a_discriminator():
    schema = spec_json_schema()
    json.dumps(schema)  # serialisable as is
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"]
    assert schema["discriminator"]["propertyName"] == "kind"
    assert set(schema["discriminator"]["mapping"]) == {"Pair", "Role", "Database", "Grant", "Workspace"}
    refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]}
    assert refs == {"PairDoc", "RoleDoc", "DatabaseDoc", "GrantDoc", "WorkspaceDoc"}
    for ref in refs:
        assert ref in schema["$defs"]
    assert schema["$defs"]["RoleDoc"]["properties"]["kind"]["const"] == "Role"


def test_json_schema_uses_aliases_and_forbids_extra_fields():
    defs = spec_json_schema()["$defs"]
    assert "schema" in defs["Extension"]["properties"] and "schema_" not in defs["Extension"]["properties"]
    assert defs["RoleSpec"]["additionalProperties"] is False


def test_json_schema_carries_field_descriptions():
    defs = spec_json_schema()["$defs"]
    assert defs["RoleSpec"]["properties"]["connection_limit"]["description"].startswith("Concurrent connections")
    assert "environment variable" in defs["SecretSource"]["properties"]["env"]["description"]
    for kind in ("ExistingPairSpec", "LocalPairSpec", "RoleSpec", "DatabaseSpec", "GrantSpec", "WorkspaceSpec"):
        assert defs[kind].get("description"), f"{kind} has no description"


def test_every_spec_field_is_documented_in_the_json_schema():
    # models.py promises "Every field is documented; the docs become the reference page and the JSON Schema".
    # The *Doc envelopes (kind/metadata/spec) are structural and exempt.
    defs = spec_json_schema()["$defs"]
    missing = [
        f"{name}.{prop}"
        for name, definition in defs.items() if not name.endswith("Doc")
        for prop, body in definition.get("properties", {}).items() if not body.get("description")
    ]
    assert missing == []
