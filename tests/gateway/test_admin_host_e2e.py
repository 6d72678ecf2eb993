"""`admin.host`: the dashboard and the cookie-authenticated admin API answer on a host of their own, so that a
script injected into a protected app (same origin as /.ztgate/ on the app's host) cannot drive them with a visiting
admin's cookie. A real gateway process over real HTTP; the two host names are sent as Host headers to 127.0.0.1
(one client per host, as a browser keeps one cookie jar per host)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream

pytestmark = pytest.mark.slow

APP_HOST = "intranet.test"
ADMIN_HOST = "ztgate-admin.test"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin-host")
    # one user per sign-in: a one-time code is good once
    users = make_users(tmp / "users.yaml", [*({"username": f"boss{i}", "groups": ["admins"]} for i in range(3)),
                                            *({"username": f"clerk{i}", "groups": ["staff"]} for i in range(2))])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24))
        cfg["admin"].update(groups=["admins"], host=ADMIN_HOST)
        with run_gateway(tmp, cfg) as gw:
            yield gw, users


def _client(gw, host: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Host": f"{host}:{gw.port}"}, timeout=10)


def test_on_an_apps_host_an_admin_cookie_has_no_admin_console(env):
    gw, users = env
    with _client(gw, APP_HOST) as app:
        login(app, users["boss0"])
        assert app.get("/").status_code == 200  # the app itself is served as before
        r = app.get("/.ztgate/admin/api/sessions")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        r = app.post("/.ztgate/admin/api/sessions/x/terminate", headers={"X-Ztgate-Admin": "1"})
        assert r.status_code == 404
        r = app.get("/.ztgate/admin/", headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"] == f"http://{ADMIN_HOST}:{gw.port}/.ztgate/admin/"


def test_the_admin_host_serves_the_console_and_no_app(env):
    gw, users = env
    with _client(gw, ADMIN_HOST) as admin:
        login(admin, users["boss1"], next_url="/.ztgate/admin/")
        assert admin.get("/.ztgate/admin/api/sessions").status_code == 200
        page = admin.get("/.ztgate/admin/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "dashboard" in page.text.lower()
        r = admin.get("/some/app/page")
        assert r.status_code == 303 and r.headers["location"] == "/.ztgate/admin/"
        assert admin.post("/some/app/page").status_code == 404
    with _client(gw, ADMIN_HOST) as clerk:
        login(clerk, users["clerk0"], next_url="/.ztgate/admin/")
        assert clerk.get("/.ztgate/admin/api/sessions").status_code == 403  # the host is no permission


def test_the_bearer_token_api_answers_on_every_host(env):
    gw, _ = env
    auth = {"Authorization": f"Bearer {gw.admin_token}"}
    with _client(gw, APP_HOST) as c:
        assert c.get("/.ztgate/admin/api/sessions", headers=auth).status_code == 200
        assert c.get("/.ztgate/admin/api/sessions", headers={"Authorization": "Bearer wrong-token-0123456789"}) \
            .status_code == 401


def test_a_second_session_cookie_does_not_change_who_the_control_plane_sees(env):
    """The proxy acts on the first cookie of the name; the control plane must act for the same session (Starlette's
    own cookie dict keeps the last one)."""
    gw, users = env
    with _client(gw, ADMIN_HOST) as admin, _client(gw, ADMIN_HOST) as clerk:
        login(admin, users["boss2"])
        login(clerk, users["clerk1"])
        first, second = admin.cookies.get("ztgate_session"), clerk.cookies.get("ztgate_session")
    with _client(gw, ADMIN_HOST) as c:
        both = {"Cookie": f"ztgate_session={first}; ztgate_session={second}"}
        assert c.get("/.ztgate/admin/api/sessions", headers=both).status_code == 200
        swapped = {"Cookie": f"ztgate_session={second}; ztgate_session={first}"}
        assert c.get("/.ztgate/admin/api/sessions", headers=swapped).status_code == 403
