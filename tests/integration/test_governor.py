"""The adapters' sidecar backend against a real sidecar process and the real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ostracon.adapters.governor import SidecarGovernor
from ostracon.config import load_config
from ostracon.decision import Verdict
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.transport.embedded import EmbeddedBroker

from .conftest import SidecarProcess, write_config


def env(i: int, sender: str, *claims: Claim, kind: Kind = Kind.CHAT) -> Envelope:
    return Envelope(
        id=f"m-{i}", conversation="c", sender=sender, kind=kind, content="", claims=list(claims)
    )


async def test_rulings_come_back_from_the_sidecar_and_timeouts_fail_as_configured(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg_path = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "containment:\n  policy: strict\nblocklist:\n  agents: {mallory: forged a tool result}\n",
    )
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("sidecar consuming")
        cfg = load_config(cfg_path)
        async with SidecarGovernor(cfg, timeout_s=10.0) as gov:
            fact = Claim("q3 revenue", "8.1M USD")
            tool = await gov.rule(env(1, "tool", fact, kind=Kind.TOOL_RESULT))
            assert tool.verdict is Verdict.DELIVER
            held, again = await asyncio.gather(
                gov.rule(env(2, "gossip", Claim("churn", "7%"))),
                gov.rule(env(3, "writer", fact)),
            )
            assert held.verdict is Verdict.HOLD and "unverified" in held.reason
            assert again.verdict is Verdict.DELIVER
            blocked = await gov.rule(env(4, "mallory"))
            assert blocked.verdict is Verdict.BLOCK and blocked.blocklisted
            assert "forged a tool result" in blocked.reason
        side.stop()  # nobody answers now
        async with SidecarGovernor(cfg, timeout_s=0.5) as closed:
            r = await closed.rule(env(5, "alice"))
            assert r.verdict is Verdict.QUARANTINE and "fail-closed" in r.reason
        async with SidecarGovernor(cfg, timeout_s=0.5, fail="open") as open_:
            r = await open_.rule(env(6, "alice"))
            assert r.delivers and r.tags == {"ungoverned": "1"} and "fail-open" in r.reason
    finally:
        side.stop()


async def test_sync_use_from_framework_hooks(broker: EmbeddedBroker, tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "ostracon.yaml", broker.bootstrap)
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    gov = SidecarGovernor(load_config(cfg_path), timeout_s=10.0)
    try:
        await side.wait_for("sidecar consuming")
        # A synchronous hook (CrewAI, LangGraph nodes) calls from a thread with no loop.
        r = await asyncio.to_thread(gov.rule_sync, env(1, "a", Claim("churn", "7%")))
        assert r.verdict is Verdict.DELIVER_TAGGED and r.tags == {"unverified": "churn"}
    finally:
        await asyncio.to_thread(gov.close_sync)
        side.stop()
