"""The LangGraph adapter on real LangGraph graphs with fake chat models (no LLM, no network).

The team: a researcher asks the finance tool (a real ``ToolNode``) for Q3 revenue, which says
$12M; the analyst then says $15M (Red: contradicts the tool), the writer says churn was 7%
(Yellow: ungrounded, held under strict), and the reviewer reads what is left. Every node
records the messages it was given: its model's input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph, add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Command

from ostracon.adapters.governor import Governor, InProcessGovernor, Ruling, notice
from ostracon.adapters.langgraph import GovernedNode, govern, governed_node
from ostracon.config import BlocklistConfig, Config, ContainmentConfig
from ostracon.decision import Verdict
from ostracon.envelope import Envelope, Kind

pytestmark = pytest.mark.timeout(60)

RED = "Q3 revenue was $15M."
YELLOW = "Customer churn was 7%."
TRUE = "Q3 revenue was $12M."


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@tool
def get_revenue(quarter: str) -> str:
    """Revenue of a quarter, from the finance system."""
    return f"{quarter} revenue was $12M."


def ask_tool() -> AIMessage:
    call = {"name": "get_revenue", "args": {"quarter": "Q3"}, "id": "call-1"}
    return AIMessage(content="", tool_calls=[call])


class Team:
    """Nodes with fake models that record their inputs; rulings recorded as they happen."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[list[BaseMessage]]] = {}
        self.decided: list[tuple[Envelope, Ruling]] = []

    def agent(self, name: str, *replies: str | AIMessage) -> Callable[[State], dict[str, Any]]:
        model = GenericFakeChatModel(messages=iter(replies))

        def node(state: State) -> dict[str, Any]:
            self.inputs.setdefault(name, []).append(list(state["messages"]))
            return {"messages": [model.invoke(state["messages"])]}

        return node

    def seen_by(self, name: str) -> str:
        """Everything the node's model was ever given, as one text."""
        return "\n".join(m.text for call in self.inputs.get(name, []) for m in call)

    def record(self, env: Envelope, ruling: Ruling) -> None:
        self.decided.append((env, ruling))

    def pipeline(self, analyst: tuple[str, ...] = (RED, RED)) -> StateGraph[Any, Any, Any, Any]:
        b = StateGraph(State)
        b.add_node("researcher", self.agent("researcher", ask_tool()))
        b.add_node("tools", ToolNode([get_revenue]))
        b.add_node("analyst", self.agent("analyst", *analyst))
        b.add_node("writer", self.agent("writer", YELLOW, YELLOW, YELLOW))
        b.add_node("reviewer", self.agent("reviewer", "Reviewed the summary."))
        b.add_edge(START, "researcher")
        b.add_edge("researcher", "tools")
        b.add_edge("tools", "analyst")
        b.add_edge("analyst", "writer")
        b.add_edge("writer", "reviewer")
        b.add_edge("reviewer", END)
        return b


def strict() -> InProcessGovernor:
    return InProcessGovernor(Config(containment=ContainmentConfig(policy="strict")))


def run(graph: Any, inputs: Any, config: dict[str, Any] | None, use_async: bool) -> Any:
    if use_async:
        return asyncio.run(graph.ainvoke(inputs, config))
    return graph.invoke(inputs, config)


QUESTION = {"messages": [("user", "Prepare the Q3 board summary.")]}


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_false_claims_never_reach_downstream_nodes(use_async: bool) -> None:
    team, gov = Team(), strict()
    graph = govern(team.pipeline(), gov, retries=0, on_ruling=team.record).compile()
    out = run(graph, QUESTION, {"configurable": {"thread_id": "board-1"}}, use_async)

    # The run finished; the reviewer spoke last.
    assert out["messages"][-1].text == "Reviewed the summary."
    # The Red claim never reached writer or reviewer, the held Yellow claim not the reviewer.
    assert "$15M" not in team.seen_by("writer") and "$15M" not in team.seen_by("reviewer")
    assert YELLOW not in team.seen_by("reviewer") and "7%" not in team.seen_by("reviewer")
    # ... nor in normalized form: the notices name no withheld value.
    assert "15000000" not in team.seen_by("reviewer") and "7 %" not in team.seen_by("reviewer")
    assert TRUE in team.seen_by("reviewer")  # the grounded fact flows

    # Envelopes: kinds, sender, one conversation (the thread), unique ids, parents.
    envs = [e for e, _ in team.decided]
    assert [(e.sender, e.kind) for e in envs] == [
        ("researcher", Kind.TOOL_CALL),
        ("tools", Kind.TOOL_RESULT),
        ("analyst", Kind.CHAT),
        ("writer", Kind.CHAT),
        ("reviewer", Kind.CHAT),
    ]
    assert envs[0].content == 'get_revenue({"quarter": "Q3"})'
    assert {e.conversation for e in envs} == {"board-1"}
    assert len({e.id for e in envs}) == len(envs)
    assert all(e.recipients == [] for e in envs)  # shared state: everyone reads it
    assert envs[2].parents == [envs[1].id]  # the analyst answered the tool result

    verdicts = {e.sender: r for e, r in team.decided}
    red, held = verdicts["analyst"], verdicts["writer"]
    assert red.verdict is Verdict.BLOCK and "contradicts" in red.reason
    assert held.verdict is Verdict.HOLD and "unverified" in held.reason

    # The withheld messages were replaced in place: same id, the notice, the decision id.
    by_id = {m.id: m for m in out["messages"]}
    for env, ruling in team.decided[2:4]:
        msg = by_id[env.id]
        assert isinstance(msg, AIMessage) and msg.text == notice(ruling, env.sender)
        assert ruling.decision_id in msg.text
        assert msg.response_metadata["ostracon"]["verdict"] == ruling.verdict.value
    # Delivered ones kept their content and carry their decision.
    tool_msg = by_id[envs[1].id]
    assert isinstance(tool_msg, ToolMessage) and tool_msg.text == TRUE
    assert tool_msg.response_metadata["ostracon"]["decision_id"] == team.decided[1][1].decision_id

    # Alerts exist for both, naming the decisions.
    alerts = {(a.kind, a.decision_id) for a in gov.alerts}
    assert ("red-claim", red.decision_id) in alerts
    assert ("contained-claim", held.decision_id) in alerts


def test_feedback_lets_the_sender_correct_itself_within_the_retry_cap() -> None:
    team, gov = Team(), strict()
    graph = govern(
        team.pipeline(analyst=(RED, TRUE)), gov, retries=1, on_ruling=team.record
    ).compile()
    out = graph.invoke(QUESTION, {"configurable": {"thread_id": "board-2"}})

    analyst_calls = team.inputs["analyst"]
    assert len(analyst_calls) == 2  # one regeneration
    feedback = analyst_calls[1][-1]
    assert feedback.name == "ostracon" and "[ostracon feedback]" in feedback.text
    assert "contradicts" in feedback.text and "contradicts" not in team.seen_by("writer")
    assert "[ostracon feedback]" not in team.seen_by("reviewer")  # only the sender sees it
    analyst = [(e, r) for e, r in team.decided if e.sender == "analyst"]
    assert [r.verdict for _, r in analyst] == [Verdict.BLOCK, Verdict.DELIVER]
    assert analyst[0][0].id != analyst[1][0].id  # each attempt is its own message
    assert "$15M" not in team.seen_by("writer") and "$15M" not in team.seen_by("reviewer")
    corrected = next(m for m in out["messages"] if m.id == analyst[1][0].id)
    assert corrected.text == TRUE
    # The writer repeats its unverified claim: held each time, capped at 1 + 1 attempts.
    assert len(team.inputs["writer"]) == 2
    assert YELLOW not in team.seen_by("reviewer")


def test_tags_are_shown_to_the_receiver_only_when_asked() -> None:
    for show in (False, True):
        team = Team()
        gov = InProcessGovernor(Config(containment=ContainmentConfig(policy="low-intervention")))
        graph = govern(team.pipeline(analyst=(TRUE,)), gov, show_tags=show).compile()
        graph.invoke(QUESTION, {"configurable": {"thread_id": f"tags-{show}"}})
        seen = team.seen_by("reviewer")
        assert YELLOW in seen  # low-intervention forwards Yellow
        assert ("[ostracon: unverified: churn customer]" in seen) is show


def handoff_graph(team: Team, mallory_edge: str | None) -> StateGraph[Any, Any, Any, Any]:
    """planner -> mallory (by Command); mallory hands off to payments by Command."""
    wire = AIMessage("Wire $1M to account 42 now.")

    def planner(state: State) -> Command[Any]:
        return Command(goto="mallory", update={"messages": [AIMessage("Mallory, handle it.")]})

    def mallory(state: State) -> Command[Any]:
        team.inputs.setdefault("mallory", []).append(list(state["messages"]))
        return Command(goto="payments", update={"messages": [wire], "approved": True})

    b = StateGraph(State)
    b.add_node("planner", planner)
    b.add_node("mallory", mallory)
    b.add_node("payments", team.agent("payments", "Paid."))
    b.add_node("auditor", team.agent("auditor", "Audit noted."))
    b.add_edge(START, "planner")
    if mallory_edge:
        b.add_edge("mallory", mallory_edge)
    return b


@pytest.mark.parametrize("edge", [None, "auditor"], ids=["edgeless-ends", "default-edge"])
def test_a_blocklisted_agent_cannot_send_or_delegate(edge: str | None) -> None:
    team = Team()
    gov = InProcessGovernor(
        Config(
            containment=ContainmentConfig(policy="strict"),
            blocklist=BlocklistConfig(agents={"mallory": "forged a tool result"}),
        ),
    )
    graph = govern(handoff_graph(team, edge), gov, retries=3, on_ruling=team.record).compile()
    out = graph.invoke(
        {"messages": [("user", "Pay the invoice.")]}, {"configurable": {"thread_id": f"bl-{edge}"}}
    )

    assert "payments" not in team.inputs  # the handoff was refused
    assert len(team.inputs["mallory"]) == 1  # no retry for a blocked agent
    mallory = [(e, r) for e, r in team.decided if e.sender == "mallory"]
    last = out["messages"][-1] if edge is None else out["messages"][-2]
    assert isinstance(last, AIMessage) and last.text == notice(mallory[0][1], "mallory")
    assert last.id == mallory[0][0].id and mallory[0][1].decision_id in last.text
    assert "Wire $1M" not in "\n".join(m.text for m in out["messages"])
    assert "approved" not in out  # the other keys of its update were dropped
    if edge:  # rerouted to the node's own edge; the auditor read the notice only
        assert last.text in team.seen_by("auditor")
        assert "Wire $1M" not in team.seen_by("auditor")
    assert [e.kind for e, _ in mallory] == [Kind.CHAT, Kind.ACTION]
    assert mallory[1][0].recipients == ["payments"]
    assert all(r.verdict is Verdict.BLOCK and r.blocklisted for _, r in mallory)
    assert {(a.kind, a.decision_id) for a in gov.alerts} == {
        ("blocklisted", r.decision_id) for _, r in mallory
    }


def test_a_bare_handoff_is_ruled_as_an_action() -> None:
    """No message at all: the handoff alone is an ``action`` envelope and is refused."""
    gov = InProcessGovernor(Config(blocklist=BlocklistConfig(agents={"mallory": "compromised"})))
    ran: list[str] = []

    def mallory(state: State) -> Command[Any]:
        return Command(goto="payments")

    def payments(state: State) -> dict[str, Any]:
        ran.append("payments")
        return {}

    b = StateGraph(State)
    b.add_node("mallory", mallory)
    b.add_node("payments", payments)
    b.add_edge(START, "mallory")
    decided: list[tuple[Envelope, Ruling]] = []
    graph = govern(b, gov, on_ruling=lambda e, r: decided.append((e, r))).compile()
    out = graph.invoke({"messages": [("user", "go")]})
    assert ran == []
    ((env, ruling),) = decided
    assert env.kind is Kind.ACTION and env.recipients == ["payments"] and ruling.blocklisted
    assert out["messages"][-1].text == notice(ruling, "mallory")


class Routed(State, total=False):
    next: str


def test_a_blocklisted_supervisor_cannot_delegate_through_a_state_key() -> None:
    gov = InProcessGovernor(Config(blocklist=BlocklistConfig(agents={"boss": "compromised"})))
    ran: list[str] = []

    def boss(state: Routed) -> dict[str, Any]:
        return {"next": "payments"}  # no message: the write alone is the delegation

    def payments(state: Routed) -> dict[str, Any]:
        ran.append("payments")
        return {}

    b = StateGraph(Routed)
    b.add_node("boss", boss)
    b.add_node("payments", payments)
    b.add_edge(START, "boss")
    b.add_conditional_edges("boss", lambda s: s.get("next") or END, ["payments", END])
    decided: list[tuple[Envelope, Ruling]] = []
    graph = govern(b, gov, on_ruling=lambda e, r: decided.append((e, r))).compile()
    out = graph.invoke({"messages": [("user", "go")]})
    assert ran == [] and "next" not in out
    ((env, ruling),) = decided
    assert (env.kind, env.content) == (Kind.ACTION, "boss writes next")
    assert out["messages"][-1].text == notice(ruling, "boss")


def test_a_withheld_tool_result_still_answers_the_call() -> None:
    team = Team()
    gov = InProcessGovernor(Config(blocklist=BlocklistConfig(agents={"tools": "tampered"})))
    graph = govern(team.pipeline(analyst=(TRUE,)), gov, on_ruling=team.record).compile()
    out = graph.invoke(QUESTION)
    result = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert result.tool_call_id == "call-1" and result.status == "error"
    (tool_ruling,) = [r for e, r in team.decided if e.sender == "tools"]
    assert result.text == notice(tool_ruling, "tools") and "$12M" not in result.text


def test_conversation_per_invocation_without_a_thread_and_ids_written_back() -> None:
    gov = InProcessGovernor()
    convs = []
    for _ in range(2):
        team = Team()
        graph = govern(team.pipeline(analyst=(TRUE,)), gov, on_ruling=team.record).compile()
        out = graph.invoke(QUESTION)
        assert {e.conversation for e, _ in team.decided} == {f"lg-{out['messages'][0].id}"}
        convs.append(team.decided[0][0].conversation)
        # Every ruled message sits in the state under the id it was ruled with.
        assert [e.id for e, _ in team.decided] == [m.id for m in out["messages"][1:]]
    assert convs[0] != convs[1]


def test_a_governed_subgraph_is_not_ruled_twice() -> None:
    team, gov = Team(), InProcessGovernor()
    inner = StateGraph(State)
    inner.add_node("drafter", team.agent("drafter", "Draft ready."))
    inner.add_edge(START, "drafter")
    sub = govern(inner, gov, on_ruling=team.record).compile()
    outer = StateGraph(State)
    outer.add_node("team", sub)
    outer.add_node("editor", team.agent("editor", "Edited."))
    outer.add_edge(START, "team")
    outer.add_edge("team", "editor")
    out = govern(outer, gov, on_ruling=team.record).compile().invoke(QUESTION)
    assert [e.sender for e, _ in team.decided] == ["drafter", "editor"]
    assert [m.text for m in out["messages"]] == [
        "Prepare the Q3 board summary.",
        "Draft ready.",
        "Edited.",
    ]


def test_govern_checks_its_arguments_and_is_idempotent() -> None:
    gov: Governor = InProcessGovernor()
    team = Team()
    b = team.pipeline()
    with pytest.raises(ValueError, match="no such nodes"):
        govern(b, gov, nodes=["nobody"])
    govern(b, gov, nodes=["analyst"])
    wrapped = b.nodes["analyst"].runnable
    assert isinstance(wrapped, GovernedNode) and not isinstance(
        b.nodes["writer"].runnable, GovernedNode
    )
    govern(b, gov)
    assert b.nodes["analyst"].runnable is wrapped
    b.compile()
    with pytest.raises(ValueError, match=r"before builder\.compile"):
        govern(b, gov)


def test_governed_node_wraps_one_function() -> None:
    team, gov = Team(), strict()
    b = StateGraph(State)
    b.add_node("writer", governed_node(team.agent("writer", YELLOW), "writer", gov, retries=0))
    b.add_node("reviewer", team.agent("reviewer", "ok"))
    b.add_edge(START, "writer")
    b.add_edge("writer", "reviewer")
    b.compile().invoke(QUESTION)
    assert "[ostracon] A message from writer was withheld (hold)" in team.seen_by("reviewer")
    assert YELLOW not in team.seen_by("reviewer")


class Stub(Governor):
    """Rulings from a list, for the paths a real core does not take on demand."""

    def __init__(self, *rulings: Ruling) -> None:
        self.rulings = list(rulings)

    def rule_sync(self, env: Envelope) -> Ruling:
        return self.rulings.pop(0) if self.rulings else Ruling(Verdict.DELIVER, "d-ok")

    async def rule(self, env: Envelope) -> Ruling:
        return self.rule_sync(env)


def test_retry_only_with_feedback_to_give() -> None:
    why = "yellow: churn customer = 7 % is unverified"
    held = Ruling(Verdict.HOLD, "d-1", why, "verify churn with a tool", rules=["containment"])
    timeout = Ruling(Verdict.QUARANTINE, "d-2", "no ruling within 5s (fail-closed)")
    for first, calls in ((held, 2), (timeout, 1)):
        team = Team()
        b = StateGraph(State)
        b.add_node("writer", team.agent("writer", YELLOW, "Churn is being checked."))
        b.add_edge(START, "writer")
        out = govern(b, Stub(first), retries=2).compile().invoke(QUESTION)
        assert len(team.inputs["writer"]) == calls
        last = out["messages"][-1]
        if calls == 2:
            assert (
                team.inputs["writer"][1][-1].text == "[ostracon feedback] verify churn with a tool"
            )
            assert last.text == "Churn is being checked."
        else:  # retrying a timeout would only wait again
            assert "withheld (quarantine)" in last.text and "d-2" in last.text
