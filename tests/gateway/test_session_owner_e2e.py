"""One session, several processes: two real `ztgate run` processes on one Redis score each session once.

A browser's page loads, form posts and sensor WebSocket can land on different processes (a balancer, or the kernel
with `--workers N`). The process that scores the session (its owner, gateway/ownership.py) must hear all of it:
a sensor heard by the other process is not "silent" and its keys are not missing from a form post; typing split over
two processes is one session's evidence; a passed step-up answers the integrity findings; and when the owner dies
the other process takes the session over with its evidence. Every wait is bounded; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import time

import httpx
import pyotp
import pytest
import websockets

from tests.support.processes import (delete_redis_prefix, free_port, gateway_config, login, make_users, run_gateway, run_upstream,
                                     session_sid, wait_until)

pytestmark = pytest.mark.slow

TOKEN_RE = re.compile(r'data-ztgate-token="([^"]+)"')
FORM = {"name": "n", "cost_center": "c", "amount": "1", "description": "d", "approval_code": "abcd"}
HTML = {"Accept": "text/html"}


class Sensor:
    """A synthetic browser sensor on one WebSocket: key batches with human-like timing (key classes only)."""

    def __init__(self, base_url: str, token: str, cookie: str, seed: int) -> None:
        self.url = base_url.replace("http", "ws", 1) + f"/.ztgate/sensor?token={token}"
        self.cookie = cookie
        self.origin = time.time() * 1000.0 - 1500.0
        self.seq = 0
        self.rng = random.Random(seed)
        self.keys_sent = 0
        self.ws = None

    async def __aenter__(self) -> "Sensor":
        self.ws = await websockets.connect(self.url, additional_headers={"Cookie": self.cookie}, open_timeout=10)
        self._reader = asyncio.create_task(self._answer_pings())
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await self.ws.close()

    async def _answer_pings(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg)
            if "ping" in data:
                await self.ws.send(json.dumps({"pong": data["ping"], "t": round(self._now(), 1)}))

    def _now(self) -> float:
        return time.time() * 1000.0 - self.origin

    async def keys(self, n: int) -> None:
        # typed over the last second or so, after anything sent before (a sensor's batches never overlap in time)
        events, t = [], max(self._now() - 1200.0, getattr(self, "_last_t", 0.0))
        for _ in range(n):
            t += self.rng.lognormvariate(5.2, 0.35)
            kc = self.rng.choice([1, 2, 3, 4, 5, 6, 7])
            events += [[1, round(t, 1), kc], [2, round(t + self.rng.uniform(70, 130), 1), kc]]
        events.sort(key=lambda e: e[1])
        self._last_t = events[-1][1] + 1.0
        await self._send(events)
        self.keys_sent += n

    async def pointer(self) -> None:
        t = max(self._now() - 300.0, getattr(self, "_last_t", 0.0))
        self._last_t = t + 101.0
        await self._send([[3, round(t + 20 * i, 1), 100 + i, 200] for i in range(5)])

    async def _send(self, events: list) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({"v": 1, "s": self.seq, "o": self.origin, "e": events}))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_server_url):
    tmp = tmp_path_factory.mktemp("owner")
    prefix = f"ztgate-test-{secrets.token_hex(5)}:"
    users = make_users(tmp / "users.yaml", [{"username": f"o{i}"} for i in range(6)])
    token = secrets.token_urlsafe(24)
    port_a, port_b = free_port(), free_port()
    with run_upstream(tmp, jwks_port=port_a) as upstream:
        def config(instance: str, port: int) -> dict:
            return gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                                  store=redis_server_url, prefix=prefix, admin_token=token, instance=instance)

        with run_gateway(tmp, config("a", port_a), name="gw-a") as a, \
                run_gateway(tmp, config("b", port_b), name="gw-b") as b:
            yield a, b, users, tmp, config, prefix, redis_server_url
    delete_redis_prefix(redis_server_url, prefix)




async def until(predicate, timeout: float, what: str, show=None) -> None:
    """wait_until for a test whose event loop also runs a sensor (it must keep answering pings meanwhile). `show`:
    what to report if it times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(predicate):
                return
        except (httpx.HTTPError, KeyError, TypeError, AttributeError):
            pass
        await asyncio.sleep(0.2)
    seen = f" (last seen: {await asyncio.to_thread(show)})" if show is not None else ""
    raise TimeoutError(f"timed out waiting for {what}{seen}")


def _signed_in(gw, user) -> tuple[httpx.Client, str, str]:
    c = httpx.Client(base_url=gw.url, timeout=10)
    login(c, user)
    c.get("/", headers=HTML)  # the session's first proxied request: the process that serves it scores it
    return c, session_sid(c), f"ztgate_session={c.cookies.get('ztgate_session')}"


def _page_token(c: httpx.Client, path: str = "/") -> str:
    return TOKEN_RE.search(c.get(path, headers=HTML).text).group(1)


def _view(gw, sid: str) -> dict:
    return gw.admin("GET", f"/sessions/{sid}").json()


def _sensor_details(view: dict) -> dict:
    return ((view.get("assessment") or {}).get("signals", {}).get("sensor") or {}).get("details", {})


def _pass_step_up(c: httpx.Client, user, steps_ahead: int) -> None:
    page = c.get("/.ztgate/mfa", params={"next": "/"}, headers=HTML)
    csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
    code = pyotp.TOTP(user.totp_secret).at(time.time() + 30 * steps_ahead)  # not the code the sign-in used
    c.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/", "otp": code}, headers=HTML)


def test_sensor_on_one_process_pages_and_posts_on_the_other_is_heard(cluster):
    """R1: pages and typed form posts through A, the page's sensor WebSocket on B. The process that scores the
    session hears both: the keys reached it before the posts were judged, so a genuine user is not stepped up."""
    a, b, users, *_ = cluster
    c, sid, cookie = _signed_in(a, users["o0"])

    async def scenario() -> None:
        async with Sensor(b.url, _page_token(c), cookie, seed=1) as sensor:
            for i in range(4):
                await sensor.keys(6)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(c.post, "/form", data=FORM, headers=HTML)
            await asyncio.sleep(2.5)  # past the grace period of the last post, then something to judge it by
            await asyncio.to_thread(c.get, "/", headers=HTML)
            await sensor.pointer()
            def heard(gw) -> bool:
                details = _sensor_details(_view(gw, sid))
                return details.get("keys") == sensor.keys_sent and details.get("submissions") == 4 \
                    and details.get("batches") == sensor.seq and details.get("pongs", 0) >= 1

            # the owner shows its live view, the other process the owner's stored one (written once a second)
            await until(lambda: heard(a) and heard(b), timeout=20,
                       what="the scoring process to hear the sensor, the pages and the posts",
                       show=lambda: _sensor_details(_view(a, sid)))

    asyncio.run(scenario())
    for gw in (a, b):
        view = _view(gw, sid)
        details = _sensor_details(view)
        assert view["state"] == "active", view.get("decision")
        assert details["typed_without_keys"] == 0 and details["silent_episodes"] == 0
        assert details["pages_served"] >= 2
    assert _view(a, sid)["assessment"]["scored_on"] == _view(b, sid)["assessment"]["scored_on"]


def test_typing_split_over_two_processes_is_scored_as_one_session(cluster):
    """R2: two tabs of one session, one sensor on A and one on B: one scorer takes all the keys, and every process
    shows its assessment."""
    a, b, users, *_ = cluster
    c, sid, cookie = _signed_in(a, users["o1"])

    async def scenario() -> int:
        async with Sensor(a.url, _page_token(c), cookie, seed=2) as s1, \
                Sensor(b.url, _page_token(c, "/profile"), cookie, seed=3) as s2:
            for _ in range(6):
                await s1.keys(4)
                await s2.keys(8)
                await asyncio.sleep(0.4)
            total = s1.keys_sent + s2.keys_sent
            await until(lambda: _sensor_details(_view(b, sid)).get("keys") == total, timeout=20,
                       what="every key of both tabs to reach the one scorer")
            return total

    total = asyncio.run(scenario())
    wait_until(lambda: _view(a, sid)["assessment"]["evidence"] == _view(b, sid)["assessment"]["evidence"],
               timeout=10, what="both processes to show the same assessment")
    views = [_view(gw, sid)["assessment"] for gw in (a, b)]
    assert views[0]["scored_on"] == views[1]["scored_on"]
    # one scorer: more evidence than either tab's share (12 x 4 and 12 x 8 keys); split, each had its own share
    assert views[0]["evidence"]["keystrokes"] > 6 * 8
    assert _sensor_details({"assessment": views[0]})["keys"] == total


def test_a_passed_step_up_answers_the_integrity_findings(cluster):
    """Typed posts without keys (A) step the session up; the user passes it; the sensor then reports normally (B):
    the findings the step-up answered must not step the session up again."""
    a, b, users, *_ = cluster
    c, sid, cookie = _signed_in(a, users["o2"])

    async def scenario() -> None:
        token = _page_token(c)
        for _ in range(2):  # text submitted without the sensor reporting a key (e.g. filled in by a script)
            await asyncio.to_thread(c.post, "/form", data=FORM, headers=HTML)
        await asyncio.sleep(2.5)
        async with Sensor(b.url, token, cookie, seed=4) as sensor:
            await sensor.pointer()  # judged now: typed without keys, twice
            await until(lambda: _view(a, sid)["state"] == "step_up_required", timeout=20,
                       what="the integrity step-up")
            await asyncio.to_thread(_pass_step_up, c, users["o2"], 1)
            await until(lambda: _view(a, sid)["state"] == "active", timeout=10, what="the step-up to be passed")
            for _ in range(4):
                await sensor.keys(5)
                await asyncio.to_thread(c.get, "/", headers=HTML)
                await asyncio.sleep(0.5)
            await sensor.pointer()
            await until(lambda: _sensor_details(_view(a, sid)).get("keys") == sensor.keys_sent, timeout=20,
                       what="the keys typed after the step-up to be scored")

    asyncio.run(scenario())
    view = _view(a, sid)
    assert view["state"] == "active", view.get("decision")
    assert view["step_up"]["count"] == 1
    assert _sensor_details(view)["typed_without_keys"] == 0


def test_owner_death_the_other_process_takes_the_session_over_with_its_evidence(cluster):
    """The process scoring a session is killed outright: the other one takes the lease once it lapses, restores
    the scorer from the state the owner stored, and keeps scoring (no false "silent" right after)."""
    import redis

    a, b, users, tmp, config, prefix, url = cluster
    port_c = free_port()
    with run_gateway(tmp, config("c", port_c), name="gw-c") as gc:
        c, sid, cookie = _signed_in(gc, users["o3"])  # C scores the session
        r = redis.Redis.from_url(url)
        try:
            owner_c = r.get(f"{prefix}owner:{sid}").decode()
            assert owner_c.startswith("c/")

            async def before() -> int:
                async with Sensor(b.url, _page_token(c), cookie, seed=5) as sensor:
                    for _ in range(5):
                        await sensor.keys(8)
                        await asyncio.sleep(0.3)
                    await until(lambda: _sensor_details(_view(b, sid)).get("keys") == sensor.keys_sent, timeout=20,
                               what="C to score the keys typed on B")
                    # the owner's heartbeat stores the scorer's state once it changed: from here on, all of it
                    r.delete(f"{prefix}scorer:{sid}")
                    await sensor.pointer()
                    await until(lambda: r.exists(f"{prefix}scorer:{sid}"), timeout=20, what="the stored state")
                    return int(_view(b, sid)["assessment"]["evidence"]["keystrokes"])

            evidence_before = asyncio.run(before())
            assert evidence_before > 0
            gc.proc.popen.kill()  # no release: the lease has to lapse
            gc.proc.popen.wait(10)
        except BaseException:
            r.close()
            raise

        cb = httpx.Client(base_url=b.url, timeout=10, cookies=c.cookies)

        async def after() -> None:
            async with Sensor(b.url, _page_token(cb), cookie, seed=6) as sensor:
                def taken_over() -> bool:
                    return (r.get(f"{prefix}owner:{sid}") or b"").decode().startswith("b/")

                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and not await asyncio.to_thread(taken_over):
                    await sensor.keys(3)
                    await asyncio.to_thread(cb.get, "/", headers=HTML)
                    await asyncio.sleep(1.0)
                assert await asyncio.to_thread(taken_over), "B never took the session over"
                for _ in range(3):
                    await sensor.keys(6)
                    await asyncio.sleep(0.3)
                await asyncio.to_thread(cb.get, "/", headers=HTML)
                await until(lambda: (_view(b, sid)["assessment"].get("scored_on") or "").startswith("b/"),
                           timeout=15, what="B's assessment of the session")

        asyncio.run(after())
        view = _view(b, sid)
        r.close()
        assert view["state"] == "active", (view.get("decision"), _sensor_details(view))
        # restored, not started afresh: the evidence C had gathered is still there, plus what came after
        assert view["assessment"]["evidence"]["keystrokes"] >= evidence_before
        assert _sensor_details(view)["silent_episodes"] == 0 and _sensor_details(view)["typed_without_keys"] == 0
