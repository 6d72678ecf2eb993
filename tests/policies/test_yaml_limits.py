"""Hostile or exotic YAML is refused with a diagnostic at its node: loading never raises anything else, never
builds huge values, never exhausts the stack. The gateway config reader shares the same composer."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

import policies
from gateway.yamlsource import SourceError, load_text

BASE = """\
policies:
  - id: p1
    rules:
      - id: r1
        when: "risk >= 0.9"
        action: terminate
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.yaml").write_text(text)
    return tmp_path


def only_error(tmp_path: Path, text: str) -> policies.Diagnostic:
    """The single error for `text`, checked to come both from check_directory and load_directory."""
    write(tmp_path, text)
    errors = [d for d in policies.check_directory(tmp_path) if d.severity == "error"]
    assert len(errors) == 1, [str(d) for d in errors]
    with pytest.raises(policies.PolicyLoadError) as raised:
        policies.load_directory(tmp_path)
    assert errors[0] in raised.value.diagnostics
    return errors[0]


# text, line, column, message fragment
REFUSED = [
    (BASE.replace("id: p1", "id: !!python/name:os.system p1"), 2, 9, "YAML tags are not supported (found '!!python/name:os.system')"),
    (BASE.replace("id: r1", "id: !mytag r1"), 4, 13, "YAML tags are not supported (found '!mytag')"),
    (BASE.replace("id: r1", "id: !!int abc"), 4, 13, "YAML tags are not supported"),
    (BASE.replace("action: terminate", "action: terminate\n        shadow: !!bool maybe"), 7, 17, "YAML tags are not supported"),
    (BASE.replace("    rules:", "    match: !!map {routes: [a]}\n    rules:"), 3, 12, "YAML tags are not supported"),
    ("base: &b {action: terminate}\n" + BASE.replace("        action: terminate", "        <<: *b"), 7, 9,
     "YAML merge keys ('<<') are not supported"),
    (BASE.replace("    rules:", "    ? {[a]: 1}\n    : x\n    rules:"), 3, 8, "a mapping key must be a plain value, not a list"),
    (BASE.replace("    rules:", "    ? [a, b]\n    : x\n    rules:"), 3, 7, "a mapping key must be a plain value, not a list"),
    ("x: &k id\n" + BASE.replace("  - id: p1", "  - *k : p1"), 3, 5, "an alias cannot be a mapping key"),
    ("policies: &p [*p]\n", 1, 15, "refers to a node that contains it"),
    ("policies: " + "[" * 5000 + "]" * 5000 + "\n", 1, 74, "nested more than 64 levels deep"),
    (BASE.replace('"risk >= 0.9"', "="), 5, 15, "unsupported YAML value '='"),
    (BASE.replace("action: terminate", "action: terminate\n        description: 2024-13-45"), 7, 22,
     "cannot read value '2024-13-45'"),
    (BASE.replace("action: terminate", "action: terminate\n        description: " + "9" * 5000), 7, 22, "cannot read value"),
]


@pytest.mark.parametrize("text,line,column,message", REFUSED, ids=[r[3][:30] + f"-{i}" for i, r in enumerate(REFUSED)])
def test_exotic_yaml_is_a_diagnostic_at_its_node(tmp_path, text, line, column, message):
    d = only_error(tmp_path, text)
    assert message in d.message, str(d)
    assert (d.line, d.column) == (line, column), str(d)
    assert d.hint
    assert len(str(d)) < 400


def test_billion_laughs_as_a_mapping_key_is_refused_quickly_with_a_short_message(tmp_path):
    anchors = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    anchors += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "x:\n" + "".join(f"  {line}\n" for line in anchors) + textwrap.dedent("""\
        policies:
          - id: p1
            ? [*a8, *a8]
            : x
            rules:
              - {id: r1, when: "risk >= 0.9", action: terminate}
        """)
    started = time.monotonic()
    d = only_error(tmp_path, text)
    assert time.monotonic() - started < 5
    assert "aliases expand to more than" in d.message and len(str(d)) < 400


def test_a_few_aliases_still_work(tmp_path):
    write(tmp_path, textwrap.dedent("""\
        policies:
          - id: p1
            rules:
              - {id: r1, when: "risk >= 0.5", action: restrict, params: &strict {read_only: true}}
              - {id: r2, when: "risk >= 0.6", action: restrict, params: *strict}
        """))
    ps = policies.load_directory(tmp_path)
    assert [c.rule.params["read_only"] for c in ps.rules] == [True, True]


def test_a_non_string_key_is_described_not_repr_d(tmp_path):
    d = only_error(tmp_path, BASE.replace("    rules:", "    12345: x\n    rules:"))
    assert d.message == "a policy keys must be strings, got an integer"


def test_long_values_are_clipped_in_messages(tmp_path):
    d = only_error(tmp_path, BASE.replace("action: terminate", "action: " + "x" * 100_000))
    assert "unknown action 'xxx" in d.message and len(str(d)) < 400


@pytest.mark.parametrize("params,line", [
    ("{deny_methods: [POST], deny_methods: [], read_only: true}", 7),
    ("\n          read_only: true\n          read_only: false", 9),
])
def test_duplicate_params_are_refused(tmp_path, params, line):
    text = BASE.replace("action: terminate", f"action: restrict\n        params: {params}")
    d = only_error(tmp_path, text)
    assert d.message.startswith("duplicate key ") and "in 'params'" in d.message, str(d)
    assert d.line == line and d.hint.startswith("first given at line ")


def test_duplicate_lock_user_for_is_refused(tmp_path):
    text = BASE.replace("action: terminate", "action: terminate\n        params:\n          lock_user_for: 1h\n"
                                             "          lock_user_for: 0")
    d = only_error(tmp_path, text)
    assert (d.line, d.column, d.message) == (9, 11, "duplicate key 'lock_user_for' in 'params'")
    assert d.hint == "first given at line 8"


# -- the gateway config reader -------------------------------------------------------------------------------

ROUTES = "routes:\n  - {name: app, host: app.example, upstream: 'http://10.0.0.5:8080'}\n"
BOMB = "foo:\n" + "  a0: &a0 [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 7))


@pytest.mark.parametrize("text,where,message", [
    (ROUTES + "instance: !!python/name:os.system x\n", "ztgate.yaml:3:11:", "YAML tags are not supported"),
    (ROUTES + "shutdown_grace: !!int abc\n", "ztgate.yaml:3:17:", "YAML tags are not supported"),
    ("x: " + "[" * 3000 + "]" * 3000 + "\n", "ztgate.yaml:1:", "nested more than 64 levels deep"),
    (ROUTES + "base: &b {reload_interval: 5}\npolicies:\n  <<: *b\n", "ztgate.yaml:5:3:", "merge keys"),
    (ROUTES + "instance: 2024-13-45\n", "ztgate.yaml:3:11:", "cannot read value"),
    (BOMB, "ztgate.yaml:", "aliases expand to more than"),
])
def test_config_yaml_is_refused_as_a_source_error(text, where, message):
    started = time.monotonic()
    with pytest.raises(SourceError) as raised:
        load_text(text, "ztgate.yaml", env={})
    assert time.monotonic() - started < 5
    assert str(raised.value).startswith(where) and message in str(raised.value), str(raised.value)
    assert "\n    hint: " in str(raised.value)


def test_config_yaml_plain_documents_still_load():
    doc = load_text(ROUTES + "shared: &s {a: 1}\nother: *s\n", "ztgate.yaml", env={})
    assert doc.data["other"] == {"a": 1} and doc.where(("routes", 0, "host")) == "ztgate.yaml:2:23"


def test_a_value_that_fails_to_construct_is_a_diagnostic_even_past_the_composer(monkeypatch):
    # compose() refuses these first; the parser still must not raise if a node tree ever arrives unchecked.
    import yaml

    from policies import parse
    from policies.conditions import new_environment

    monkeypatch.setattr(parse, "compose", lambda text: yaml.compose(text, Loader=yaml.SafeLoader))
    for text, line, column in ((BASE.replace("id: r1", "id: !!int abc"), 4, 13),
                               (BASE.replace("action: terminate", "action: !!bool maybe"), 6, 17),
                               (BASE.replace("    rules:", "    ? {[a]: 1}\n    : x\n    rules:"), 3, 7)):
        parsed = parse.parse_file("a.yaml", text, new_environment())
        assert [(d.line, d.column) for d in parsed.diagnostics] == [(line, column)], parsed.diagnostics
        assert parsed.diagnostics[0].message.startswith("cannot read value: ")
