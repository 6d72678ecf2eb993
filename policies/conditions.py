"""CEL conditions: type-checked compilation against the declared schema, and what each condition reads.

The CEL engine is cel-expr-python (Google's cel-cpp): it type-checks against declared variables, so unknown
signals, misspelt fields and type mismatches are load errors with a column, and a compiled program evaluates
in about a microsecond.
"""

from __future__ import annotations

import difflib
import operator
import re
from dataclasses import dataclass

from cel_expr_python import cel
from cel_expr_python.ext import ext_math, ext_strings

from .schema import LEAVES, ROOTS, SIGNAL_NAMES


def _cel_type(name: str) -> "cel.Type":
    t = cel.Type
    return {
        "double": t.DOUBLE,
        "int": t.INT,
        "bool": t.BOOL,
        "string": t.STRING,
        "list(string)": t.List(t.STRING),
        "map(string,double)": t.Map(t.STRING, t.DOUBLE),
    }[name]


def new_environment() -> "cel.Env":
    return cel.NewEnv(
        variables={leaf.name: _cel_type(leaf.cel_type) for leaf in LEAVES.values()},
        extensions=[ext_strings.ExtStrings(), ext_math.ExtMath()],
    )


@dataclass(frozen=True, slots=True)
class ConditionError:
    line: int  # 1-based, within the expression
    column: int  # 1-based, within the expression's line
    message: str
    hint: str


@dataclass(frozen=True, slots=True)
class Reference:
    leaf: str  # declared name, e.g. "signals.relay.details"
    key: str | None  # map key read from it, e.g. "added_latency_ms"

    @property
    def text(self) -> str:
        return f"{self.leaf}.{self.key}" if self.key is not None else self.leaf


_OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True, slots=True)
class Comparison:
    """`reference op threshold`, normalised so the reference is on the left."""

    reference: Reference
    op: str  # "<" "<=" ">" ">="
    threshold: float

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    def is_near(self, value: float, tolerance: float = 0.2) -> bool:
        """Failed, but within `tolerance` (relative to the threshold) of holding."""
        if self.holds(value):
            return False
        scale = abs(self.threshold) if self.threshold else 1.0
        return abs(value - self.threshold) <= tolerance * scale

    @property
    def text(self) -> str:
        return f"{self.reference.text} {self.op} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class Condition:
    source: str
    program: "cel.Expression"
    references: tuple[Reference, ...]
    comparisons: tuple[Comparison, ...]
    normalized: str  # token text joined by single spaces: equal conditions compare equal

    @property
    def leaves(self) -> frozenset[str]:
        return frozenset(r.leaf for r in self.references)

    @property
    def signals(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for r in self.references:
            if r.leaf.startswith("signals."):
                seen[r.leaf.split(".")[1]] = None
        return tuple(seen)

    @property
    def reads_request(self) -> bool:
        return any(r.leaf.startswith("request.") for r in self.references)

    @property
    def constant(self) -> bool | None:
        if self.normalized in ("true", "false"):
            return self.normalized == "true"
        return None


# --- compilation -----------------------------------------------------------------------------------------

_ERROR_HEAD = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")
_OVERLOAD = re.compile(r"found no matching overload for '([^']+)' applied to '\(([^)]*)\)'")


def _hint_for(message: str) -> tuple[str, str]:
    """A clearer message and a hint for a checker/parser message."""
    message = message.replace(" (in container '')", "").strip()
    undeclared = _UNDECLARED.search(message)
    if undeclared:
        name = undeclared.group(1)
        parts = name.split(".")
        if parts[0] == "signals" and len(parts) >= 2 and parts[1] not in SIGNAL_NAMES:
            return (f"unknown signal '{parts[1]}'", "known signals: " + ", ".join(SIGNAL_NAMES))
        if parts[0] == "signals" and len(parts) == 2:
            return (f"signals.{parts[1]} is not a value; read one of its fields",
                    f"e.g. signals.{parts[1]}.score, signals.{parts[1]}.sufficient, signals.{parts[1]}.details")
        if parts[0] in ROOTS and len(parts) == 1 and parts[0] != "risk":
            fields = sorted(n for n in LEAVES if n.startswith(parts[0] + "."))
            return (f"'{name}' is not a value; read one of its fields", "e.g. " + ", ".join(fields[:4]))
        close = difflib.get_close_matches(name, list(LEAVES), n=1, cutoff=0.75)
        if parts[0] in ROOTS:
            hint = f"did you mean {close[0]}?" if close else "run `ztgate policy check` docs: policies/README.md lists every field"
            return (f"unknown field '{name}'", hint)
        hint = f"did you mean {close[0]}?" if close else "variables are: " + ", ".join(ROOTS)
        return (f"undeclared reference to '{name}'", hint)
    overload = _OVERLOAD.search(message)
    if overload:
        operator, types = overload.group(1), overload.group(2)
        if {"int", "double"} <= {t.strip() for t in types.split(",")}:
            return (message, "CEL does not mix int and double: write 100.0 rather than 100, or use double(x)")
        return (message, f"operator {operator.strip('_')} is not defined for ({types})")
    if message.startswith("Syntax error"):
        return (message, "the condition must be one CEL expression; quote the YAML string if it contains ': ' or '#'")
    return (message, "")


def compile_condition(env: "cel.Env", source: str) -> tuple[Condition | None, list[ConditionError]]:
    if not source.strip():
        return None, [ConditionError(1, 1, "empty condition", 'write a CEL expression, e.g. "risk >= 0.8"')]
    try:
        program = env.compile(source)
    except RuntimeError as exc:
        errors = []
        for match in _ERROR_HEAD.finditer(str(exc)):
            message, hint = _hint_for(match.group(3))
            errors.append(ConditionError(int(match.group(1)), int(match.group(2)), message, hint))
        if not errors:
            errors.append(ConditionError(1, 1, str(exc), ""))
        return None, errors
    return_type = program.return_type()
    if return_type.name() not in ("bool", "BOOL"):
        return None, [ConditionError(1, 1, f"condition must be a bool, this one is {return_type.name().lower()}",
                                     "compare it, e.g. `signals.relay.score >= 0.9`")]
    tokens = _tokenize(source)
    references = tuple(_references(tokens))
    comparisons = tuple(_comparisons(tokens))
    normalized = " ".join(t.text for t in tokens)
    return Condition(source, program, references, comparisons, normalized), []


# --- a lexical view of the (already type-checked) source, for references and thresholds ----------------

@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident" "number" "string" "op"
    text: str


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<string>[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
      |(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?|0[xX][0-9a-fA-F]+[uU]?)
      |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<op>&&|\|\||==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}])""",
    re.VERBOSE | re.DOTALL,
)


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        if kind and kind != "ws":
            tokens.append(_Token(kind, match.group()))
    return tokens


def _chain_at(tokens: list[_Token], i: int) -> tuple[Reference | None, int]:
    """The reference starting at token i (if it is a declared name), and the index after it."""
    if tokens[i].kind != "ident" or (i > 0 and tokens[i - 1].text == "."):
        return None, i + 1
    parts = [tokens[i].text]
    j = i + 1
    while j + 1 < len(tokens) and tokens[j].text == "." and tokens[j + 1].kind == "ident":
        parts.append(tokens[j + 1].text)
        j += 2
    if parts[0] not in ROOTS:
        return None, j
    for length in range(len(parts), 0, -1):
        name = ".".join(parts[:length])
        if name in LEAVES:
            key = parts[length] if length < len(parts) else None
            end = i + 2 * (length + (1 if key else 0)) - 1
            if key is None and end + 2 < len(tokens) and tokens[end].text == "[" and tokens[end + 1].kind == "string" \
                    and tokens[end + 2].text == "]":
                key = tokens[end + 1].text.strip("'\"")
                end += 3
            return Reference(name, key), end
    return None, j


def _references(tokens: list[_Token]):
    seen: set[Reference] = set()
    i = 0
    while i < len(tokens):
        reference, i = _chain_at(tokens, i)
        if reference and reference not in seen:
            seen.add(reference)
            yield reference


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ARITHMETIC = {"+", "-", "*", "/", "%", ".", "(", "["}


def _number_at(tokens: list[_Token], i: int) -> tuple[float | None, int]:
    sign = 1.0
    if i < len(tokens) and tokens[i].text == "-":
        sign, i = -1.0, i + 1
    if i < len(tokens) and tokens[i].kind == "number":
        text = tokens[i].text.rstrip("uU")
        try:
            value = float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return None, i + 1
        return sign * value, i + 1
    return None, i


def _comparisons(tokens: list[_Token]):
    i = 0
    while i < len(tokens):
        reference, end = _chain_at(tokens, i)
        if reference and LEAVES[reference.leaf].cel_type in ("double", "int", "map(string,double)") \
                and (i == 0 or tokens[i - 1].text not in _ARITHMETIC | {"!"}) \
                and end < len(tokens) and tokens[end].text in _FLIP:
            value, after = _number_at(tokens, end + 1)
            if value is not None and (after >= len(tokens) or tokens[after].text not in _ARITHMETIC):
                if LEAVES[reference.leaf].cel_type != "map(string,double)" or reference.key:
                    yield Comparison(reference, tokens[end].text, value)
        elif tokens[i].kind == "number" and (i == 0 or tokens[i - 1].text not in _ARITHMETIC) \
                and i + 2 < len(tokens) and tokens[i + 1].text in _FLIP:
            value, _ = _number_at(tokens, i)
            reference, after = _chain_at(tokens, i + 2)
            if reference and value is not None and (after >= len(tokens) or tokens[after].text not in _ARITHMETIC):
                if LEAVES[reference.leaf].cel_type in ("double", "int") or reference.key:
                    yield Comparison(reference, _FLIP[tokens[i + 1].text], value)
        i = max(end, i + 1) if reference else i + 1
