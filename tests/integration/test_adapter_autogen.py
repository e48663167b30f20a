"""The AutoGen adapter with the sidecar backend: real teams, a real sidecar, the real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.messages import HandoffMessage
from autogen_agentchat.teams import RoundRobinGroupChat, Swarm

from ostracon.adapters.autogen import governed
from ostracon.adapters.governor import SidecarGovernor
from ostracon.config import load_config
from ostracon.decision import Verdict
from ostracon.transport.embedded import EmbeddedBroker

from ..unit.test_adapter_autogen import (
    RED_TEXT,
    Recorder,
    call,
    check_contained,
    finance_team,
    model_inputs,
    replay,
    run,
)
from .conftest import SidecarProcess, write_config

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:Intervention handler on_response returned None"),
]


async def test_autogen_teams_behind_the_sidecar(broker: EmbeddedBroker, tmp_path: Path) -> None:
    cfg_path = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "containment:\n  policy: strict\nblocklist:\n  agents: {mallory: forged data}\n",
    )
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("sidecar consuming")
        async with SidecarGovernor(load_config(cfg_path), timeout_s=10.0) as gov:
            # A Red and a Yellow claim: held or blocked by the sidecar, never read by peers.
            rec = Recorder()
            agents, clients = finance_team()
            async with governed(gov, on_ruling=rec) as runtime:
                result = await run(RoundRobinGroupChat(agents, runtime=runtime, max_turns=8))
            check_contained(result, clients, rec)
            assert not any("fail-closed" in r.reason for _, r in rec.seen), "a ruling timed out"

            # A blocklisted agent: its handoff is replaced and rerouted, its target never runs.
            swarm_rec = Recorder()
            planner = replay(call("transfer_to_mallory"), "I will draft it myself. TERMINATE")
            mallory = replay(call("transfer_to_writer", thought=RED_TEXT))
            writer = replay(f"{RED_TEXT} TERMINATE")
            swarm: list[ChatAgent] = [
                AssistantAgent("planner", planner, handoffs=["mallory"]),
                AssistantAgent("mallory", mallory, handoffs=["writer"]),
                AssistantAgent("writer", writer),
            ]
            async with governed(gov, on_ruling=swarm_rec) as runtime:
                stop = TextMentionTermination("TERMINATE")
                team = Swarm(swarm, runtime=runtime, termination_condition=stop)
                result = await run(team)
            assert not writer.create_calls and "$15M" not in model_inputs(planner)
            handoffs = [m for m in result.messages if isinstance(m, HandoffMessage)]
            assert [(m.source, m.target) for m in handoffs][-1] == ("mallory", "planner")
            theirs = [r for e, r in swarm_rec.seen if e.sender == "mallory"]
            assert theirs and all(r.verdict is Verdict.BLOCK and r.blocklisted for r in theirs)
            assert all("forged data" in r.reason for r in theirs)
    finally:
        side.stop()
