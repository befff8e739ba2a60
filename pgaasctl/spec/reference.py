"""The spec reference page, generated from the pydantic models so the docs never drift from the code."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pgaasctl.spec import models

SECTIONS: list[tuple[str, type[BaseModel], list[type[BaseModel]]]] = [
    ("Pair", models.PairDoc, [models.LocalPairSpec, models.LocalNode, models.LocalWitness, models.FailoverSettings,
                              models.PairTls, models.OpenStackPairSpec, models.GcpPairSpec, models.CloudNode,
                              models.CloudWitness, models.OpenStackOptions, models.GcpOptions, models.ExistingPairSpec,
                              models.ExistingNode, models.SshSettings, models.SecretSource]),
    ("Role", models.RoleDoc, [models.RoleSpec]),
    ("Database", models.DatabaseDoc, [models.DatabaseSpec, models.Extension, models.Schema]),
    ("Grant", models.GrantDoc, [models.GrantSpec, models.SchemaGrant, models.DefaultPrivileges]),
    ("Workspace", models.WorkspaceDoc, [models.WorkspaceSpec, models.MonitoringSettings, models.HealthThresholds,
                                        models.Threshold]),
]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return " \\| ".join(_type_name(a) for a in args if a is not type(None)) + (
            " \\| null" if type(None) in args else ""
        )
    if origin in (list,):
        return f"list of {_type_name(args[0])}"
    if origin in (dict,):
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type):
        return annotation.__name__ if issubclass(annotation, BaseModel) else {
            "str": "string", "int": "integer", "bool": "boolean", "float": "number", "datetime": "timestamp",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            if isinstance(value, models.Threshold):
                return f"warn `{value.warn:g}`, critical `{value.critical:g}`"
            return f"see {type(value).__name__}"
        return f"`{value!r}`" if value not in ({}, []) else "empty"
    return f"`{field.default!r}`" if field.default is not None else "none"


def _table(model: type[BaseModel]) -> list[str]:
    lines = [f"#### {model.__name__}", "", (model.__doc__ or "").strip(), "",
             "| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        shown = field.alias or name
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{shown}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
    return lines + [""]


def reference_markdown() -> str:
    lines = [
        "# Spec reference",
        "",
        "Generated from the pydantic models by `python -m pgaasctl.spec.reference > docs/reference.md`;",
        "a unit test fails when this page and the models disagree. `pgaasctl schema` prints the same as JSON Schema.",
        "",
        "Every document has `kind`, `metadata` and `spec`. Unknown fields are errors.",
        "",
    ]
    for kind, doc, parts in SECTIONS:
        lines += [f"## {kind}", ""]
        meta = doc.model_fields["metadata"].annotation
        lines += _table(meta)  # type: ignore[arg-type]
        for part in parts:
            lines += _table(part)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
