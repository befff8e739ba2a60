"""JSON Schema of spec documents, for editors (yaml-language-server) and the reference page."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from pgaasctl.spec.models import Document


def spec_json_schema() -> dict[str, Any]:
    schema = TypeAdapter(Document).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pgaasctl spec document"
    return schema
