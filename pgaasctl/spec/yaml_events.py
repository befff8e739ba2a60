"""Spec documents built straight from libyaml's parse events, with the line of every key and item.

PyYAML's composer makes a node (with two marks) for every value before anything is built, and that was most of
the cost of loading a large workspace. One pass over the events builds the same values for a third of it.
Aliases share what their anchor built (no exponential expansion), nesting is bounded, and YAML merge keys (`<<`)
follow PyYAML's rules: a key written in the mapping wins over a merged one, and an earlier merged mapping over a
later one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

Loc = tuple[str | int, ...]
STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"
_CACHED_TYPES = (bool, int, float, type(None))  # immutable results of a tag and a text: built once per file
_IN_PROGRESS = object()  # an anchor whose value is still being built


class DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


class FileError(yaml.MarkedYAMLError):
    """Spoils the whole file, as a parse error does: too deep, or an alias to an anchor never defined."""


@dataclass
class BuiltDocument:
    """One document's value (None when empty), its first line, the line of each key and item, and the error
    that spoiled this document alone (a duplicate key, a list as a key, a value its tag cannot hold)."""

    data: Any
    line: int
    lines: dict[Loc, int] = field(default_factory=dict)
    error: Exception | None = None


def build_documents(text: str, loader: type, max_depth: int) -> list[BuiltDocument]:
    """Every document of `text`. Raises yaml.YAMLError for a text that does not parse (FileError among them)."""
    events = list(yaml.parse(text, Loader=loader))
    return _Builder(loader(""), max_depth).documents(iter(events))


def construct_scalar(constructor: Any, node: yaml.ScalarNode) -> Any:
    """PyYAML's value of a tagged scalar; a value its tag cannot hold (2027-02-30) is a YAML error, not a crash."""
    try:
        return constructor.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:
        kind = node.tag.rsplit(":", 1)[-1]
        raise yaml.MarkedYAMLError(problem=f"{node.value!r} is not a valid {kind} ({exc})",
                                   problem_mark=node.start_mark) from None


class _Builder:
    def __init__(self, loader: Any, max_depth: int) -> None:
        self.loader = loader  # its resolver gives plain scalars their tags; its constructor builds tagged ones
        self.max_depth = max_depth
        self.tags: dict[tuple[str, Any], str] = {}
        self.scalars: dict[tuple[str, str], Any] = {}
        self.plain: dict[str, Any] = {}  # an untagged plain scalar's text -> its immutable value
        self.anchors: dict[str, Any] = {}

    def documents(self, events: Iterator[Any]) -> list[BuiltDocument]:
        out = []
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                out.append(self.document(events))
        return out

    def document(self, events: Iterator[Any]) -> BuiltDocument:
        self.anchors = {}  # anchors belong to their document
        first = next(events)
        built = BuiltDocument(data=None, line=first.start_mark.line + 1)
        try:
            built.data = self.value(first, events, (), built.lines, 1)
        except FileError:
            raise
        except (DuplicateKey, yaml.YAMLError) as exc:
            built.error = exc
        for event in events:  # to the document's end (after an error: past whatever it left unread)
            if isinstance(event, yaml.DocumentEndEvent):
                break
        return built

    def value(self, event: Any, events: Iterator[Any], loc: Loc, lines: dict[Loc, int], depth: int) -> Any:
        if depth > self.max_depth:
            raise FileError(problem=f"nested more than {self.max_depth} levels deep", problem_mark=event.start_mark)
        kind = type(event)
        if kind is yaml.AliasEvent:
            return self.alias(event)
        lines.setdefault(loc, event.start_mark.line + 1)
        if kind is yaml.ScalarEvent:
            result = self.scalar(event)
        elif kind is yaml.MappingStartEvent:
            if event.anchor is not None:
                self.anchors[event.anchor] = _IN_PROGRESS
            result = self.mapping(events, loc, lines, depth)
        elif kind is yaml.SequenceStartEvent:
            if event.anchor is not None:
                self.anchors[event.anchor] = _IN_PROGRESS
            result = []
            for item in events:
                if type(item) is yaml.SequenceEndEvent:
                    break
                result.append(self.value(item, events, loc + (len(result),), lines, depth + 1))
        else:  # the parser never yields anything else here
            raise FileError(problem=f"unexpected {kind.__name__}", problem_mark=event.start_mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = result
        return result

    def mapping(self, events: Iterator[Any], loc: Loc, lines: dict[Loc, int], depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merged: list[tuple[dict[Any, Any], int]] = []  # mappings a `<<` key brings in, and that key's line
        for key_event in events:
            kind = type(key_event)
            if kind is yaml.MappingEndEvent:
                break
            if kind is yaml.ScalarEvent:
                if key_event.value == "<<" and self.tag(key_event) == MERGE_TAG:
                    merged += self.merge(next(events), events, loc, lines, depth)
                    continue
                key = self.scalar(key_event)
                if key_event.anchor is not None:
                    self.anchors[key_event.anchor] = key
            elif kind is yaml.AliasEvent and not isinstance(self.alias(key_event), (dict, list)):
                key = self.alias(key_event)
            else:
                raise yaml.MarkedYAMLError(problem="a key must be a plain value, not a list or mapping",
                                           problem_mark=key_event.start_mark)
            if key in out:
                raise DuplicateKey(str(key), key_event.start_mark.line + 1)
            where = loc + (str(key),)
            value_event = next(events)
            if type(value_event) is yaml.ScalarEvent and value_event.anchor is None and depth < self.max_depth:
                out[key] = self.scalar(value_event)  # most values: no call of value() for them
            else:
                out[key] = self.value(value_event, events, where, lines, depth + 1)
            lines[where] = key_event.start_mark.line + 1
        for mapping, line in merged:
            for key, value in mapping.items():
                if key not in out:
                    out[key] = value
                    lines.setdefault(loc + (str(key),), line)
        return out

    def merge(self, event: Any, events: Iterator[Any], loc: Loc, lines: dict[Loc, int],
              depth: int) -> list[tuple[dict[Any, Any], int]]:
        """The mappings of a `<<` value (one mapping, or a list of them), first one first."""
        line = event.start_mark.line + 1
        value = self.value(event, events, loc + ("<<",), lines, depth + 1)
        lines.pop(loc + ("<<",), None)
        mappings = value if isinstance(value, list) else [value]
        if not all(isinstance(m, dict) for m in mappings):
            raise yaml.MarkedYAMLError(problem="a merge key (<<) takes a mapping or a list of mappings",
                                       problem_mark=event.start_mark)
        return [(m, line) for m in mappings]

    def alias(self, event: Any) -> Any:
        if event.anchor not in self.anchors:
            raise FileError(problem=f"found undefined alias {event.anchor!r}", problem_mark=event.start_mark)
        found = self.anchors[event.anchor]
        if found is _IN_PROGRESS:
            raise yaml.MarkedYAMLError(problem="an alias refers to itself", problem_mark=event.start_mark)
        return found

    def tag(self, event: Any) -> str:
        if event.tag is not None and event.tag != "!":
            return str(event.tag)
        key = (event.value, event.implicit)
        found = self.tags.get(key)
        if found is None:
            found = self.tags[key] = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        return found

    def scalar(self, event: Any) -> Any:
        if event.tag is None:
            if not event.implicit[0]:
                return event.value  # quoted or a block: a string
            found = self.plain.get(event.value, _IN_PROGRESS)
            if found is not _IN_PROGRESS:
                return found
        tag = self.tag(event)
        if tag == STR_TAG:
            if event.tag is None:
                self.plain[event.value] = event.value
            return event.value
        key = (tag, event.value)
        if key in self.scalars:
            return self.scalars[key]
        result = construct_scalar(self.loader, yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                                               event.style))
        if isinstance(result, _CACHED_TYPES):
            self.scalars[key] = result
            if event.tag is None:
                self.plain[event.value] = result
        return result
