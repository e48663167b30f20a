"""A CrewAI team behind ostracon: no LLM, no network, in-process backend.

    python examples/crewai_team.py

The researcher looks up Q3 revenue with a tool ($12M) but reports $15M (Red: contradicts the
tool), then corrects itself when ostracon sends its feedback back through CrewAI's guardrail
retry. The analyst states an unverified churn figure twice (Yellow, held under policy strict).
The writer only ever sees the grounded figure and ostracon's notices.
"""

from __future__ import annotations

import logging
import os
import tempfile

# Before crewai is imported: keep it offline and out of the real home directory.
_home = tempfile.mkdtemp(prefix="ostracon-crewai-")
os.environ.update(
    CREWAI_DISABLE_TELEMETRY="true",
    CREWAI_TRACING_ENABLED="false",
    CREWAI_DISABLE_VERSION_CHECK="true",
    OTEL_SDK_DISABLED="true",
    HOME=_home,
    CREWAI_STORAGE_DIR=_home,
)

from typing import Any  # noqa: E402

from crewai import Agent, Crew, CrewOutput, Process, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import tool  # noqa: E402
from pydantic import Field  # noqa: E402

from ostracon.adapters.crewai import governed  # noqa: E402
from ostracon.adapters.governor import InProcessGovernor, Ruling  # noqa: E402
from ostracon.config import Config, ContainmentConfig  # noqa: E402
from ostracon.envelope import Envelope  # noqa: E402

logging.getLogger("crewai").setLevel(logging.ERROR)  # a stand-in model has no token counter


class Scripted(BaseLLM):
    """A stand-in model: answers from a script, remembers what it was shown."""

    answers: list[str] = Field(default_factory=list)
    shown: list[str] = Field(default_factory=list)  # per call: everything the model was shown

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        self.shown.append("\n".join(str(m.get("content", "")) for m in messages))
        return self.answers.pop(0) if self.answers else "Final Answer: (done)"

    def supports_function_calling(self) -> bool:
        return False


@tool("revenue_lookup")
def revenue_lookup(quarter: str) -> str:
    """Look up a quarter's revenue in the finance system."""
    return f"{quarter} revenue was $12M."


def answer(text: str) -> str:
    return f"Thought: I know it.\nFinal Answer: {text}"


def main() -> None:
    researcher_llm = Scripted(
        model="scripted",
        answers=[
            'Thought: check.\nAction: revenue_lookup\nAction Input: {"quarter": "Q3"}',
            answer("Q3 revenue was $15M."),
            answer("Q3 revenue was $12M."),
        ],
    )
    analyst_llm = Scripted(model="scripted", answers=[answer("Customer churn was 7%.")] * 2)
    writer_llm = Scripted(model="scripted", answers=[answer("Board summary: Q3 revenue was $12M.")])
    agents: list[Any] = [
        Agent(role=role, goal=f"Act as the {role}.", backstory="Team member.", llm=llm, tools=t)
        for role, llm, t in (
            ("Researcher", researcher_llm, [revenue_lookup]),
            ("Analyst", analyst_llm, []),
            ("Writer", writer_llm, []),
        )
    ]
    tasks = [
        Task(description=d, expected_output="a short text", agent=a)
        for d, a in zip(
            ("Find the Q3 revenue.", "Estimate customer churn.", "Write the board summary."),
            agents,
            strict=True,
        )
    ]
    crew = Crew(agents=agents, tasks=tasks, process=Process.sequential)

    governor = InProcessGovernor(Config(containment=ContainmentConfig(policy="strict")))

    def show(env: Envelope, ruling: Ruling) -> None:
        first_line = env.content.splitlines()[0] if env.content else ""
        print(
            f"  {env.id:<4} {env.sender:<20} {env.kind.value:<11} -> {ruling.verdict.value:<14}"
            f" {first_line[:48]}"
        )
        if ruling.reason:
            print(f"       {ruling.reason} ({ruling.decision_id})")

    print("Messages and rulings:")
    with governed(governor, on_ruling=show, retries=1) as adapter:
        result = crew.kickoff()
    assert isinstance(result, CrewOutput)

    print(f"\nConversation: {adapter.conversations[0]}")
    print("\nAlerts:")
    for alert in governor.alerts:
        print(f"  {alert.kind:<16} {alert.summary}")
    writer_saw = "\n".join(writer_llm.shown)
    context = writer_llm.shown[0].split("This is the context you're working with:")[-1]
    context = context.split("Provide your complete response:")[0].strip()
    print("\nThe writer's context:\n  " + context.replace("\n", "\n  "))
    print(f"\nWriter saw '$15M': {'$15M' in writer_saw}; saw the churn claim: {'7%' in writer_saw}")
    print(f"Final output: {result.raw}")


if __name__ == "__main__":
    main()
