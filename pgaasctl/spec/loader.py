"""Load spec documents from YAML files; every error names file:line and the field."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pgaasctl.errors import SpecError
from pgaasctl.spec.models import DOCUMENT_MODELS, address_of
from pgaasctl.spec.names import control_character_problem
from pgaasctl.spec.yaml_events import DuplicateKey, build_documents

YAML_SUFFIXES = (".yaml", ".yml")  # compared lower-case: .YAML and .Yml are spec files too
MAX_DEPTH = 64  # nodes from a document down to a value; real specs need about 7
Loc = tuple[str | int, ...]


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: five times faster


class Problem(str):
    """One problem in the specs, as printed (\"file:line: message\"); `file` and `line` order a report."""

    file: str
    line: int

    def __new__(cls, text: str, file: Path | str = "", line: int = 0) -> Problem:
        self = super().__new__(cls, text)
        self.file, self.line = str(file), line
        return self

    @classmethod
    def at(cls, file: Path | str, line: int, message: str) -> Problem:
        return cls(f"{file}:{line}: {message}", file, line)


def sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    """By file, then line; problems of one line keep their order."""
    return sorted(problems, key=lambda p: (p.file, p.line))


@dataclass
class Loaded:
    """What a spec path holds: the documents that validated, every problem, and the addresses of the documents
    that did not validate (so that references to them are not reported a second time)."""

    documents: list[LoadedDoc] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)
    digests: dict[Path, str] = field(default_factory=dict)  # SHA-256 of each file's text, as it was read


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

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem at the line of `loc` (as `where` finds it)."""
        return Problem.at(self.source.file, _line_for(self.lines, loc, self.source.line), message)


def spec_files(path: Path) -> list[Path]:
    """The YAML files under `path` (recursively, skipping hidden files and directories), or `path` itself,
    in a stable order."""
    if not path.exists():
        raise SpecError([f"{path}: no such file or directory"])
    if path.is_file():
        return [path]
    named = sorted(p for p in _visible_files(path) if p.suffix.lower() in YAML_SUFFIXES)
    unreadable = [p for p in named if not p.is_file()]
    if unreadable:  # skipping one would plan its objects' destroy
        raise SpecError([f"{p}: not a regular file (a dangling link, a FIFO...): its documents cannot be read; "
                         "fix or remove it" for p in unreadable])
    return named


def _visible_files(root: Path) -> Iterator[Path]:
    """Files under `root` whose path below it has no hidden part (.git/, .github/workflows/ci.yml, .draft.yaml).
    Symbolic links to directories are followed (a shared folder linked in is part of the specs), each real
    directory once, so a link loop ends."""
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (Path(folder) / name for name in files if not name.startswith("."))


def load_path(path: Path) -> list[LoadedDoc]:
    """Parse and validate every document under `path`. Raises SpecError listing all problems."""
    loaded = load_documents(path)
    if loaded.problems:
        raise SpecError(sorted_problems(loaded.problems))
    return loaded.documents


def load_documents(path: Path) -> Loaded:
    """Every document under `path` that validates, and every problem found on the way; raises only when
    `path` does not exist."""
    loaded = Loaded()
    for file in spec_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            loaded.problems.append(Problem(f"{file}: cannot read: {exc}", file))
            continue
        loaded.digests[file] = hashlib.sha256(text.encode()).hexdigest()
        _parse(text, file, loaded)
    if not path.is_file() and not loaded.documents and not loaded.problems:
        loaded.problems.append(Problem(
            f"no spec documents under {path}: add YAML files (.yaml or .yml) of documents with kind, metadata "
            "and spec (hidden files and directories are skipped)", path,
        ))
    return loaded


def parse_text(text: str, file: Path) -> tuple[list[LoadedDoc], list[Problem]]:
    """Parse one file's text into validated documents plus a list of problems."""
    loaded = _parse(text, file, Loaded())
    return loaded.documents, loaded.problems


def _parse(text: str, file: Path, loaded: Loaded) -> Loaded:
    """Add the documents of one file's text, and its problems, to `loaded`."""
    try:
        built = build_documents(text, _LOADER, MAX_DEPTH)
    except yaml.YAMLError as exc:
        loaded.problems.append(Problem.at(file, _yaml_line(exc), f"malformed YAML: {_yaml_reason(exc)}"))
        return loaded
    docs, problems = loaded.documents, loaded.problems
    for document in built:
        start, lines, data = document.line, document.lines, document.data
        if isinstance(document.error, DuplicateKey):
            problems.append(Problem.at(file, document.error.line, f"duplicate key {document.error.key!r}"))
            continue
        if isinstance(document.error, yaml.YAMLError):
            error = document.error
            problems.append(Problem.at(file, _yaml_line(error), f"malformed YAML: {_yaml_reason(error)}"))
            continue
        if data is None:  # an empty document: a stray "---" or only comments
            continue
        if not isinstance(data, dict):
            problems.append(Problem.at(file, start, "a document must be a mapping with kind, metadata and spec"))
            continue
        kind = data.get("kind")
        model = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            where = _line_for(lines, ("kind",), start)
            known = ", ".join(DOCUMENT_MODELS)
            shown = "missing" if kind is None else f"unknown kind {kind!r}"
            problems.append(Problem.at(file, where, f"kind: {shown}; expected one of {known}"))
            continue
        try:
            doc = model.model_validate(data)
        except ValidationError as exc:
            problems.extend(_describe(exc, file, lines, start, data))
            loaded.rejected.add(_raw_address(kind, data))
            continue
        docs.append(LoadedDoc(doc=doc, source=Source(file, start), lines=lines))
    return loaded


def _raw_address(kind: str, data: dict[str, Any]) -> str:
    """The address a document that did not validate would have had, as far as its metadata says."""
    meta = data.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    if kind == "Pair":
        return f"pair.{meta.get('name')}"
    return f"{kind.lower()}.{meta.get('pair')}.{meta.get('name')}"


def _describe(exc: ValidationError, file: Path, lines: dict[Loc, int], start: int, data: dict[str, Any]) -> list[Problem]:
    label = _label(data)
    out = []
    for err in exc.errors(include_url=False):
        loc = real_path(data, tuple(err["loc"]))
        message = err["msg"]
        if err["type"] == "union_tag_not_found":
            loc = loc + (err["ctx"]["discriminator"].strip("'"),)
            message = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            loc = loc + (err["ctx"]["discriminator"].strip("'"),)
            message = f"expected one of {err['ctx']['expected_tags']}, got {err['ctx']['tag']!r}"
        field_path = ".".join(_shown_key(p) for p in loc) or "(document)"
        if isinstance(err.get("input"), bool) and err["type"] in ("int_type", "float_type"):
            message = f"expected a number, got {str(err['input']).lower()}"
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] in ("literal_error", "enum"):
            message = f"{message}, got {err.get('input')!r}"
        out.append(Problem.at(file, _line_for(lines, loc, start), f"{label}{field_path}: {message}"))
    return out


def _shown_key(part: str | int) -> str:
    text = str(part)
    return repr(text) if control_character_problem(text) else text  # a key with a newline stays on one line


def real_path(data: Any, loc: Loc) -> Loc:
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
