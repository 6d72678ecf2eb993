"""Relayed operator: operator process -> delay relay process -> agent process (Chromium) -> recorder page.

The page-side reactions (field appears -> first keydown, typo visible -> Backspace) should grow by about the added
round trip. Numbers are printed; the assertion is a loose sanity check (growth above half the added RTT).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from pathlib import Path

import pytest

from bench.scenarios import aalto
from bench.scenarios.operator import AgentLink
from bench.scenarios.testpage import page_reactions, recorder_app, serve

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[3]

if not Path("/usr/bin/chromium").exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line:
        raise AssertionError((await proc.stderr.read()).decode())  # type: ignore[union-attr]
    return proc, json.loads(line)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await proc.communicate()


async def test_reaction_grows_with_added_round_trip() -> None:
    participant = aalto.select_participants(1, seed=8)[0]
    report = {}
    async with serve(recorder_app()) as base:
        agent, hello = await _start("bench.scenarios.agent", "--url", f"{base}/?reveal_ms=400&reveal_jitter_ms=300")
        try:
            # bad input gets a clear error and the connection keeps working
            reader, writer = await asyncio.open_connection("127.0.0.1", hello["port"])
            writer.write(b'not json\n{"op": "observe"}\n{"op": "teleport", "id": 5}\n{"op": "ping", "id": 6}\n')
            replies = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(4)]
            assert [r["op"] for r in replies] == ["error", "error", "error", "pong"] and replies[2]["id"] == 5
            writer.close()
            direct = await AgentLink.connect("127.0.0.1", hello["port"])
            for added_rtt in (0, 110):
                relay, relay_hello = await _start(
                    "bench.scenarios.relay", "--target", f"127.0.0.1:{hello['port']}",
                    "--delay-ms", str(added_rtt / 2), "--jitter-ms", "0",
                )
                try:
                    await direct.request({"op": "reload"})
                    operator = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "bench.scenarios.operator", "--connect",
                        f"127.0.0.1:{relay_hello['port']}", "--participant", participant, "--sentences", "4",
                        "--max-keys", "12", "--typo-probability", "1", "--reaction-ms", "250",
                        "--reaction-sd-ms", "20", "--seed", "3",
                        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    )
                    out, err = await asyncio.wait_for(operator.communicate(), 120)
                    assert operator.returncode == 0, err.decode()
                    outcomes = json.loads(out)["sentences"]
                    record = (await direct.request({"op": "record"}))["record"]
                finally:
                    await _stop(relay)
                corrections = [o["correction_backspace"] for o in outcomes if o["typo"]]
                reactions = page_reactions(record, corrections)
                report[added_rtt] = {
                    "field_ms": [round(r, 1) for r in reactions["field"]],
                    "typo_ms": [round(r, 1) for r in reactions["typo"]],
                    "operator_think_ms": [round(r, 1) for o in outcomes for r in o["reactions_ms"]],
                    "typo_wait_ms": [round(o["typo_wait_ms"], 1) for o in outcomes if o["typo"]],
                }
                assert record["submitted"] == 4 and reactions["field"] and reactions["typo"]
            await direct.close()
        finally:
            await _stop(agent)
    growth = {
        kind: statistics.median(report[110][kind]) - statistics.median(report[0][kind])
        for kind in ("field_ms", "typo_ms")
    }
    print("\n" + json.dumps({"participant": participant, "runs": report, "median_growth_ms_for_110_added": growth}))
    # loose sanity on all reactions pooled (the CPU is shared, single reactions can be late): clearly slower
    pooled = {rtt: statistics.median(report[rtt]["field_ms"] + report[rtt]["typo_ms"]) for rtt in (0, 110)}
    assert pooled[110] - pooled[0] > 40
