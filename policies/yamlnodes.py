"""YAML as positioned nodes: values with their file positions, so every diagnostic can say line and column."""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Limits on what a file may ask the reader to build. Real policy and config files nest under ten levels and use a
# handful of aliases; the limits are far above that and far below what exhausts the stack or memory.
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000  # nodes that aliases add to the document once expanded ("billion laughs" stops here)

# The plain values a file may hold. Explicit tags (`!!python/name:...`, `!!int abc`, `!custom`) and the YAML 1.1
# extras (merge keys `<<`, the value key `=`) are refused: nothing downstream expects them, and constructing them
# is where the YAML library raises (or worse).
_PLAIN_TAGS = frozenset("tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp",
                                                            "seq", "map"))


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


def position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class RefusedYAML(yaml.MarkedYAMLError):
    """Well-formed YAML that policy and config files do not accept; `problem_mark` is the node's position."""

    def __init__(self, mark, problem: str, hint: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.hint = hint


class NodeError(ValueError):
    """A node whose value could not be constructed."""

    def __init__(self, node: Node, message: str):
        super().__init__(message)
        self.node = node


def clip(text: object, limit: int = 60) -> str:
    """`text` for a message: a value from a file can be megabytes long."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


class _CheckedLoader(yaml.SafeLoader):
    """SafeLoader's composer, refusing at the offending node what construction would choke on.

    Every check happens while composing, so a refused file costs no more than reading it.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> node count with aliases expanded
        self._alias_nodes = 0

    def compose_node(self, parent, index):
        # The composer calls compose_node(mapping, None) for a key, compose_node(mapping, key) for its value.
        is_key = isinstance(parent, MappingNode) and index is None
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._alias(event, is_key)
        if event.tag is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise RefusedYAML(event.start_mark, f"YAML tags are not supported (found '{clip(tag)}')",
                              "remove the tag; quote the value if it should be a string")
        if isinstance(event, CollectionStartEvent) and self._depth >= MAX_DEPTH:
            raise RefusedYAML(event.start_mark, f"nested more than {MAX_DEPTH} levels deep",
                              "flatten the structure")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if is_key and not isinstance(node, ScalarNode):
            raise RefusedYAML(node.start_mark, f"a mapping key must be a plain value, not {node_kind(node)}",
                              "keys are field names")
        if isinstance(node, ScalarNode):
            _check_scalar(node)
            self._sizes[id(node)] = 1
        else:
            children = node.value if isinstance(node, SequenceNode) else [n for pair in node.value for n in pair]
            self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in children)
        return node

    def _alias(self, event: AliasEvent, is_key: bool) -> Node:
        if is_key:
            raise RefusedYAML(event.start_mark, "an alias cannot be a mapping key", "write the key out")
        target = self.anchors.get(event.anchor)
        if target is not None and id(target) not in self._sizes:
            raise RefusedYAML(event.start_mark, f"alias *{clip(event.anchor)} refers to a node that contains it",
                              "recursive structures are not supported")
        node = super().compose_node(None, None)  # raises on an undefined alias
        self._alias_nodes += self._sizes[id(node)]
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise RefusedYAML(event.start_mark, f"aliases expand to more than {MAX_ALIAS_NODES} values",
                              "write the values out, or use fewer aliases")
        return node


def _check_scalar(node: ScalarNode) -> None:
    if node.tag == "tag:yaml.org,2002:merge":
        raise RefusedYAML(node.start_mark, "YAML merge keys ('<<') are not supported",
                          "write the keys out in full; quote '<<' if it is meant as text")
    if node.tag not in _PLAIN_TAGS:
        raise RefusedYAML(node.start_mark, f"unsupported YAML value '{clip(node.value)}'", "quote it to make it a string")
    try:
        _construct(node)
    except Exception as exc:  # noqa: BLE001 - e.g. a date 2024-13-45, an integer of 5,000 digits
        raise RefusedYAML(node.start_mark, f"cannot read value '{clip(node.value)}': {clip(exc, 120)}",
                          "quote it to make it a string") from None


def compose(text: str) -> Node | None:
    """The single document's node tree; raises yaml.YAMLError (with marks) on bad YAML, RefusedYAML (a
    yaml.MarkedYAMLError with a hint) on tags, merge keys, non-scalar keys, deep nesting and alias bombs."""
    return yaml.compose(text, Loader=_CheckedLoader)


def _construct(node: Node) -> object:
    constructor = yaml.constructor.SafeConstructor()
    return constructor.construct_object(node, deep=True)


def construct(node: Node) -> object:
    """The plain Python value of a node (scalars resolved as YAML 1.1 SafeLoader does).

    compose() already refused what does not construct; NodeError remains for trees built some other way.
    """
    try:
        return _construct(node)
    except Exception as exc:  # noqa: BLE001 - the YAML library raises ValueError, KeyError, ConstructorError...
        raise NodeError(node, f"cannot read value: {clip(exc, 120)}") from None


def scalar_char_positions(source: str, node: ScalarNode) -> list[Position]:
    """File position of each character of the scalar's value (plus one past the end).

    Aligns the parsed value with the raw text between the node's marks: raw characters the value does not
    contain (quotes, escapes, block indentation, folded line breaks) are skipped.
    """
    value = node.value
    raw_start = node.start_mark.index
    raw_end = node.end_mark.index
    if node.style in ("|", ">"):
        newline = source.find("\n", raw_start, raw_end)
        raw_start = newline + 1 if newline >= 0 else raw_start
    elif node.style in ("'", '"'):
        raw_start += 1
    line = node.start_mark.line
    column = node.start_mark.column
    # Line/column of raw_start, counted from the node's own mark.
    for ch in source[node.start_mark.index:raw_start]:
        if ch == "\n":
            line, column = line + 1, 0
        else:
            column += 1
    positions: list[Position] = []
    j = raw_start
    for ch in value:
        while j < raw_end and source[j] != ch and not (ch == " " and source[j] == "\n"):
            if source[j] == "\n":
                line, column = line + 1, 0
            else:
                column += 1
            j += 1
        positions.append(Position(line + 1, column + 1))
        if j < raw_end:
            if source[j] == "\n":
                line, column = line + 1, 0
            else:
                column += 1
            j += 1
    positions.append(Position(line + 1, column + 1))
    return positions


def node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = construct(node)
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value), type(value).__name__)
