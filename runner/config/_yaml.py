"""YAML to plain Python values, remembering where each value was written.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two
equal keys.  Config validation needs both: every problem names its
``file:line:column``, and a repeated key is a mistake worth reporting.  So this
module composes the node tree with the safe loader and builds the values
itself, recording the position of every value and every mapping key by path.
Scalars are resolved exactly as ``yaml.safe_load`` would; anchors, aliases and
``<<`` merge keys work as usual.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final, NamedTuple

import yaml

from runner._errors import ConfigError, Problem

Path = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line and column

_MERGE_TAG = "tag:yaml.org,2002:merge"


def format_path(path: Path) -> str:
    """``('roles', 'coder', 'fallbacks', 1)`` as ``roles.coder.fallbacks[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class Positions:
    """Where each value (and each mapping key) of a document was written."""

    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.values: dict[Path, Mark] = {}
        self.keys: dict[Path, Mark] = {}

    def at(self, path: Path, *, key: bool = False) -> Mark | None:
        """The key's (or value's) position, else that of the nearest written ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        while True:
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]


class Document(NamedTuple):
    """A parsed YAML document: its plain data and where each part was written.

    ``problems`` are mistakes that still leave a usable document (a repeated
    key: the first one is kept), reported along with everything found later.
    """

    data: object
    positions: Positions
    problems: list[Problem]


def _mark(node: yaml.Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def parse_yaml(text: str, source: str) -> Document:
    """Parse ``text``; raise :class:`ConfigError` for a syntax error.

    An empty document gives ``Document(None, ...)``; the caller decides what
    an empty config means.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, source, text)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML parse error is marked
        raise ConfigError([Problem("", f"YAML syntax error: {exc}", file=source)]) from None
    builder = _Builder(source)
    data = None if root is None else builder.build(root, ())
    return Document(data, builder.positions, builder.problems)


_REFERENCE: Final = re.compile(r"\$\{[^}]*\}?")


def _syntax_problem(exc: yaml.MarkedYAMLError, source: str, text: str = "") -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or "not valid YAML"
    if exc.context:
        what = f"{what} ({exc.context})"
    hint = "check indentation, quotes and brackets around this place"
    if mark is not None and "flow" in (exc.context or ""):
        # `{api_key: ${KEY}}`: in a flow mapping or list, the `{` of `${` opens
        # another mapping.  Name the reference and how to write it.
        lines = text.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        found = [m for m in _REFERENCE.finditer(line) if m.start() <= mark.column + 1]
        if found:
            ref = found[-1].group(0)
            hint = f'inside {{...}} or [...] quote a variable reference: write "{ref}"'
    return Problem(
        "",
        f"YAML syntax error: {what}",
        hint=hint,
        file=source,
        line=None if mark is None else mark.line + 1,
        column=None if mark is None else mark.column + 1,
    )


class _Builder:
    """Walks a composed node tree into dicts, lists and scalars."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.positions = Positions()
        self.problems: list[Problem] = []
        # The safe loader's constructors resolve one scalar node at a time.
        self._scalars = yaml.SafeLoader("")
        # Nodes being built right now, to stop on a recursive alias.
        self._open: set[int] = set()

    def problem(self, node: yaml.Node, path: Path, message: str, hint: str | None = None) -> None:
        line, column = _mark(node)
        self.problems.append(
            Problem(
                format_path(path), message, hint=hint, file=self.source, line=line, column=column
            )
        )

    def build(self, node: yaml.Node, path: Path) -> object:
        self.positions.values.setdefault(path, _mark(node))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            self.problem(node, path, "an alias refers to itself", "remove the recursive alias")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
        finally:
            self._open.discard(id(node))
        self.problem(node, path, "unsupported YAML node")  # pragma: no cover
        return None  # pragma: no cover

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> object:
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or str(exc)
            self.problem(node, path, f"cannot read this value: {reason}", "write a plain value")
            return None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if key in first_seen:
                self.problem(
                    key_node,
                    child,
                    f"duplicate key '{key}' (first at line {first_seen[key]})",
                    "keep one of them",
                )
                continue
            first_seen[key] = _mark(key_node)[0]
            self.positions.keys[child] = _mark(key_node)
            out[key] = self.build(value_node, child)
        for key_node, value_node in self._merged(node, path):
            key = self._key(key_node, path)
            if key is None or key in out:
                continue  # keys written in the mapping itself win over merged ones
            child = (*path, key)
            self.positions.keys.setdefault(child, _mark(key_node))
            out[key] = self.build(value_node, child)
        return out

    def _merged(self, node: yaml.MappingNode, path: Path) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """The entries ``<<: *anchor`` (or a list of anchors) brings in."""
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    yield from source.value
                else:
                    self.problem(
                        source, path, "'<<' must merge a mapping", "use '<<: *anchor' of a mapping"
                    )

    def _key(self, node: yaml.Node, path: Path) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, path, "a key must be a plain name", "use a plain name as the key")
            return None
        value = self._scalar(node, path)
        # YAML reads `1: x` or `yes: x` as non-string keys; every config key is a name.
        return value if isinstance(value, str) else str(node.value)
