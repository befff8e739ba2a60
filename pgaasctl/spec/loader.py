"""Load spec documents from YAML files; every error names file:line and the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pgaasctl.errors import SpecError
from pgaasctl.spec.models import DOCUMENT_MODELS, address_of

YAML_SUFFIXES = (".yaml", ".yml")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: five times faster
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Source:
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class LoadedDoc:
    """One validated document, where it came from, and the line of each of its fields."""

    doc: Any
    source: Source
    lines: dict[Loc, int] = field(default_factory=dict, repr=False)

    @property
    def address(self) -> str:
        return address_of(self.doc)

    def where(self, *loc: str | int) -> str:
        """file:line of the deepest known part of `loc`."""
        return f"{self.source.file}:{_line_for(self.lines, loc, self.source.line)}"


def spec_files(path: Path) -> list[Path]:
    """The YAML files under `path` (recursively), or `path` itself, in a stable order."""
    if not path.exists():
        raise SpecError([f"{path}: no such file or directory"])
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())


def load_path(path: Path) -> list[LoadedDoc]:
    """Parse and validate every document under `path`. Raises SpecError listing all problems."""
    docs: list[LoadedDoc] = []
    problems: list[str] = []
    for file in spec_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{file}: cannot read: {exc}")
            continue
        file_docs, file_problems = parse_text(text, file)
        docs.extend(file_docs)
        problems.extend(file_problems)
    if problems:
        raise SpecError(problems)
    return docs


def parse_text(text: str, file: Path) -> tuple[list[LoadedDoc], list[str]]:
    """Parse one file's text into validated documents plus a list of problems."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        return [], [f"{file}:{_yaml_line(exc)}: malformed YAML: {_yaml_reason(exc)}"]
    docs: list[LoadedDoc] = []
    problems: list[str] = []
    constructor = _LOADER("")  # one per file: a loader per document re-reads the whole text
    for node in nodes:
        if node is None:
            continue
        start = node.start_mark.line + 1
        lines: dict[Loc, int] = {}
        try:
            try:
                data = _build(node, (), lines, constructor)
            except _MergeKey:
                data = constructor.construct_document(node)  # YAML merge keys: PyYAML knows their rules
        except _DuplicateKey as dup:
            problems.append(f"{file}:{dup.line}: duplicate key {dup.key!r}")
            continue
        except yaml.YAMLError as exc:
            problems.append(f"{file}:{_yaml_line(exc)}: malformed YAML: {_yaml_reason(exc)}")
            continue
        if data is None:  # an empty document: a stray "---" or only comments
            continue
        if not isinstance(data, dict):
            problems.append(f"{file}:{start}: a document must be a mapping with kind, metadata and spec")
            continue
        kind = data.get("kind")
        model = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            where = _line_for(lines, ("kind",), start)
            known = ", ".join(DOCUMENT_MODELS)
            shown = "missing" if kind is None else f"unknown kind {kind!r}"
            problems.append(f"{file}:{where}: kind: {shown}; expected one of {known}")
            continue
        try:
            doc = model.model_validate(data)
        except ValidationError as exc:
            problems.extend(_describe(exc, file, lines, start, data))
            continue
        docs.append(LoadedDoc(doc=doc, source=Source(file, start), lines=lines))
    return docs, problems


def _describe(exc: ValidationError, file: Path, lines: dict[Loc, int], start: int, data: dict[str, Any]) -> list[str]:
    label = _label(data)
    out = []
    for err in exc.errors(include_url=False):
        loc = _real_path(data, tuple(err["loc"]))
        message = err["msg"]
        if err["type"] == "union_tag_not_found":
            loc = loc + (err["ctx"]["discriminator"].strip("'"),)
            message = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            loc = loc + (err["ctx"]["discriminator"].strip("'"),)
            message = f"expected one of {err['ctx']['expected_tags']}, got {err['ctx']['tag']!r}"
        field_path = ".".join(str(p) for p in loc) or "(document)"
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] in ("literal_error", "enum"):
            message = f"{message}, got {err.get('input')!r}"
        out.append(f"{file}:{_line_for(lines, loc, start)}: {label}{field_path}: {message}")
    return out


def _real_path(data: Any, loc: Loc) -> Loc:
    """Drop the tags pydantic adds for tagged unions (spec.local.nodes -> spec.nodes): they are not in the YAML."""
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict):
            if part in current:
                current = current[part]
            elif not last:
                continue
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        out.append(part)
    return tuple(out)


def _label(data: dict[str, Any]) -> str:
    meta = data.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        return f"{data.get('kind')} {meta['name']!r}: "
    return f"{data.get('kind')}: "


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        self.key, self.line = key, line


class _MergeKey(Exception):
    """A `<<` merge key: left to PyYAML's constructor."""


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int], constructor: Any,
           built: dict[int, Any] | None = None, active: set[int] | None = None) -> Any:
    """The Python value of `node`, recording the line of every key and item on the way.

    One walk instead of PyYAML's generic construct_document, which is most of the cost of loading.
    Aliases share what was built (no exponential expansion), and an alias to itself is an error.
    """
    built = {} if built is None else built
    active = set() if active is None else active
    if id(node) in built:
        return built[id(node)]
    if id(node) in active:
        raise yaml.MarkedYAMLError(problem="an alias refers to itself", problem_mark=node.start_mark)
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        active.add(id(node))
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                raise _MergeKey()
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.MarkedYAMLError(problem="a key must be a plain value, not a list or mapping",
                                           problem_mark=key_node.start_mark)
            key = key_node.value if key_node.tag == _STR_TAG else constructor.construct_object(key_node)
            if key in out:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
            out[key] = _build(value_node, loc + (str(key),), lines, constructor, built, active)
            lines[loc + (str(key),)] = key_node.start_mark.line + 1
        active.discard(id(node))
        built[id(node)] = out
        return out
    if isinstance(node, yaml.SequenceNode):
        active.add(id(node))
        items = [_build(item, loc + (i,), lines, constructor, built, active) for i, item in enumerate(node.value)]
        active.discard(id(node))
        built[id(node)] = items
        return items
    if node.tag == _STR_TAG:
        return node.value
    return constructor.construct_object(node, deep=True)


def _line_for(lines: dict[Loc, int], loc: Loc, default: int) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return default


def _yaml_line(exc: yaml.YAMLError) -> int:
    # Where the broken construct starts (an unclosed { or [) says more than where parsing gave up.
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    return mark.line + 1 if mark is not None else 1


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    problem_mark = getattr(exc, "problem_mark", None)
    if problem and context:
        where = f" at line {problem_mark.line + 1}" if problem_mark is not None else ""
        return f"{context}: {problem}{where}"
    return str(problem or exc).splitlines()[0]
