"""The admin API inside a real sidecar process (``ostracon run``) on the real broker: human
decisions reach the delivered and state topics, are audited, and survive a restart."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from ostracon.envelope import encode
from ostracon.routing import H_RELEASED, header
from ostracon.store import decode_event
from ostracon.transport.embedded import EmbeddedBroker, free_port
from tests.unit.test_api import team

from .conftest import SidecarProcess, produce, read_all, write_config

pytestmark = pytest.mark.broker

TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class AdminSidecar:
    """A sidecar process with its admin API on a free loopback port."""

    def __init__(self, broker: EmbeddedBroker, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        extra = f"api:\n  enabled: true\n  port: {self.port}\n  token: {TOKEN}\n"
        self.config = write_config(tmp / "ostracon.yaml", broker.bootstrap, extra)
        self.log = tmp / "sidecar.log"
        self.proc: SidecarProcess | None = None

    async def start(self) -> None:
        self.proc = SidecarProcess(self.config, self.log).start()
        await self.proc.wait_for("admin API serving")
        await until(lambda: self.get("/ready", auth=False), lambda r: r.status_code == 200)

    async def restart(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        assert await self.proc.wait() == 0
        self.log.write_text("")  # wait_for must see the new process's lines
        await self.start()

    async def get(self, path: str, auth: bool = True, **params: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            return await c.get(path, params=params, headers=AUTH if auth else {})

    async def call(self, method: str, path: str, body: Any, user: str = "") -> httpx.Response:
        headers = {**AUTH, **({"X-Ostracon-User": user} if user else {})}
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            return await c.request(method, path, json=body, headers=headers)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


async def until(fetch: Any, ok: Any, timeout: float = 30.0) -> Any:
    """Poll ``fetch()`` until ``ok(result)``; the last result otherwise (a failing assert)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await fetch()
            if ok(result):
                return result
        except httpx.TransportError:
            result = None
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last: {getattr(result, 'text', result)!r}")
        await asyncio.sleep(0.2)


@pytest.fixture
def admin(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[AdminSidecar]:
    sidecar = AdminSidecar(broker, tmp_path)
    yield sidecar
    sidecar.stop()


async def held_items(admin: AdminSidecar, count: int) -> list[dict[str, Any]]:
    resp = await until(
        lambda: admin.get("/api/quarantine"), lambda r: len(r.json()["items"]) == count
    )
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


async def test_decisions_reach_the_topics_are_audited_and_survive_a_restart(
    broker: EmbeddedBroker, admin: AdminSidecar
) -> None:
    await admin.start()
    assert (await admin.get("/api/quarantine", auth=False)).status_code == 401
    await produce(broker.bootstrap, "agents.inbound", [encode(e) for e in team()])
    held = {h["message_id"]: h for h in await held_items(admin, 2)}
    assert held["m2"]["verdict"] == "block" and held["m3"]["verdict"] == "hold"

    release = await admin.call(
        "POST",
        f"/api/quarantine/{held['m3']['decision_id']}/release",
        {"reason": "confirmed by the CFO"},
        user="alice",
    )
    assert release.status_code == 200, release.text
    deny = await admin.call(
        "POST", f"/api/quarantine/{held['m2']['decision_id']}/deny", {"reason": "made up"}
    )
    assert deny.status_code == 200, deny.text
    block = await admin.call("POST", "/api/blocklist", {"agent": "analyst", "reason": "liar"})
    assert block.status_code == 200, block.text
    assert (await admin.get("/api/quarantine")).json()["items"] == []

    # the released record is on the delivered topic, marked
    delivered = await read_all(broker.bootstrap, ["agents.delivered"], expect=3)
    released = [r for r in delivered if header(r.headers, H_RELEASED)]
    assert len(released) == 1
    assert header(released[0].headers, H_RELEASED) == "human:alice"
    assert header(released[0].headers, "ostracon-verdict") == "deliver"
    assert msgspec.json.decode(released[0].value)["id"] == "m3"

    # every decision is on the state topic with who and why, and in the audit log
    state = [decode_event(r.value) for r in await read_all(broker.bootstrap, ["ostracon.state"], 3)]
    human = [(e.by, e.why) for e in state if e.by.startswith("human:")]
    assert sorted(human) == [
        ("human:admin", "liar"),
        ("human:admin", "made up"),
        ("human:alice", "confirmed by the CFO"),
    ]
    audit = (await admin.get("/api/audit")).json()
    assert [e["type"] for e in audit] == ["block", "quarantine", "quarantine"]  # newest first
    assert all(e["at"] > 0 for e in audit)

    # a new process rebuilds the decisions from the state topic
    await admin.restart()
    assert (await admin.get("/api/quarantine")).json()["items"] == []
    again = await admin.call(
        "POST", f"/api/quarantine/{held['m2']['decision_id']}/release", {"reason": "changed mind"}
    )
    assert again.status_code == 409 and "deny" in again.text
    assert (await admin.get("/api/blocklist")).json() == [{"agent": "analyst", "reason": "liar"}]
    assert len((await admin.get("/api/audit")).json()) == 3
