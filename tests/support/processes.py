"""Real processes for end-to-end tests: ztgate gateways, upstream apps, and a Redis of our own if needed.

Everything listens on loopback ports chosen free at start; every wait is bounded; every process is stopped
(SIGTERM, then SIGKILL) when its context ends, and its log is printed if the test failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import yaml

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing we wait for may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    def hwm_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def spawn(name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Proc:
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "wb")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, cwd=str(ROOT), env=full_env,
                             start_new_session=True)
    log_file.close()
    return Proc(name, popen, log_path)


@dataclass
class DemoUser:
    username: str
    password: str
    totp_secret: str

    def code(self) -> str:
        return pyotp.TOTP(self.totp_secret).now()


def make_users(path: Path, specs: list[dict]) -> dict[str, DemoUser]:
    from gateway.auth.directory import add_user

    users = {}
    for spec in specs:
        password = spec.get("password", f"pw-{spec['username']}-0123456789")
        _, secret = add_user(path, spec["username"], password, spec.get("groups", []),
                             spec.get("email", f"{spec['username']}@example.test"), spec.get("site"),
                             spec.get("country"))
        users[spec["username"]] = DemoUser(spec["username"], password, secret)
    return users


@dataclass
class Gateway:
    proc: Proc
    port: int
    admin_token: str
    config_path: Path
    extra_ports: dict[str, int] = field(default_factory=dict)
    scheme: str = "http"  # https when the first listener terminates TLS (self-signed in tests: verify=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.url}/.ztgate/admin/api{path}",
                             headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10, verify=False,
                             **kw)


def gateway_config(*, port: int, upstream: str, tmp: Path, users_file: Path | None, store: str = "memory://",
                   prefix: str = "ztgate:", admin_token: str, keys_dir: Path | None = None,
                   policies_dir: str | None = None, extra_routes: list[dict] | None = None,
                   events: dict | None = None, instance: str = "gw", **overrides) -> dict:
    routes = [{"name": "app", "upstream": upstream, "audience": "demo"},
              {"name": "app-terminal", "kind": "terminal", "path_prefix": "/ws/terminal", "upstream": upstream,
               "audience": "demo"}]
    doc: dict[str, Any] = {
        "instance": instance,
        "state_dir": str(tmp / f"state-{instance}"),
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "routes": routes + (extra_routes or []),
        "store": {"url": store, "prefix": prefix, "cache_seconds": 2},
        "shutdown_grace": 1,  # tests stop gateways with connections still open: do not wait out a drain
        "keys": {"dir": str(keys_dir or tmp / "keys")},
        "admin": {"token": admin_token},
        "telemetry": {"log_format": "text"},
        "events": events or {"outbox": {"path": str(tmp / f"outbox-{instance}")},
                             "sinks": [{"type": "jsonl", "path": str(tmp / f"events-{instance}.jsonl")}]},
    }
    if users_file is not None:
        doc["identity"] = {"directory": str(users_file)}
    if policies_dir is not None:
        doc["policies"] = {"dir": policies_dir, "reload_interval": 0.5}
    doc.update(overrides)
    return doc


def shadow_default_policies(dest: Path) -> Path:
    """The shipped default policies with every policy in shadow mode: decisions are computed and reported but not
    enforced, for tests about sensing or privacy whose synthetic typing may legitimately trip a behaviour rule."""
    from policies import DEFAULTS_DIR

    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(DEFAULTS_DIR.glob("*.yaml")):
        doc = yaml.safe_load(src.read_text())
        for policy in doc.get("policies", []):
            policy["shadow"] = True
        (dest / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


@contextlib.contextmanager
def run_gateway(tmp: Path, config: dict, name: str = "gw", env: dict[str, str] | None = None):
    config_path = tmp / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
    proc = spawn(name, [PYTHON, "-m", "gateway.cli.main", "run", "--config", str(config_path)], tmp, env)
    scheme = "https" if config["listeners"][0].get("tls") else "http"
    gw = Gateway(proc, port, config["admin"]["token"], config_path, scheme=scheme)
    try:
        wait_until(lambda: proc.popen.poll() is not None or httpx.get(f"{gw.url}/readyz", timeout=1,
                                                                      verify=False).status_code
                   == 200, timeout=30, what=f"{name} to become ready")
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.popen.returncode}:\n{proc.log()}")
        yield gw
    except BaseException:
        sys.stderr.write(f"\n----- {name} log -----\n{proc.log()[-6000:]}\n")
        raise
    finally:
        proc.stop()


@contextlib.contextmanager
def run_upstream(tmp: Path, *, jwks_port: int, name: str = "upstream"):
    """The demo app, trusting the gateway on `jwks_port` (its JWKS is fetched lazily, once the gateway is up)."""
    port = free_port()
    proc = spawn(name, [PYTHON, "-m", "gateway.cli.main", "demo-upstream", "--listen", f"127.0.0.1:{port}",
                        "--jwks-url", f"http://127.0.0.1:{jwks_port}/.well-known/ztgate/jwks.json"], tmp)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500, timeout=20,
                   what="demo upstream")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@contextlib.contextmanager
def run_echo(tmp: Path, name: str = "echo"):
    """An upstream that answers every request with what it received (headers, cookies): no trust checks."""
    port = free_port()
    proc = spawn(name, [PYTHON, str(ROOT / "tests" / "support" / "echo_app.py"), str(port)], tmp)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, timeout=20,
                   what="echo upstream")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def login(client: httpx.Client, user: DemoUser, *, next_url: str = "/") -> httpx.Response:
    """The browser's login: get the form (pre-session cookie + CSRF token), post it, follow to `next`."""
    page = client.get("/.ztgate/login", params={"next": next_url}, headers={"Accept": "text/html"})
    csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
    return client.post("/.ztgate/login", data={"csrf": csrf, "next": next_url, "username": user.username,
                                               "password": user.password, "otp": user.code()},
                       headers={"Accept": "text/html"})


# ---------------------------------------------------------------------------------------------- more helpers


def session_sid(client: httpx.Client | httpx.AsyncClient, cookie_name: str = "ztgate_session") -> str:
    """The sid inside the client's session cookie (read without verifying: the gateway verifies)."""
    import jwt

    return jwt.decode(client.cookies.get(cookie_name), options={"verify_signature": False})["sid"]


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    def connectable() -> bool:
        with socket.create_connection((host, port), timeout=0.3):
            return True

    wait_until(connectable, timeout=timeout, what=f"a listener on {host}:{port}")


@contextlib.contextmanager
def run_redis(tmp: Path, name: str = "redis", port: int | None = None):
    """A redis-server of our own on a free port (no automatic persistence), for tests that stop and restart the
    store. Yields a RedisHandle: `.url`, `.stop(keep_data=True)` (SHUTDOWN SAVE: the data survives a restart, like
    a network outage), `.start()` again on the same port."""
    port = port or free_port()
    data_dir = tmp / f"{name}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    holder: dict[str, Proc] = {}

    def start() -> Proc:
        proc = spawn(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(data_dir)], tmp)
        wait_port(port)
        holder["proc"] = proc
        return proc

    start()
    try:
        yield RedisHandle(f"redis://127.0.0.1:{port}/0", port, holder, start)
    finally:
        holder["proc"].stop()


@dataclass
class RedisHandle:
    url: str
    port: int
    _holder: dict
    _start: Any

    @property
    def proc(self) -> Proc:
        return self._holder["proc"]

    def stop(self, keep_data: bool = True) -> None:
        if keep_data:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "save"], capture_output=True, timeout=10)
            try:
                self.proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.proc.stop()

    def start(self) -> None:
        self._start()


class RssSampler:
    """Samples a process's resident memory in a background thread: `with RssSampler(proc) as s: ...; s.peak`."""

    def __init__(self, proc: Proc, interval: float = 0.1) -> None:
        import threading

        self.proc, self.interval = proc, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.proc.rss_kib())
            except (OSError, AttributeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self.baseline = self.proc.rss_kib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak(self) -> int:
        return max(self.samples, default=self.baseline)

    @property
    def growth_kib(self) -> int:
        return self.peak - self.baseline


@contextlib.contextmanager
def run_vnc_server(tmp: Path, name: str = "vnc"):
    """Xvfb plus x11vnc (no password, loopback only). Yields the VNC port."""
    display_no = 60 + (os.getpid() + free_port()) % 200
    display = f":{display_no}"
    port = free_port()
    xvfb = spawn(f"{name}-xvfb", ["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"], tmp)
    x11vnc = None
    try:
        wait_until(lambda: Path(f"/tmp/.X11-unix/X{display_no}").exists(), timeout=10, what="Xvfb")
        x11vnc = spawn(name, ["x11vnc", "-display", display, "-rfbport", str(port), "-nopw", "-forever",
                              "-shared", "-localhost", "-quiet"], tmp)
        wait_port(port)
        yield port
    finally:
        for proc in (x11vnc, xvfb):
            if proc is not None:
                proc.stop(5)


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Deletes every key under a test's store prefix (tests share the machine's Redis)."""
    import redis

    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()
