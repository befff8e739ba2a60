"""Pure planner helpers: attribute_changes, role_order (pgaasctl/plan/diff.py) and filter_targets (build.py)."""

from __future__ import annotations

import pytest

from pgaasctl.plan.build import filter_targets
from pgaasctl.plan.diff import attribute_changes, database_record, grant_record, role_order, role_record
from pgaasctl.plan.model import Action, Change
from pgaasctl.spec.models import DatabaseSpec, GrantSpec, RoleSpec

# ---------------------------------------------------------------- attribute_changes


def test_no_changes_for_equal_dicts():
    assert attribute_changes({"a": 1, "b": "x"}, {"a": 1, "b": "x"}) == []


def test_list_order_is_ignored():
    assert attribute_changes({"member_of": ["a", "b", "c"]}, {"member_of": ["c", "a", "b"]}) == []


def test_list_contents_still_count():
    assert attribute_changes({"member_of": ["a", "b"]}, {"member_of": ["a", "c"]}) == ["member_of"]
    assert attribute_changes({"member_of": ["a"]}, {"member_of": ["a", "b"]}) == ["member_of"]
    assert attribute_changes({"member_of": ["a", "b"]}, {"member_of": []}) == ["member_of"]


def test_changed_added_and_removed_keys_are_reported_sorted():
    before = {"login": False, "connection_limit": 5, "gone": 1, "same": [1, 2]}
    after = {"login": True, "connection_limit": 5, "new": 2, "same": [2, 1]}
    assert attribute_changes(before, after) == ["gone", "login", "new"]


def test_type_changes_count_even_when_python_says_equal():
    # 1 == True in Python, but a role's connection_limit of 1 is not the boolean true
    assert attribute_changes({"a": 1}, {"a": True}) == ["a"]
    assert attribute_changes({"a": -1}, {"a": None}) == ["a"]


def test_nested_changes_are_reported_by_root_key():
    assert attribute_changes({"settings": {"a": "1", "b": "2"}}, {"settings": {"a": "1", "b": "3"}}) == ["settings"]


# ---------------------------------------------------------------- role_order

def change(address: str, action: Action = "create", record: dict | None = None) -> Change:
    kind, _, rest = address.split(".", 2)
    return Change(address=address, kind=kind, name=rest, action=action, record=record)  # type: ignore[arg-type]


def role_changes(*names: str) -> dict[str, Change]:
    return {n: change(f"role.p.{n}") for n in names}


def test_parents_come_before_their_members():
    specs = {
        "app": RoleSpec(member_of=["readers", "writers"]),
        "writers": RoleSpec(member_of=["readers"]),
        "readers": RoleSpec(member_of=["pg_read_all_data"]),  # not declared: ignored
        "alone": RoleSpec(),
    }
    order = role_order(role_changes(*specs), specs)
    assert sorted(order) == sorted(specs)
    assert order.index("readers") < order.index("writers") < order.index("app")


def test_order_is_deterministic_and_alphabetical_among_independent_roles():
    specs = {n: RoleSpec() for n in ("c", "a", "b")}
    assert role_order(role_changes(*specs), specs) == ["a", "b", "c"]


def test_only_changed_roles_are_listed_but_unchanged_parents_still_order_them():
    specs = {"a": RoleSpec(member_of=["b"]), "b": RoleSpec(member_of=["c"]), "c": RoleSpec(), "z": RoleSpec(member_of=["a"])}
    order = role_order(role_changes("a", "c", "z"), specs)
    assert order == ["c", "a", "z"]


def test_a_membership_cycle_raises_value_error_naming_it():
    specs = {"a": RoleSpec(member_of=["b"]), "b": RoleSpec(member_of=["c"]), "c": RoleSpec(member_of=["a"])}
    with pytest.raises(ValueError) as info:
        role_order(role_changes(*specs), specs)
    assert str(info.value) == "a -> b -> c -> a"


def test_a_cycle_among_unchanged_roles_is_still_found():
    specs = {"a": RoleSpec(member_of=["b"]), "b": RoleSpec(member_of=["a"]), "x": RoleSpec()}
    with pytest.raises(ValueError):
        role_order(role_changes("x"), specs)


def test_no_roles():
    assert role_order({}, {}) == []


# ---------------------------------------------------------------- filter_targets

def role(name: str, action: Action = "create", **spec: object) -> Change:
    return change(f"role.p.{name}", action, role_record(RoleSpec.model_validate(spec)))


def database(name: str, action: Action = "create", **spec: object) -> Change:
    return change(f"database.p.{name}", action, database_record(DatabaseSpec.model_validate(spec)))


def grant(db: str, grantee: str, action: Action = "create", db_owner: str = "postgres", **spec: object) -> Change:
    grant_spec = GrantSpec.model_validate({"role": grantee, "database": db, **spec})
    # as diff_grant records it: schema -> role whose future objects get default privileges
    for_roles = {name: (s.default_privileges.for_role or db_owner)
                 for name, s in grant_spec.schemas.items() if s.default_privileges is not None}
    return change(f"grant.p.{db}.{grantee}", action, grant_record(grant_spec, for_roles))


def addresses(changes: list[Change]) -> list[str]:
    return [c.address for c in changes]


def test_exact_address_target():
    changes = [role("main", "update"), role("other", "update")]
    assert addresses(filter_targets(changes, ["role.p.main"])) == ["role.p.main"]


def test_prefix_target_matches_at_a_dot_boundary_only():
    changes = [
        change("role.main.x", "update"), change("role.main.y", "update"),
        change("role.mainx.y", "update"), change("database.main.x", "update"),
    ]
    assert addresses(filter_targets(changes, ["role.main"])) == ["role.main.x", "role.main.y"]
    assert addresses(filter_targets(changes, ["role.main."])) == ["role.main.x", "role.main.y"]
    assert addresses(filter_targets(changes, ["role"])) == ["role.main.x", "role.main.y", "role.mainx.y"]
    assert addresses(filter_targets(changes, ["database.main.x"])) == ["database.main.x"]
    assert addresses(filter_targets(changes, ["role.ma"])) == []
    assert addresses(filter_targets(changes, ["role.main.x.more"])) == []


def test_several_targets_keep_the_original_order():
    changes = [role("a", "update"), database("e", "update"), role("b", "update"), grant("d", "a", "update")]
    assert addresses(filter_targets(changes, ["grant.p.d.a", "role.p.a"])) == ["role.p.a", "grant.p.d.a"]


def test_creates_of_referenced_roles_are_included():
    changes = [role("parent"), role("child", member_of=["parent"]), role("unrelated")]
    assert addresses(filter_targets(changes, ["role.p.child"])) == ["role.p.parent", "role.p.child"]


def test_deletes_are_never_pulled_in_as_references():
    changes = [role("parent", "delete"), role("child", "update", member_of=["parent"]), role("other", "delete")]
    assert addresses(filter_targets(changes, ["role.p.child"])) == ["role.p.child"]


def test_database_target_pulls_in_the_owner_and_schema_owner_creates():
    changes = [role("owner"), role("schema_owner"), role("bystander"),
               database("db", owner="owner", schemas=[{"name": "s", "owner": "schema_owner"}])]
    assert addresses(filter_targets(changes, ["database.p.db"])) == ["role.p.owner", "role.p.schema_owner", "database.p.db"]


def test_grant_target_pulls_in_its_role_and_database_creates():
    changes = [role("reader"), database("db"), database("other"), grant("db", "reader", privileges=["CONNECT"])]
    assert addresses(filter_targets(changes, ["grant.p.db.reader"])) == ["role.p.reader", "database.p.db", "grant.p.db.reader"]


def test_references_are_followed_transitively_through_member_of():
    # child needs parent, which needs grandparent: creating child and parent alone fails at
    # GRANT grandparent TO parent, because grandparent does not exist yet.
    changes = [role("grandparent"), role("parent", member_of=["grandparent"]), role("child", member_of=["parent"])]
    assert addresses(filter_targets(changes, ["role.p.child"])) == ["role.p.grandparent", "role.p.parent", "role.p.child"]


def test_references_are_followed_transitively_from_a_grant_to_its_database_owner():
    # the grant pulls in the new database; the new database needs its new owner role.
    changes = [role("owner"), role("reader"), database("db", owner="owner"), grant("db", "reader", privileges=["CONNECT"])]
    assert addresses(filter_targets(changes, ["grant.p.db.reader"])) == [
        "role.p.owner", "role.p.reader", "database.p.db", "grant.p.db.reader"]


def test_grant_target_pulls_in_the_create_of_its_default_privileges_for_role():
    changes = [role("writer"), role("reader"), database("db"),
               grant("db", "reader", schemas={"public": {"default_privileges": {"for_role": "writer", "tables": ["SELECT"]}}})]
    assert addresses(filter_targets(changes, ["grant.p.db.reader"])) == [
        "role.p.writer", "role.p.reader", "database.p.db", "grant.p.db.reader"]


def test_no_targets_match_nothing_kept():
    assert filter_targets([role("a")], ["database.p.a"]) == []
    assert filter_targets([], ["role.p.a"]) == []
