"""YAML documents that remember where each value came from, so errors can name file:line:column."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.yamlnodes import RefusedYAML, compose

from .errors import ConfigError, KeyPath

_ENV_REF = re.compile(r"\$\{(ZTGATE_[A-Z0-9_]+)\}")


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class SourceDocument:
    """Plain Python data plus the position of every key path."""

    path: str
    data: Any
    positions: dict[KeyPath, Position] = field(default_factory=dict)

    def where(self, key_path: KeyPath) -> str:
        """file:line:column of the deepest known prefix of `key_path`."""
        for cut in range(len(key_path), -1, -1):
            pos = self.positions.get(tuple(key_path[:cut]))
            if pos is not None:
                return f"{self.path}:{pos.line}:{pos.column}"
        return f"{self.path}:1:1"

    def describe(self, err: ConfigError) -> str:
        where = ".".join(str(p) for p in err.path)
        text = f"{self.where(err.path)}: {where + ': ' if where else ''}{err.message}"
        return text + (f"\n    hint: {err.hint}" if err.hint else "")


class SourceError(Exception):
    """The document itself could not be read (syntax, missing file); message is already file:line:column."""


def _construct(node: yaml.Node, path: KeyPath, positions: dict, file: str, env: dict[str, str]) -> Any:
    positions[path] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise SourceError(f"{file}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: keys must be strings")
            if key in out:
                raise SourceError(
                    f"{file}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: duplicate key {key!r}"
                )
            out[key] = _construct(value_node, path + (key,), positions, file, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), positions, file, env) for i, v in enumerate(node.value)]
    value = _scalar(node)
    if isinstance(value, str) and "${" in value:
        value = _expand(value, node, file, env)
    return value


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _expand(value: str, node: yaml.Node, file: str, env: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in env:
            raise SourceError(
                f"{file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: environment variable {name} is not set"
                f"\n    hint: export {name}=... before starting ztgate, or put the value in the file"
            )
        return env[name]

    expanded = _ENV_REF.sub(sub, value)
    if "${" in expanded:
        raise SourceError(
            f"{file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: only ${{ZTGATE_...}} variables are expanded"
            "\n    hint: name secrets ZTGATE_SOMETHING, e.g. ${ZTGATE_ADMIN_TOKEN}"
        )
    return expanded


def load_text(text: str, file: str = "<config>", env: dict[str, str] | None = None) -> SourceDocument:
    env = dict(os.environ) if env is None else env
    try:
        # The policy files' checked composer: tags, merge keys, deep nesting and alias bombs are refused at their
        # node, before _construct (recursive, expanding every alias) could exhaust the stack, memory or time.
        node = compose(text)
    except RefusedYAML as exc:
        mark = exc.problem_mark
        raise SourceError(f"{file}:{mark.line + 1}:{mark.column + 1}: {exc.problem}\n    hint: {exc.hint}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SourceError(f"{file}:{line}:{col}: invalid YAML: {exc.problem or exc.context}") from None
    positions: dict[KeyPath, Position] = {}
    data = {} if node is None else _construct(node, (), positions, file, env)
    return SourceDocument(path=file, data=data, positions=positions)


def load_file(path: str | Path, env: dict[str, str] | None = None) -> SourceDocument:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
    return load_text(text, str(path), env)
