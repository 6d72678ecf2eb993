"""YAML as positioned nodes: values with their file positions, so every diagnostic can say line and column."""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


def position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def compose(text: str) -> Node | None:
    """The single document's node tree; raises yaml.YAMLError (with marks) on bad YAML."""
    return yaml.compose(text, Loader=yaml.SafeLoader)


def construct(node: Node) -> object:
    """The plain Python value of a node (scalars resolved as YAML 1.1 SafeLoader does)."""
    constructor = yaml.constructor.SafeConstructor()
    return constructor.construct_object(node, deep=True)


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
