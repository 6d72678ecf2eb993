"""bench.client_leg runs end to end (real gateway, real Chromium, the delay relay) and reports both listeners: the
one that trusts the hop gives scoring page pings and no TCP RTT, the other the hop's TCP RTT. Its numbers are in
docs/benchmarks.md; nothing here judges them."""

from __future__ import annotations

import asyncio

import pytest

from bench import client_leg

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_both_listeners_report_what_scoring_takes_out():
    result = asyncio.run(client_leg.measure([20.0], seconds=7.0))
    trusted, undeclared = result["rows"]
    assert trusted["mode"] == client_leg.MODES[0] and undeclared["mode"] == client_leg.MODES[1]
    assert trusted["tcp_samples"] == 0 and trusted["app_samples"] >= 3
    assert trusted["client_leg_ms"] == trusted["app_fastest_ms"]
    assert undeclared["tcp_samples"] >= 1
    assert "| 20 ms | hop trusted (page pings) |" in client_leg.render(result)
