"""`python -m bench.proxy_hooks` still runs every variant end to end (real mitmproxy AddonManager and ztgate's addon).

Numbers are not checked here: they are measured by the benchmark itself and written to docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_variant_runs_and_reports_each_hook():
    out = subprocess.run([sys.executable, "-m", "bench.proxy_hooks", "--json", "--no-write", "--n", "100", "--rounds", "1"],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert set(result["us_per_request"]) == {"mitmproxy", "mitmproxy+empty addon", "mitmproxy+HookDispatch", "ztgate"}
    for variant, hooks in result["us_per_hook"].items():
        assert set(hooks) == {"requestheaders", "request", "responseheaders", "response"}, variant
