"""A small local page that records what the browser saw: key event times and when the field appeared.

The harness's own yardstick for browser timing, independent of the gateway. It records `event.timeStamp` of every
keydown/keyup (document capture phase) with only a coarse flag for Backspace and Enter, the `performance.now()`
at which the text field was revealed, and input-event times with the field's length. No characters are kept.

Query parameters of `/`: `reveal_ms` (delay before the field appears, and again after each Enter),
`reveal_jitter_ms` (uniform extra delay, so an operator cannot anticipate it).
`serve(app)` runs any Starlette app under uvicorn on a free loopback port for the duration of a `with` block;
`timing_errors(plan, record)` compares what the page saw with the plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from .plan import TypingPlan, intervals, timeline

FIELD_SELECTOR = "#f"

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ztgate harness recorder</title></head>
<body>
<p id="status">wait</p>
<input id="f" autocomplete="off" spellcheck="false" style="display:none">
<script>
(() => {
  const revealMs = %(reveal_ms)d, jitterMs = %(reveal_jitter_ms)d;
  const rec = {keys: [], shown: [], inputs: [], submitted: 0};
  window.__rec = rec;
  const f = document.getElementById('f');
  const reveal = () => {
    f.value = '';
    f.style.display = '';
    f.focus();
    rec.shown.push(performance.now());
  };
  const schedule = () => setTimeout(reveal, revealMs + Math.random() * jitterMs);
  const note = (e, type) => rec.keys.push({
    t: e.timeStamp, type, backspace: e.code === 'Backspace', enter: e.code === 'Enter', shift: e.shiftKey,
  });
  document.addEventListener('keydown', e => {
    note(e, 'down');
    if (e.code === 'Enter') {
      e.preventDefault();
      f.style.display = 'none';
      f.blur();
      rec.submitted += 1;
      schedule();
    }
  }, true);
  document.addEventListener('keyup', e => note(e, 'up'), true);
  f.addEventListener('input', e => rec.inputs.push({t: e.timeStamp, length: f.value.length}));
  if (revealMs <= 0 && jitterMs <= 0) reveal(); else schedule();
})();
</script>
</body></html>
"""


async def _index(request: Request) -> HTMLResponse:
    def int_param(name: str, default: int) -> int:
        raw = request.query_params.get(name, str(default))
        if not raw.isdigit() or int(raw) > 60_000:
            raise ValueError(name)
        return int(raw)

    try:
        values = {"reveal_ms": int_param("reveal_ms", 0), "reveal_jitter_ms": int_param("reveal_jitter_ms", 0)}
    except ValueError as exc:
        return HTMLResponse(f"{exc}: expected an integer 0..60000 (ms)", status_code=400)
    return HTMLResponse(_PAGE % values)


def recorder_app() -> Starlette:
    return Starlette(routes=[Route("/", _index)])


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) in this event loop; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here and handed over: no window for another process to take the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raises the startup failure
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def read_record(page: object) -> dict[str, object]:
    """The page's record (key times, reveal times, input lengths), as a dict."""
    return await page.evaluate("() => JSON.parse(JSON.stringify(window.__rec))")  # type: ignore[attr-defined]


def page_strokes(plan: TypingPlan, record: dict[str, Any]) -> list[tuple[float, float]]:
    """(keydown, keyup) page times per plan stroke: the page's n-th down/up is the timeline's n-th down/up."""
    events = timeline(plan)
    downs = [k["t"] for k in record["keys"] if k["type"] == "down"]
    ups = [k["t"] for k in record["keys"] if k["type"] == "up"]
    planned_downs = [e.stroke for e in events if e.type != "keyUp"]
    planned_ups = [e.stroke for e in events if e.type == "keyUp"]
    if len(downs) != len(planned_downs) or len(ups) != len(planned_ups):
        raise ValueError(
            f"page saw {len(downs)} downs/{len(ups)} ups, plan has {len(planned_downs)}/{len(planned_ups)}"
        )
    down_at = dict(zip(planned_downs, downs, strict=True))
    up_at = dict(zip(planned_ups, ups, strict=True))
    return [(down_at[i], up_at[i]) for i in range(len(plan.strokes))]


def timing_errors(plan: TypingPlan, record: dict[str, Any]) -> dict[str, list[float]]:
    """Page-measured minus planned dwell and flight times (ms), per stroke / per consecutive pair."""
    seen = intervals(page_strokes(plan, record))
    planned = intervals([(s.down_ms, s.up_ms) for s in plan.strokes])
    return {
        name: [a - b for a, b in zip(seen[name], planned[name], strict=True)] for name in ("dwell", "flight")
    }


def page_reactions(record: dict[str, Any], corrections: list[int], *, skip_first_reveal: bool = True) -> dict[str, list[float]]:
    """Reaction times as the page saw them (ms, page clock).

    field: each reveal of the field -> the next keydown (the first reveal is skipped by default: it happens before
    the operator is connected). typo: the input event that made a typo visible -> the correcting Backspace keydown,
    for the Backspace ordinals in `corrections` (counted over all Backspace keydowns the page saw).
    """
    downs = [k["t"] for k in record["keys"] if k["type"] == "down"]
    backspaces = [k["t"] for k in record["keys"] if k["type"] == "down" and k["backspace"]]
    inputs = [i["t"] for i in record["inputs"]]
    field_reactions = []
    for shown in record["shown"][1 if skip_first_reveal else 0 :]:
        after = [t for t in downs if t >= shown]
        if after:
            field_reactions.append(after[0] - shown)
    typo_reactions = []
    for ordinal in corrections:
        if ordinal >= len(backspaces):
            raise ValueError(f"correction Backspace #{ordinal} not seen by the page ({len(backspaces)} seen)")
        pressed = backspaces[ordinal]
        visible = [t for t in inputs if t < pressed]
        if visible:
            typo_reactions.append(pressed - visible[-1])
    return {"field": field_reactions, "typo": typo_reactions}
