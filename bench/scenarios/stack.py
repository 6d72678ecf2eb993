"""The whole product for a scenario run: `ztgate demo-upstream` and `ztgate run` as real processes.

`Stack.start()` writes a users file (one user per Aalto participant, with password and TOTP secret), a config (the
shipped default policies, a Redis store with a unique key prefix on the machine's Redis, or the memory store), starts
the demo app and the gateway on free loopback ports, and waits until the gateway is ready. `Stack.stop()` stops both
and deletes the run's Redis keys. Offline-built typing profiles are imported through the admin API
(`PUT /.ztgate/admin/api/profiles/{user}`), the same call `ztgate profiles import` makes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from . import aalto

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True, slots=True)
class ScenarioUser:
    name: str  # gateway user name: "p<participant id>"
    participant: str
    password: str = field(repr=False)
    totp_secret: str = field(repr=False)

    @property
    def email(self) -> str:
        return user_email(self.name)


def user_name(participant: str) -> str:
    return f"p{participant}"


def user_email(name: str) -> str:
    return f"{name}@scenario.test"


def enrolment_batch(sentences: tuple[aalto.Sentence, ...], t0_ms: float = 1.7e12,
                    reactions_ms: Sequence[float] = ()) -> np.ndarray:
    """Key down/up events (timing and key class only) of the given sentences, one after another, 2 s apart.

    With `reactions_ms` (one per sentence), each sentence starts that long after a FIELD_APPEARED stimulus, as it
    would in the browser: the Aalto data has no reactions, so the simulated person's are supplied."""
    from scoring.events import EVENT_DTYPE, Kind, Source, Stimulus, concat, make_batch
    from scoring.keys import from_aalto_keycode

    if reactions_ms and len(reactions_ms) != len(sentences):
        raise ValueError(f"one reaction per sentence: {len(reactions_ms)} for {len(sentences)} sentences")
    parts, offset = [], 0.0
    for i, sentence in enumerate(sentences):
        if reactions_ms:
            stim = offset + 2000.0
            offset = stim + reactions_ms[i] - sentence.keystrokes[0].press_ms
            parts.append(make_batch(np.array([stim]), np.array([stim + t0_ms]), Kind.STIMULUS,
                                    detail=int(Stimulus.FIELD_APPEARED), source=Source.SENSOR))
        press = np.array([k.press_ms for k in sentence.keystrokes], dtype=np.float64) + offset
        release = np.array([k.release_ms for k in sentence.keystrokes], dtype=np.float64) + offset
        classes = np.array([int(from_aalto_keycode(min(max(k.keycode, 0), 255))) for k in sentence.keystrokes],
                           dtype=np.uint8)
        parts += [make_batch(press, press + t0_ms, Kind.KEY_DOWN, key=classes, source=Source.SENSOR),
                  make_batch(release, release + t0_ms, Kind.KEY_UP, key=classes, source=Source.SENSOR)]
        offset = float(release.max(initial=offset)) + (0.0 if reactions_ms else 2000.0)
    batch = concat(parts) if parts else np.zeros(0, dtype=EVENT_DTYPE)
    return batch[np.argsort(batch["t_src"], kind="stable")]


def offline_profile(split: aalto.UserSplit, reactions_ms: Sequence[float] = ()) -> bytes:
    """scoring.enrol on the participant's enrolment sentences (the first ones they typed), serialized.

    With `reactions_ms`, the first len(enrolment) of them are how long each sentence waited after its field appeared
    (see enrolment_batch); any further ones are prompt reactions the profile learned from the user's earlier clean
    sessions (as `scoring.learn` adds them), with no typing attached."""
    import scoring
    from scoring.events import MAX_BATCH
    from scoring.features import REACT_PROMPT

    n = len(split.enrolment)
    batch = enrolment_batch(split.enrolment, reactions_ms=reactions_ms[:n])
    profile = scoring.enrol([batch[i:i + MAX_BATCH] for i in range(0, len(batch), MAX_BATCH)])
    history = np.asarray(reactions_ms[n:], dtype=np.float64)
    if len(history):
        profile.stats.add_reactions(history, np.full(len(history), REACT_PROMPT, dtype=np.int64))
    return profile.to_bytes()


class StackError(RuntimeError):
    """The gateway or the demo app did not start."""


class Stack:
    def __init__(self, participants: list[str], *, store: str = "redis", redis_url: str = DEFAULT_REDIS,
                 enrol_keystrokes: int = 200, workdir: Path | None = None,
                 behind_proxy_port: bool = False) -> None:
        if store not in ("redis", "memory"):
            raise ValueError(f"store must be 'redis' or 'memory', got {store!r}")
        self.participants = participants
        self.store = store
        self.redis_url = redis_url
        self.prefix = f"ztgate-scenario-{secrets.token_hex(5)}:"
        self.enrol_keystrokes = enrol_keystrokes
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="ztgate-scenario-"))
        self.admin_token = secrets.token_urlsafe(24)
        self.port = free_port()
        # a second listener that trusts loopback as a load balancer (X-Forwarded-*, no TCP RTT): bench.client_leg
        self.proxied_port = free_port() if behind_proxy_port else None
        self.upstream_port = free_port()
        self.users: dict[str, ScenarioUser] = {}
        self._procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        upstream = f"http://127.0.0.1:{self.upstream_port}"
        store = ({"url": self.redis_url, "prefix": self.prefix} if self.store == "redis" else {"url": "memory://"})
        return {
            "instance": "scenarios",
            "state_dir": str(self.dir / "state"),
            "listeners": [{"address": f"127.0.0.1:{self.port}"}] + (
                [{"address": f"127.0.0.1:{self.proxied_port}", "trusted_proxies": ["127.0.0.1"]}]
                if self.proxied_port else []),
            "routes": [{"name": "demo", "upstream": upstream, "audience": "demo"},
                       {"name": "demo-terminal", "kind": "terminal", "path_prefix": "/ws/terminal",
                        "upstream": upstream, "audience": "demo"}],
            "identity": {"directory": str(self.dir / "users.yaml")},
            "store": store,
            "keys": {"dir": str(self.dir / "keys")},
            "admin": {"token": self.admin_token},
            # policies: none given, so the shipped defaults (policies/defaults) decide
            "scoring": {"enrol_keystrokes": self.enrol_keystrokes},
            "events": {"outbox": {"path": str(self.dir / "outbox")},
                       "sinks": [{"type": "jsonl", "path": str(self.dir / "security-events.jsonl")}]},
            "telemetry": {"log_format": "text"},
            "shutdown_grace": 2,  # the harness stops the gateway with browsers still connected
        }

    def _write_users(self) -> None:
        from gateway.auth.directory import add_user

        path = self.dir / "users.yaml"
        for participant in self.participants:
            name = user_name(participant)
            password = secrets.token_urlsafe(12)
            _, secret = add_user(path, name, password, ["scenario-typists"], user_email(name), "lab", "FI")
            self.users[participant] = ScenarioUser(name, participant, password, secret)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", *args], stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        log.close()
        self._procs.append(proc)
        return proc

    def log_tail(self, name: str, chars: int = 4000) -> str:
        try:
            return (self.dir / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def start(self) -> Stack:
        import httpx

        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_users()
        config_path = self.dir / "ztgate.yaml"
        config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self._spawn("upstream", ["demo-upstream", "--listen", f"127.0.0.1:{self.upstream_port}", "--jwks-url",
                                 f"{self.url}/.well-known/ztgate/jwks.json"])
        gateway = self._spawn("gateway", ["run", "--config", str(config_path)])
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if gateway.poll() is not None:
                    raise StackError(f"ztgate run exited with {gateway.returncode}:\n{self.log_tail('gateway')}")
                try:
                    ready = (await client.get(f"{self.url}/readyz")).status_code == 200
                    up = (await client.get(f"http://127.0.0.1:{self.upstream_port}/healthz")).status_code < 500
                    if ready and up:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"gateway not ready within 60 s:\n{self.log_tail('gateway')}")
                await asyncio.sleep(0.2)

    async def import_profile(self, user: ScenarioUser, blob: bytes) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.put(f"{self.url}/.ztgate/admin/api/profiles/{user.name}", content=blob,
                                 headers={"Authorization": f"Bearer {self.admin_token}",
                                          "Content-Type": "application/octet-stream"})
        if r.status_code not in (200, 201):
            raise StackError(f"profile import for {user.name} refused: {r.status_code} {r.text[:200]}")

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs.clear()
        if self.store == "redis":
            import redis

            client = redis.Redis.from_url(self.redis_url)
            try:
                keys = list(client.scan_iter(f"{self.prefix}*", count=1000))
                for i in range(0, len(keys), 500):
                    client.delete(*keys[i:i + 500])
            finally:
                client.close()
        if self._own_dir:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    async def __aenter__(self) -> Stack:
        try:
            return await self.start()
        except BaseException:
            self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
