"""The demo JSON API: items CRUD, whoami, profile; bad input gets a clear error."""

from __future__ import annotations

import httpx


async def test_whoami_returns_the_verified_claims(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        claims = (await client.get("/api/whoami", headers=auth(ztgate_state="restricted"))).json()
    assert claims["sub"] == "u-alice"
    assert claims["groups"] == ["engineering", "vpn-users"]
    assert claims["amr"] == ["pwd", "otp"]
    assert claims["ztgate_state"] == "restricted"
    assert claims["aud"] == "demo"


async def test_items_create_list_get_delete(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url, headers=auth()) as client:
        assert (await client.get("/api/items")).json() == {"items": []}
        created = await client.post("/api/items", json={"title": "Laptop", "description": "14 inch"})
        assert created.status_code == 201
        item = created.json()
        assert item["title"] == "Laptop" and item["owner"] == "u-alice"
        assert created.headers["location"] == f"/api/items/{item['id']}"
        assert (await client.get(f"/api/items/{item['id']}")).json() == item
        assert (await client.get("/api/items")).json() == {"items": [item]}
        assert (await client.delete(f"/api/items/{item['id']}")).status_code == 204
        missing = await client.get(f"/api/items/{item['id']}")
        assert missing.status_code == 404 and "no item with id" in missing.json()["error"]


async def test_items_bad_input_is_explained(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url, headers=auth()) as client:
        cases = [
            (await client.post("/api/items", content=b"title=x",
                               headers={"content-type": "application/x-www-form-urlencoded"}), 415, "application/json"),
            (await client.post("/api/items", content=b"{nope",
                               headers={"content-type": "application/json"}), 400, "not valid JSON"),
            (await client.post("/api/items", json=["x"]), 400, "JSON object"),
            (await client.post("/api/items", json={"description": "no title"}), 422, "'title' is required"),
            (await client.post("/api/items", json={"title": "x", "colour": "red"}), 422, "unknown field"),
            (await client.post("/api/items", json={"title": "x" * 201}), 422, "at most 200"),
            (await client.post("/api/items", json={"title": "x", "pad": "y" * 70_000}), 413, "larger than"),
        ]
        assert (await client.get("/api/items")).json() == {"items": []}  # nothing half-created
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["error"]


async def test_profile_put_and_get_round_trip(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        assert (await client.get("/api/profile", headers=auth())).json() == {"profile": {}}
        saved = await client.put("/api/profile", json={"display_name": "Al", "phone": "+49 1"}, headers=auth())
        assert saved.status_code == 200
        profile = (await client.get("/api/profile", headers=auth())).json()["profile"]
        other_user = (await client.get("/api/profile", headers=auth(sub="u-bob"))).json()["profile"]
        bad = await client.put("/api/profile", json={"display_name": 5}, headers=auth())
    assert profile == {"display_name": "Al", "phone": "+49 1", "department": "", "bio": ""}
    assert other_user == {}
    assert bad.status_code == 422 and "must be a string" in bad.json()["error"]
