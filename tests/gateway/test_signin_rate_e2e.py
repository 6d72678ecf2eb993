"""Password attempts per client address: each costs an argon2 verification (~0.2 s of CPU), and attempts on
ever-new user names never reach an account's lockout (the resource audit ran 60 of them, 12 at a time, with none
refused: a real sign-in took 1.6 s meanwhile). A real gateway process, real HTTP, two source addresses."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream

pytestmark = pytest.mark.slow


def _attempt(client: httpx.Client, username: str) -> httpx.Response:
    page = client.get("/.ztgate/login", headers={"Accept": "text/html"})
    csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
    return client.post("/.ztgate/login", data={"csrf": csrf, "next": "/", "username": username,
                                               "password": "wrong-password-0123", "otp": "000000"},
                       headers={"Accept": "text/html"})


def test_password_attempts_are_limited_per_client_address(tmp_path):
    users = make_users(tmp_path / "users.yaml", [{"username": "ann"}])
    port = free_port()
    with run_upstream(tmp_path, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp_path, users_file=tmp_path / "users.yaml",
                             admin_token=secrets.token_urlsafe(24))
        cfg["identity"]["lockout"] = {"address_attempts": 3, "address_window": 600}
        with run_gateway(tmp_path, cfg) as gw:
            with httpx.Client(base_url=gw.url, timeout=10) as c:
                codes = [_attempt(c, f"nobody-{i}").status_code for i in range(4)]
                assert codes[:3] == [401, 401, 401] and codes[3] == 429, codes
                refused = _attempt(c, "ann")
                assert refused.status_code == 429 and refused.headers["retry-after"] == "600"
            other = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(base_url=gw.url, timeout=10, transport=other) as c:
                assert login(c, users["ann"]).status_code == 303  # another address is not held back
