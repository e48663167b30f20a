"""The admin API in-process over the in-memory bus (the real router and core, no broker)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ostracon.api import MemoryBackend, create_app
from ostracon.config import ConfigError, parse_config
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.routing import H_RELEASED, Route, header
from ostracon.transport.memory import MemoryBus

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONV = "q3"


def said(
    mid: str, sender: str, kind: Kind, content: str, key: str, value: str, **kw: Any
) -> Envelope:
    return Envelope(
        id=mid,
        conversation=CONV,
        sender=sender,
        kind=kind,
        content=content,
        claims=[Claim(key, value)],
        **kw,
    )


def team() -> list[Envelope]:
    """A tool grounds revenue; an analyst contradicts it (blocked, Red); a hub repeats an
    unverified rumour (held, Yellow); a reviewer repeats the tool (delivered, Green)."""
    rev, funding = "q3 revenue", "rivalco funding"
    return [
        said("m1", "finance-tool", Kind.TOOL_RESULT, "Q3 revenue was $8.1M.", rev, "8.1M USD"),
        said("m2", "analyst", Kind.CHAT, "Q3 revenue was $12M.", rev, "12M USD"),
        said(
            "m3",
            "writer",
            Kind.CHAT,
            "Rivalco raised $50M.",
            funding,
            "50M USD",
            meta={"role": "summarizer"},
        ),
        said("m4", "reviewer", Kind.CHAT, "Checked: $8.1M.", rev, "8.1M USD", parents=["m1"]),
    ]


def populated() -> MemoryBackend:
    backend = MemoryBackend(MemoryBus())
    for env in team():
        backend.publish(env)
    return backend


@pytest.fixture
def backend() -> MemoryBackend:
    return populated()


@pytest.fixture
async def client(backend: MemoryBackend) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(backend, TOKEN, user="ops")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
        yield c


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_api_route_needs_the_token(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    checked = 0
    for path, ops in doc["paths"].items():
        for method in ops:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                resp = await client.request(
                    method, concrete(path), headers=headers, json={"reason": "r", "agent": "a"}
                )
                if path in ("/health", "/ready"):
                    assert resp.status_code == 200, (method, path)
                    continue
                assert resp.status_code == 401, (method, path, headers, resp.text)
                assert resp.headers["www-authenticate"] == "Bearer"
                checked += 1
    assert checked >= 3 * 12  # every route under /api, three ways each


async def test_quarantine_lists_held_records_with_why(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/quarantine", headers=AUTH)
    assert resp.status_code == 200
    items = resp.json()["items"]
    assert [(h["message_id"], h["verdict"]) for h in items] == [("m2", "block"), ("m3", "hold")]
    assert "contradicts" in items[0]["reason"]
    assert items[0]["content"] == "Q3 revenue was $12M."
    one = await client.get(f"/api/quarantine/{items[1]['decision_id']}", headers=AUTH)
    assert one.json()["sender"] == "writer" and one.json()["resolution"] is None
    assert (await client.get("/api/quarantine/d-nope", headers=AUTH)).status_code == 404


async def test_release_delivers_with_released_by_and_audits(
    client: httpx.AsyncClient, backend: MemoryBackend
) -> None:
    held = (await client.get("/api/quarantine", headers=AUTH)).json()["items"][1]
    did = held["decision_id"]
    resp = await client.post(
        f"/api/quarantine/{did}/release",
        json={"reason": "  checked with the CFO  "},
        headers={**AUTH, "X-Ostracon-User": "alice"},
    )
    assert resp.status_code == 200, resp.text
    event = resp.json()
    assert event["type"] == "quarantine" and event["action"] == "release"
    assert (event["by"], event["why"], event["message_id"]) == (
        "human:alice",
        "checked with the CFO",
        "m3",
    )
    assert backend.core.state.resolved[did] == "release"
    out = backend.bus.topics[Route.DELIVERED][-1]
    assert header(out.headers, H_RELEASED) == "human:alice"
    assert header(out.headers, "ostracon-verdict") == "deliver"
    assert b"Rivalco raised $50M." in (out.value or b"")
    # resolved: off the queue, and a second decision on it is refused
    left = (await client.get("/api/quarantine", headers=AUTH)).json()["items"]
    assert [h["message_id"] for h in left] == ["m2"]
    again = await client.post(f"/api/quarantine/{did}/deny", json={"reason": "x"}, headers=AUTH)
    assert again.status_code == 409
    audit = (await client.get("/api/audit", headers=AUTH)).json()
    assert [(e["by"], e["action"], e["why"]) for e in audit] == [
        ("human:alice", "release", "checked with the CFO")
    ]


async def test_deny_is_an_event_only(client: httpx.AsyncClient, backend: MemoryBackend) -> None:
    did = (await client.get("/api/quarantine", headers=AUTH)).json()["items"][0]["decision_id"]
    delivered = len(backend.bus.topics[Route.DELIVERED])
    resp = await client.post(f"/api/quarantine/{did}/deny", json={"reason": "a lie"}, headers=AUTH)
    assert resp.status_code == 200
    assert resp.json()["by"] == "human:ops"  # the token's configured user
    assert backend.core.state.resolved[did] == "deny"
    assert len(backend.bus.topics[Route.DELIVERED]) == delivered


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({}, {}),
        ({"reason": ""}, {}),
        ({"reason": "   "}, {}),
        ({"reason": "x" * 1001}, {}),
        ({"reason": "ok"}, {"X-Ostracon-User": "bad name!"}),
    ],
)
async def test_a_decision_needs_a_reason_and_a_sane_name(
    client: httpx.AsyncClient, backend: MemoryBackend, body: dict[str, str], headers: dict[str, str]
) -> None:
    did = (await client.get("/api/quarantine", headers=AUTH)).json()["items"][0]["decision_id"]
    resp = await client.post(
        f"/api/quarantine/{did}/release", json=body, headers={**AUTH, **headers}
    )
    assert resp.status_code in (400, 422), resp.text
    assert did not in backend.core.state.resolved


@pytest.mark.parametrize("agent", ["", "   ", "\t"])
async def test_blocking_needs_an_agent_name(
    client: httpx.AsyncClient, backend: MemoryBackend, agent: str
) -> None:
    resp = await client.post("/api/blocklist", json={"agent": agent, "reason": "r"}, headers=AUTH)
    assert resp.status_code == 422, resp.text
    assert backend.core.state.blocklist == {}


async def test_blocklist_add_and_remove_take_effect_and_are_audited(
    client: httpx.AsyncClient, backend: MemoryBackend
) -> None:
    resp = await client.post(
        "/api/blocklist", json={"agent": "analyst", "reason": "made up revenue"}, headers=AUTH
    )
    assert resp.status_code == 200
    assert (await client.get("/api/blocklist", headers=AUTH)).json() == [
        {"agent": "analyst", "reason": "made up revenue"}
    ]
    outcome = backend.publish(
        Envelope(id="m9", conversation=CONV, sender="analyst", kind=Kind.CHAT, content="hi")
    )
    assert outcome.decision is not None and outcome.decision.verdict == "block"
    gone = await client.request(
        "DELETE", "/api/blocklist/analyst", json={"reason": "apologised"}, headers=AUTH
    )
    assert gone.status_code == 200 and gone.json()["type"] == "unblock"
    assert (await client.get("/api/blocklist", headers=AUTH)).json() == []
    missing = await client.request(
        "DELETE", "/api/blocklist/analyst", json={"reason": "again"}, headers=AUTH
    )
    assert missing.status_code == 404
    audit = (await client.get("/api/audit", headers=AUTH)).json()
    assert [(e["type"], e["agent"], e["why"]) for e in audit] == [
        ("unblock", "analyst", "apologised"),
        ("block", "analyst", "made up revenue"),
    ]


async def test_genealogy_labels_origins_and_edges(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/genealogy", params={"conversation": CONV}, headers=AUTH)
    assert resp.status_code == 200
    graph = resp.json()
    claims = {n["id"]: n for n in graph["nodes"] if n["type"] == "claim"}
    assert {c: n["label"] for c, n in claims.items()} == {
        "c:m1#0": "green",
        "c:m2#0": "red",
        "c:m3#0": "yellow",
        "c:m4#0": "green",
    }
    assert claims["c:m1#0"]["origin"] and not claims["c:m4#0"]["origin"]
    assert claims["c:m4#0"]["origins"] == ["c:m1#0"]
    edges = {(e["source"], e["target"], e["kind"]) for e in graph["edges"]}
    assert ("c:m4#0", "c:m1#0", "derives") in edges
    assert ("c:m2#0", "c:m1#0", "contradicts") in edges
    assert ("m:m4", "m:m1", "answers") in edges


async def test_genealogy_around_a_node_is_bounded(client: httpx.AsyncClient) -> None:
    near = await client.get(
        "/api/genealogy",
        params={"conversation": CONV, "around": "c:m1#0", "depth": 1},
        headers=AUTH,
    )
    ids = {n["id"] for n in near.json()["nodes"]}
    assert ids == {"c:m1#0", "m:m1", "c:m4#0", "c:m2#0"}  # its message, a repeat, a contradiction
    capped = await client.get(
        "/api/genealogy",
        params={"conversation": CONV, "around": "m1", "depth": 10, "limit": 2},
        headers=AUTH,
    )
    assert len(capped.json()["nodes"]) == 2 and capped.json()["truncated"]
    for params in ({"conversation": "nope"}, {"conversation": CONV, "around": "c:zz#0"}):
        assert (await client.get("/api/genealogy", params=params, headers=AUTH)).status_code == 404


async def test_agreement_and_conversations(client: httpx.AsyncClient) -> None:
    agree = (await client.get("/api/agreement", params={"conversation": CONV}, headers=AUTH)).json()
    revenue = next(k for k in agree["keys"] if k["key"] == "q3 revenue")
    assert revenue["values"]["8100000 usd"] == ["finance-tool", "reviewer"]
    assert revenue["ratio"] == pytest.approx(2 / 3)
    convs = (await client.get("/api/conversations", headers=AUTH)).json()
    assert convs[0]["conversation"] == CONV and convs[0]["messages"] == 4


async def test_accusations_come_from_the_state_events(
    client: httpx.AsyncClient, backend: MemoryBackend
) -> None:
    from ostracon.store import AccusationMade

    await backend.publish_event(
        AccusationMade(
            id="e-1",
            at=1.0,
            by="agent:reviewer",
            accuser="reviewer",
            accused="analyst",
            reason="contradicts the tool",
            evidence=["m2"],
            conversation=CONV,
        )
    )
    got = (await client.get("/api/accusations", params={"agent": "analyst"}, headers=AUTH)).json()
    assert [(a["accuser"], a["accused"]) for a in got] == [("reviewer", "analyst")]
    assert (await client.get("/api/accusations", params={"agent": "x"}, headers=AUTH)).json() == []
    assert (await client.get("/api/audit", headers=AUTH)).json() == []  # not a human's


async def test_ui_and_health_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json()["status"] == "ok"
    assert (await client.get("/ready")).status_code == 200
    page = await client.get("/ui/")
    assert page.status_code == 200 and "ostracon" in page.text
    lib = await client.get("/ui/vendor/cytoscape.esm.min.js")
    assert lib.status_code == 200 and "javascript" in lib.headers["content-type"]
    assert (await client.get("/")).headers["location"] == "/ui/"


async def test_no_token_serves_without_auth(backend: MemoryBackend) -> None:
    transport = httpx.ASGITransport(app=create_app(backend, None))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
        assert (await c.get("/api/blocklist")).status_code == 200


def test_config_refuses_an_open_api_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("api:\n  enabled: true\n  host: 0.0.0.0\n", "o.yaml")
    assert str(err.value).startswith("o.yaml:3: api.host: 0.0.0.0 is not loopback")
    parse_config("api:\n  enabled: true\n  host: 0.0.0.0\n  allow_unauthenticated: true\n")
    parse_config("api:\n  enabled: true\n  host: 0.0.0.0\n  token: t\n")
    parse_config("api:\n  enabled: true\n")  # loopback, no auth: allowed
    for host in ("::1", "127.0.0.2", "localhost"):
        parse_config(f"api:\n  enabled: true\n  host: '{host}'\n")
    # names that merely start like loopback resolve wherever their DNS says
    for host in ("localhost.example.com", "127.0.0.1.nip.io", "::"):
        with pytest.raises(ConfigError, match="is not loopback"):
            parse_config(f"api:\n  enabled: true\n  host: '{host}'\n")
    with pytest.raises(ConfigError, match=r"o.yaml:3: api.token_env: environment variable"):
        parse_config("api:\n  enabled: true\n  token_env: OSTRACON_TEST_NO_SUCH_VAR\n", "o.yaml")
    monkeypatch.setenv("OSTRACON_TEST_API_TOKEN", "from-env")
    cfg = parse_config("api:\n  enabled: true\n  token_env: OSTRACON_TEST_API_TOKEN\n")
    assert cfg.api.resolve_token() == "from-env"
    with pytest.raises(ConfigError, match="not both"):
        parse_config("api:\n  enabled: true\n  token: a\n  token_env: OSTRACON_TEST_API_TOKEN\n")


async def test_server_serves_on_this_loop_and_reports_a_taken_port(
    backend: MemoryBackend,
) -> None:
    import socket

    from ostracon.api import ApiServer

    server = ApiServer(create_app(backend, TOKEN), "127.0.0.1", 0)
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/health")).status_code == 200
            assert (await c.get("/api/blocklist", headers=AUTH)).status_code == 200
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            clash = ApiServer(create_app(backend, TOKEN), "127.0.0.1", taken.getsockname()[1])
            with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
                await clash.start()
    finally:
        await server.close()
