"""A Gateway object in the test's own process, on the memory store, with its policies loaded as start-up loads them.
Nothing listens: for tests of what the runtime's parts do together (monitor, enforcer, sessions, signer) without
processes and sockets. End-to-end tests run `ztgate run` instead (tests/support/processes.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gateway.config import loads
from gateway.runtime import Gateway

CONFIG = """
instance: t
listeners: [{address: "127.0.0.1:18080"}]
routes:
  - {name: app, upstream: "http://127.0.0.1:9000", audience: app}
store: {url: "memory://"}
"""


def memory_gateway(tmp_path: Path, text: str = CONFIG, *, policies: Path | None = None) -> Gateway:
    """`policies`: a policy directory instead of the shipped defaults."""
    text = textwrap.dedent(text) + (f"policies: {{dir: {policies}}}\n" if policies is not None else "")
    gw = Gateway(loads(text, file="ztgate.yaml", base=tmp_path, env={}))
    gw.policies.load_initial()
    return gw
