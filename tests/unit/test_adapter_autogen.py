"""The AutoGen adapter with the in-process backend: real AgentChat teams, replay models, no LLM.

The team: ``fetcher`` calls a finance tool ("Q3 revenue was $12M."), ``analyst`` contradicts it
("Q3 revenue was $15M.": Red), ``gossip`` states an ungrounded figure ("Customer churn was 7%.":
Yellow, held under strict), ``writer`` summarises. The replay clients record every model input,
so the tests can assert that no other agent ever read the false claims.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, TaskResult, Team
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.messages import HandoffMessage, TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import FunctionCall, SingleThreadedAgentRuntime
from autogen_core.models import (
    CreateResult,
    FunctionExecutionResult,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_ext.models.replay import ReplayChatCompletionClient

from ostracon.adapters.autogen import OstraconIntervention, governed, governed_runtime
from ostracon.adapters.governor import Governor, InProcessGovernor, Ruling
from ostracon.config import BlocklistConfig, Config, ContainmentConfig
from ostracon.decision import Verdict
from ostracon.envelope import Envelope, Kind

pytestmark = [
    pytest.mark.timeout(60),
    # AutoGen warns on every None RPC result once any intervention handler is installed.
    pytest.mark.filterwarnings("ignore:Intervention handler on_response returned None"),
]

INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)
RED_TEXT = "Q3 revenue was $15M."
YELLOW_TEXT = "Customer churn was 7%."
TASK = "Prepare the Q3 board summary."
RUN_S = 30.0  # a team run that takes longer than this is hanging


def call(name: str, arguments: str = "{}", thought: str | None = None) -> CreateResult:
    """A replayed model turn that calls a tool (or a handoff function)."""
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=f"call-{name}", name=name, arguments=arguments)],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
        thought=thought,
    )


def replay(*turns: str | CreateResult) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(turns), model_info=INFO)


def query_finance(quarter: str) -> str:
    """The finance database: revenue for a quarter."""
    return f"{quarter} revenue was $12M."


def model_inputs(client: ReplayChatCompletionClient) -> str:
    """Everything the model behind ``client`` was given, as one text."""
    parts: list[str] = []
    for c in client.create_calls:
        for m in c["messages"]:
            if getattr(m, "thought", None):
                parts.append(m.thought)
            content = m.content
            if isinstance(content, str):
                parts.append(content)
            else:
                for x in content:
                    parts.append(x.content if isinstance(x, FunctionExecutionResult) else str(x))
    return "\n".join(parts)


def finance_team() -> tuple[list[ChatAgent | Team], dict[str, ReplayChatCompletionClient]]:
    """Two rounds: the offenders get feedback after round one and correct themselves."""
    clients = {
        "fetcher": replay(call("query_finance", '{"quarter": "Q3"}'), "Nothing new from finance."),
        "analyst": replay(RED_TEXT, "Corrected: Q3 revenue was $12M."),
        "gossip": replay(YELLOW_TEXT, "Sorry, I have no source for that figure."),
        "writer": replay("Board summary: Q3 revenue was $12M.", "Summary stands."),
    }
    tools: dict[str, list[Any]] = {"fetcher": [query_finance]}
    agents: list[ChatAgent | Team] = [
        AssistantAgent(n, c, tools=tools.get(n)) for n, c in clients.items()
    ]
    return agents, clients


class Recorder:
    """Collects what the adapter ruled (its ``on_ruling`` hook)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Envelope, Ruling]] = []

    def __call__(self, env: Envelope, ruling: Ruling) -> None:
        self.seen.append((env, ruling))

    def verdicts(self, sender: str) -> list[Verdict]:
        return [r.verdict for e, r in self.seen if e.sender == sender and e.kind is Kind.CHAT]


async def run(team: Team, task: str = TASK) -> TaskResult:
    return await asyncio.wait_for(team.run(task=task), RUN_S)


def check_contained(
    result: TaskResult, clients: dict[str, ReplayChatCompletionClient], rec: Recorder
) -> None:
    """The assertions shared with the sidecar test: nobody but the author saw a false claim."""
    for name, client in clients.items():
        seen = model_inputs(client)
        assert client.create_calls, f"{name} never took a turn"
        if name != "analyst":
            assert "$15M" not in seen, f"{name} read the contradicted claim"
        if name != "gossip":
            assert "churn was 7%" not in seen, f"{name} read the unverified claim"
    stream = "\n".join(m.to_text() for m in result.messages)
    assert "$15M" not in stream and "churn was 7%" not in stream
    # What the offenders' peers read instead: the notice naming the reason and decision id.
    red = next(r for e, r in rec.seen if e.sender == "analyst")
    held = next(r for e, r in rec.seen if e.sender == "gossip")
    assert red.verdict is Verdict.BLOCK and "contradicts" in red.reason
    assert held.verdict is Verdict.HOLD and "unverified" in held.reason
    writer_saw = model_inputs(clients["writer"])
    assert red.decision_id in writer_saw and held.decision_id in writer_saw
    assert "withheld (block)" in writer_saw and "withheld (hold)" in writer_saw
    # The honest turns passed; the second-round corrections too.
    assert rec.verdicts("writer") == [Verdict.DELIVER, Verdict.DELIVER]
    assert rec.verdicts("analyst")[1] is Verdict.DELIVER
    kinds = {e.kind for e, _ in rec.seen}
    assert {Kind.HUMAN, Kind.TOOL_CALL, Kind.TOOL_RESULT, Kind.CHAT} <= kinds
    assert len({e.conversation for e, _ in rec.seen}) == 1
    assert len({e.id for e, _ in rec.seen}) == len(rec.seen)


def strict() -> Config:
    return Config(containment=ContainmentConfig(policy="strict"))


@pytest.mark.parametrize("kind", ["round-robin", "selector"])
async def test_false_claims_never_reach_other_agents(kind: str) -> None:
    gov = InProcessGovernor(strict())
    rec = Recorder()
    agents, clients = finance_team()
    selector = replay(*[a.name for a in agents] * 2)
    async with governed(gov, on_ruling=rec) as runtime:
        team: Team
        if kind == "round-robin":
            team = RoundRobinGroupChat(agents, runtime=runtime, max_turns=8)
        else:
            team = SelectorGroupChat(agents, selector, runtime=runtime, max_turns=8)
        result = await run(team)
    assert result.stop_reason and "Maximum number of turns" in result.stop_reason
    check_contained(result, clients, rec)
    if kind == "selector":  # the manager's model reads the governed thread too
        picks = model_inputs(selector)
        assert "$15M" not in picks and "churn was 7%" not in picks and "withheld" in picks
    # Alerts for both, naming the decisions the peers were told about.
    by_kind = {a.kind: a for a in gov.alerts}
    red = next(r for e, r in rec.seen if e.sender == "analyst")
    held = next(r for e, r in rec.seen if e.sender == "gossip")
    assert by_kind["red-claim"].decision_id == red.decision_id
    assert by_kind["contained-claim"].decision_id == held.decision_id
    # The feedback went to the sender alone, before its next turn (the retry).
    feedback = [
        m
        for c in clients["gossip"].create_calls[1:]
        for m in c["messages"]
        if getattr(m, "source", None) == "ostracon"
    ]
    assert len(feedback) == 1 and "held your message" in feedback[0].content
    assert "blocked your message" in model_inputs(clients["analyst"])
    assert "your message" not in model_inputs(clients["writer"])


async def test_a_blocklisted_agent_cannot_delegate_and_its_turn_is_rerouted() -> None:
    gov = InProcessGovernor(Config(blocklist=BlocklistConfig(agents={"mallory": "forged data"})))
    rec = Recorder()
    planner = replay(call("transfer_to_mallory"), "I will draft it myself. TERMINATE")
    mallory = replay(call("transfer_to_writer", thought=f"{RED_TEXT} Writer, publish this."))
    writer = replay(f"{RED_TEXT} TERMINATE")
    agents: list[ChatAgent] = [
        AssistantAgent("planner", planner, handoffs=["mallory"]),
        AssistantAgent("mallory", mallory, handoffs=["writer"]),
        AssistantAgent("writer", writer),
    ]
    runtime = governed_runtime(gov, on_ruling=rec)
    runtime.start()
    team = Swarm(agents, runtime=runtime, termination_condition=TextMentionTermination("TERMINATE"))
    result = await run(team)
    await runtime.stop_when_idle()

    assert not writer.create_calls, "the blocked agent's handoff reached its target"
    handoffs = [m for m in result.messages if isinstance(m, HandoffMessage)]
    assert [(m.source, m.target) for m in handoffs] == [
        ("planner", "mallory"),
        ("mallory", "planner"),  # rerouted to the agent that handed off to it
    ]
    assert handoffs[1].context == [] and "blocklisted: forged data" in handoffs[1].content
    assert "$15M" not in model_inputs(planner)
    rulings = [r for e, r in rec.seen if e.sender == "mallory"]
    assert rulings and all(r.verdict is Verdict.BLOCK and r.blocklisted for r in rulings)
    assert "blocklisted" in {a.kind for a in gov.alerts}
    assert result.messages[-1].source == "planner"


async def test_a_blocklisted_agent_cannot_steer_a_round_robin() -> None:
    gov = InProcessGovernor(Config(blocklist=BlocklistConfig(agents={"mallory": "forged data"})))
    mallory = replay(f"{RED_TEXT} TERMINATE", "TERMINATE now.")
    writer = replay("Waiting for the finance figures.", "TERMINATE")
    # Manual wiring: a runtime of one's own with the handler.
    handler = OstraconIntervention(gov)
    runtime = SingleThreadedAgentRuntime(intervention_handlers=[handler])
    handler.runtime = runtime
    runtime.start()
    team = RoundRobinGroupChat(
        [AssistantAgent("mallory", mallory), AssistantAgent("writer", writer)],
        runtime=runtime,
        termination_condition=TextMentionTermination("TERMINATE"),
        max_turns=6,
    )
    result = await run(team)
    await runtime.stop_when_idle()
    # Its "TERMINATE" never reached the termination condition: the team went on.
    assert len(writer.create_calls) == 2 and "$15M" not in model_inputs(writer)
    assert [m.source for m in result.messages] == ["user", "mallory", "writer", "mallory", "writer"]
    mine = [m for m in result.messages if m.source == "mallory"]
    assert all(isinstance(m, TextMessage) and "blocklisted" in m.content for m in mine)


async def test_tags_are_shown_to_the_receiving_agents_when_configured() -> None:
    gov = InProcessGovernor(Config(containment=ContainmentConfig(policy="low-intervention")))
    gossip = replay(YELLOW_TEXT)
    writer = replay("Noted.")
    async with governed(gov, show_tags=True) as runtime:
        team = RoundRobinGroupChat(
            [AssistantAgent("gossip", gossip), AssistantAgent("writer", writer)],
            runtime=runtime,
            max_turns=2,
        )
        await run(team)
    seen = model_inputs(writer)
    assert YELLOW_TEXT in seen and "[ostracon: unverified: churn customer]" in seen


class Broken(Governor):
    def __init__(self, fail: str) -> None:
        self.fail = fail

    async def rule(self, env: Envelope) -> Ruling:
        raise ConnectionError("governor down")


@pytest.mark.parametrize("fail", ["closed", "open"])
async def test_a_failing_governor_never_stalls_the_team(fail: str) -> None:
    talker = replay(YELLOW_TEXT)
    listener = replay("Noted.")
    async with governed(Broken(fail)) as runtime:
        team = RoundRobinGroupChat(
            [AssistantAgent("talker", talker), AssistantAgent("listener", listener)],
            runtime=runtime,
            max_turns=2,
        )
        result = await run(team)
    seen = model_inputs(listener)
    if fail == "closed":
        assert YELLOW_TEXT not in seen and "withheld (quarantine)" in seen
        assert "governor down" in result.messages[1].to_text()
    else:
        assert YELLOW_TEXT in seen


async def test_each_team_is_its_own_conversation() -> None:
    gov = InProcessGovernor()
    rec = Recorder()
    async with governed(gov, on_ruling=rec) as runtime:
        for _ in range(2):  # two teams on one runtime
            solo: list[ChatAgent | Team] = [AssistantAgent("a", replay("Hello."))]
            await run(RoundRobinGroupChat(solo, runtime=runtime, max_turns=1))
    convs = [e.conversation for e, _ in rec.seen]
    assert len(convs) == 4 and len(set(convs)) == 2
    assert all(c.startswith("autogen-") for c in convs)


async def test_a_withheld_handoff_still_hands_off_without_its_context() -> None:
    gov = InProcessGovernor(strict())
    rec = Recorder()
    # The claim rides in the model context that a handoff passes to its target.
    analyst = replay(call("transfer_to_writer", thought=f"{YELLOW_TEXT} Tell the board."))
    writer = replay("Noted. TERMINATE")
    agents: list[ChatAgent] = [
        AssistantAgent("analyst", analyst, handoffs=["writer"]),
        AssistantAgent("writer", writer),
    ]
    async with governed(gov, on_ruling=rec) as runtime:
        stop = TextMentionTermination("TERMINATE")
        result = await run(Swarm(agents, runtime=runtime, termination_condition=stop))
    handoff = next(m for m in result.messages if isinstance(m, HandoffMessage))
    assert handoff.target == "writer" and handoff.context == []
    assert "withheld (hold)" in handoff.content
    assert writer.create_calls and "churn was 7%" not in model_inputs(writer)
    assert YELLOW_TEXT in next(e.content for e, _ in rec.seen if e.id == handoff.id)
