"""GET /.ztgate/admin/api/profiles/{user} answers 422 for a stored profile that does not load (it used to be a 500).
The real control app of a real in-process Gateway (memory store, so that a damaged blob can be stored beneath it),
called as the proxy addon calls it."""

import httpx
import numpy as np

import scoring
from gateway.control.app import create_app
from scoring.events import Kind, concat, make_batch
from tests.support.inprocess import CONFIG, memory_gateway

TOKEN = "admin-token-0123456789"


def _client(gw):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gw)), base_url="http://admin",
                             headers={"authorization": f"Bearer {TOKEN}", "x-ztgate-internal": gw.internal_secret})


def _profile_bytes() -> bytes:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(80, 250, 400))
    keys = rng.integers(1, 8, len(t))
    b = concat([make_batch(t, t + 1.7e12, Kind.KEY_DOWN, key=keys),
                make_batch(t + 90, t + 90 + 1.7e12, Kind.KEY_UP, key=keys)])
    return scoring.enrol([b[np.argsort(b["t_src"], kind="stable")]]).to_bytes()


async def test_an_unloadable_stored_profile_is_a_422(tmp_path):
    gw = memory_gateway(tmp_path, CONFIG + f"admin: {{token: {TOKEN}}}\n")
    store = gw.store
    good = _profile_bytes()
    await store.put_profile("ok", good)
    await store.put_profile("corrupt", b"ZTPF" + b"\x00" * 40)
    absurd = bytearray(good)
    absurd[12 + 4 * 2 : 12 + 4 * 3] = np.float32(3.0e38).tobytes()  # key_n of one class: finite but absurd
    await store.put_profile("absurd", bytes(absurd))
    async with _client(gw) as client:
        assert (await client.get("/.ztgate/admin/api/profiles/ok")).json()["bytes"] == len(good)
        assert (await client.get("/.ztgate/admin/api/profiles/nobody")).status_code == 404
        for user in ("corrupt", "absurd"):
            r = await client.get(f"/.ztgate/admin/api/profiles/{user}")
            assert r.status_code == 422 and r.json()["error"] == "bad_profile", r.text
