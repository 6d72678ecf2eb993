"""Admin power through a session cookie goes only with a session in good standing, used by the client that signed
in: a real gateway process, real HTTP, a copied cookie replayed from another source address (127.0.0.2)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream, session_sid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin-access")
    users = make_users(tmp / "users.yaml", [{"username": f"admin{i}", "groups": ["admins"]} for i in range(3)])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24))
        cfg["admin"]["groups"] = ["admins"]
        with run_gateway(tmp, cfg) as gw:
            yield gw, users


BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def test_an_admin_session_asked_to_step_up_has_no_admin_power(env):
    gw, users = env
    with httpx.Client(base_url=gw.url, headers={"User-Agent": BROWSER}) as c:
        login(c, users["admin0"])
        assert c.get("/.ztgate/admin/api/sessions").status_code == 200
        sid = session_sid(c)
        assert gw.admin("POST", f"/sessions/{sid}/step-up").json()["state"] == "step_up_required"
        r = c.get("/.ztgate/admin/api/sessions")
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert c.post(f"/.ztgate/admin/api/sessions/{sid}/terminate").status_code == 403


@pytest.mark.parametrize("thief_agent", ["curl/8.5.0", BROWSER])  # a thief who copies the User-Agent too
def test_a_copied_admin_cookie_from_another_client_has_no_admin_power(env, thief_agent):
    gw, users = env
    user = users["admin1" if thief_agent == BROWSER else "admin2"]
    with httpx.Client(base_url=gw.url, headers={"User-Agent": BROWSER}) as c:
        login(c, user)
        assert c.get("/.ztgate/admin/api/sessions").status_code == 200
        cookie = c.cookies.get("ztgate_session")
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=gw.url, transport=transport, cookies={"ztgate_session": cookie},
                      headers={"User-Agent": thief_agent}) as thief:
        assert thief.get("/.ztgate/admin/api/sessions").status_code == 403
        assert thief.get("/.ztgate/admin/api/locks").status_code == 403
