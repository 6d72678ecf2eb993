"""`session.secure: always` marks every cookie the gateway sets Secure, not only the session cookie: behind a
TLS-terminating balancer that does not say so, the pre-session cookie (which binds the sign-in form) and the
cookie clear at sign-out were sent without it."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream

pytestmark = pytest.mark.slow


def test_secure_always_covers_every_cookie(tmp_path):
    users = make_users(tmp_path / "users.yaml", [{"username": "ann"}])
    port = free_port()
    with run_upstream(tmp_path, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp_path, users_file=tmp_path / "users.yaml",
                             admin_token=secrets.token_urlsafe(24), session={"secure": "always"})
        with run_gateway(tmp_path, cfg) as gw, httpx.Client(base_url=gw.url) as c:
            page = c.get("/.ztgate/login", headers={"Accept": "text/html"})
            assert all("Secure" in v for v in page.headers.get_list("set-cookie")), page.headers
            # httpx keeps Secure cookies for https only: carry them by hand over this plain-HTTP test link
            c.cookies.set("ztgate_pre", re.search(r"ztgate_pre=([^;]+)", page.headers["set-cookie"]).group(1),
                          path="/.ztgate/")
            r = login(c, users["ann"])
            assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
            c.cookies.set("ztgate_session", re.search(r"ztgate_session=([^;]+)", r.headers["set-cookie"]).group(1))
            out = c.get("/.ztgate/logout", headers={"Accept": "text/html"})
            csrf = re.search(r"name=csrf value='([^']+)'", out.text).group(1)
            bye = c.post("/.ztgate/logout", data={"csrf": csrf})
            cleared = [v for v in bye.headers.get_list("set-cookie") if v.startswith("ztgate_session=")]
            assert cleared and all("Secure" in v for v in cleared), bye.headers
