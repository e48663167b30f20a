"""A LangGraph team behind ostracon, with no LLM: fake chat models, in-process governor.

    python examples/langgraph_team.py

researcher -> tools (finance tool: "Q3 revenue was $12M.") -> analyst -> writer -> reviewer.
The analyst first says $15M (contradicts the tool: Red, blocked; it gets the feedback and
corrects itself), the writer says churn was 7% (unverified: held under policy strict). The
reviewer's input shows what got through.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph, add_messages
from langgraph.prebuilt import ToolNode

from ostracon.adapters.governor import InProcessGovernor, Ruling
from ostracon.adapters.langgraph import govern
from ostracon.config import Config, ContainmentConfig
from ostracon.envelope import Envelope


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@tool
def get_revenue(quarter: str) -> str:
    """Revenue of a quarter, from the finance system."""
    return f"{quarter} revenue was $12M."


reviewer_input: list[AnyMessage] = []


def agent(*replies: str | AIMessage, record: bool = False) -> Any:
    model = GenericFakeChatModel(messages=iter(replies))  # replays its replies in order

    def node(state: State) -> dict[str, Any]:
        if record:
            reviewer_input.extend(state["messages"])
        return {"messages": [model.invoke(state["messages"])]}

    return node


def show(env: Envelope, ruling: Ruling) -> None:
    text = env.content.replace("\n", " ")[:48]
    print(f"  {env.sender:<10} {env.kind.value:<11} {ruling.verdict.value:<14} {text!r}")
    if ruling.reason:
        print(f"  {'':<10} {'':<11} -> {ruling.reason}")


def main() -> None:
    ask = AIMessage("", tool_calls=[{"name": "get_revenue", "args": {"quarter": "Q3"}, "id": "c1"}])
    builder = StateGraph(State)
    builder.add_node("researcher", agent(ask))
    builder.add_node("tools", ToolNode([get_revenue]))
    builder.add_node("analyst", agent("Q3 revenue was $15M.", "Q3 revenue was $12M."))
    builder.add_node("writer", agent("Customer churn was 7%.", "Customer churn was 7%."))
    builder.add_node("reviewer", agent("Reviewed the summary; ready for the board.", record=True))
    for a, b in [
        (START, "researcher"),
        ("researcher", "tools"),
        ("tools", "analyst"),
        ("analyst", "writer"),
        ("writer", "reviewer"),
        ("reviewer", END),
    ]:
        builder.add_edge(a, b)

    gov = InProcessGovernor(Config(containment=ContainmentConfig(policy="strict")))
    graph = govern(builder, gov, on_ruling=show).compile()  # the one call

    print("rulings:")
    graph.invoke(
        {"messages": [("user", "Prepare the Q3 board summary.")]},
        {"configurable": {"thread_id": "q3-board"}},
    )
    print("\nwhat the reviewer's model was given:")
    for m in reviewer_input:
        print(f"  {type(m).__name__:<12} {m.text[:110]!r}")
    print("\nalerts:")
    for alert in gov.alerts:
        print(f"  {alert.severity.value:<8} {alert.kind:<16} {alert.summary} ({alert.decision_id})")


if __name__ == "__main__":
    main()
