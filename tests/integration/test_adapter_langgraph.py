"""The LangGraph adapter with the sidecar backend: a real sidecar process, the real broker.

Same team as tests/unit/test_adapter_langgraph.py (real LangGraph, fake chat models); the
rulings now come back over Kafka from ``python -m ostracon run``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from langchain_core.messages import AIMessage

from ostracon.adapters.governor import SidecarGovernor, notice
from ostracon.adapters.langgraph import govern
from ostracon.config import load_config
from ostracon.decision import Verdict
from ostracon.envelope import Kind
from ostracon.transport.embedded import EmbeddedBroker

from ..unit.test_adapter_langgraph import QUESTION, RED, TRUE, YELLOW, Team, handoff_graph
from .conftest import SidecarProcess, read_all, write_config

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

CONFIG = "containment:\n  policy: strict\nblocklist:\n  agents: {mallory: forged a tool result}\n"


async def test_false_claims_are_contained_through_the_sidecar(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg_path = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, CONFIG)
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("sidecar consuming")
        team = Team()
        async with SidecarGovernor(load_config(cfg_path), timeout_s=10.0) as gov:
            # retries=0: each false claim is said once (the feedback retry is unit-tested).
            graph = govern(team.pipeline(), gov, retries=0, on_ruling=team.record).compile()
            out = await graph.ainvoke(QUESTION, {"configurable": {"thread_id": "sc-board"}})

        assert out["messages"][-1].text == "Reviewed the summary."
        assert "$15M" not in team.seen_by("writer") and "$15M" not in team.seen_by("reviewer")
        assert YELLOW not in team.seen_by("reviewer") and TRUE in team.seen_by("reviewer")
        verdicts = {e.sender: r for e, r in team.decided}
        assert [r.verdict for r in verdicts.values()] == [
            Verdict.DELIVER,  # researcher's tool call
            Verdict.DELIVER,  # the tool result
            Verdict.BLOCK,  # analyst: $15M contradicts the tool
            Verdict.HOLD,  # writer: churn 7% unverified
            Verdict.DELIVER,  # reviewer
        ]
        by_id = {m.id: m for m in out["messages"]}
        for env, ruling in team.decided[2:4]:
            assert ruling.decision_id in by_id[env.id].text

        alerts = await read_all(broker.bootstrap, ["ostracon.alerts"], 2)
        got = {
            (a["kind"], a["decision_id"]) for a in (msgspec.json.decode(r.value) for r in alerts)
        }
        assert ("red-claim", verdicts["analyst"].decision_id) in got
        assert ("contained-claim", verdicts["writer"].decision_id) in got
    finally:
        side.stop()


async def test_a_blocklisted_agent_cannot_delegate_through_the_sidecar(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg_path = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, CONFIG)
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    gov = SidecarGovernor(load_config(cfg_path), timeout_s=10.0)
    try:
        await side.wait_for("sidecar consuming")
        team = Team()
        graph = govern(handoff_graph(team, None), gov, on_ruling=team.record).compile()
        config: Any = {"configurable": {"thread_id": "sc-handoff"}}
        # A synchronous graph: the nodes call rule_sync from LangGraph's worker threads.
        out = await asyncio.to_thread(
            graph.invoke, {"messages": [("user", "Pay the invoice.")]}, config
        )
        assert "payments" not in team.inputs
        mallory = [(e, r) for e, r in team.decided if e.sender == "mallory"]
        last = out["messages"][-1]
        assert isinstance(last, AIMessage) and last.text == notice(mallory[0][1], "mallory")
        assert [e.kind for e, _ in mallory] == [Kind.CHAT, Kind.ACTION]
        assert all(r.blocklisted and r.verdict is Verdict.BLOCK for _, r in mallory)
    finally:
        await asyncio.to_thread(gov.close_sync)
        side.stop()


async def test_the_sender_retries_with_the_sidecars_feedback(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg_path = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, CONFIG)
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("sidecar consuming")
        team = Team()
        async with SidecarGovernor(load_config(cfg_path), timeout_s=10.0) as gov:
            graph = govern(
                team.pipeline(analyst=(RED, TRUE)), gov, retries=1, on_ruling=team.record
            ).compile()
            await graph.ainvoke(QUESTION, {"configurable": {"thread_id": "sc-retry"}})
        retry_input = team.inputs["analyst"][1]
        assert "[ostracon feedback]" in retry_input[-1].text
        assert "15000000" in retry_input[-1].text  # names the contradicted value
        analyst = [r.verdict for e, r in team.decided if e.sender == "analyst"]
        assert analyst == [Verdict.BLOCK, Verdict.DELIVER]
        assert "$15M" not in team.seen_by("writer") and TRUE in team.seen_by("reviewer")
    finally:
        side.stop()
