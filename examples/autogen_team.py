"""An AutoGen team behind ostracon, no LLM: replayed models, the in-process backend.

A fetcher reads Q3 revenue from a tool ($12M); an analyst contradicts it ($15M, Red: blocked),
a gossip states an unsourced churn figure (Yellow: held under policy strict), a writer
summarises. Run: ``python examples/autogen_team.py``.
"""

from __future__ import annotations

import asyncio
import logging

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, Team
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

from ostracon.adapters.autogen import governed
from ostracon.adapters.governor import InProcessGovernor, Ruling
from ostracon.config import Config, ContainmentConfig
from ostracon.envelope import Envelope

# The replay model logs a token-count note per call on this logger.
logging.getLogger("autogen_core.events").setLevel(logging.ERROR)

INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def query_finance(quarter: str) -> str:
    """The finance database: revenue for a quarter."""
    return f"{quarter} revenue was $12M."


def model(*turns: str | CreateResult) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(turns), model_info=INFO)


async def main() -> None:
    governor = InProcessGovernor(Config(containment=ContainmentConfig(policy="strict")))
    tool_turn = CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id="c1", name="query_finance", arguments='{"quarter": "Q3"}')],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )
    writer_model = model("Board summary: Q3 revenue was $12M.", "Summary stands.")
    agents: list[ChatAgent | Team] = [
        AssistantAgent("fetcher", model(tool_turn, "Nothing new."), tools=[query_finance]),
        AssistantAgent("analyst", model("Q3 revenue was $15M.", "Corrected: it was $12M.")),
        AssistantAgent("gossip", model("Customer churn was 7%.", "I have no source for it.")),
        AssistantAgent("writer", writer_model),
    ]

    def show(env: Envelope, ruling: Ruling) -> None:
        print(f"  {ruling.verdict.value:<14} {env.sender:<8} {env.kind.value:<11} {env.content!r}")

    print("Rulings (what each agent said, and the verdict):")
    async with governed(governor, on_ruling=show) as runtime:  # the one call
        team = RoundRobinGroupChat(agents, runtime=runtime, max_turns=8)
        result = await team.run(task="Prepare the Q3 board summary.")

    print("\nWhat the team saw:")
    for m in result.messages:
        print(f"  {m.source:<8} {type(m).__name__:<22} {m.to_text()[:110]}")
    print("\nWhat the writer's model was given on its last turn:")
    for m in writer_model.create_calls[-1]["messages"][1:]:
        print(f"  {getattr(m, 'source', '?'):<8} {str(m.content)[:110]}")
    print("\nAlerts:")
    for a in governor.alerts:
        print(f"  {a.severity.value:<8} {a.kind:<16} {a.summary} ({a.decision_id})")


if __name__ == "__main__":
    asyncio.run(main())
