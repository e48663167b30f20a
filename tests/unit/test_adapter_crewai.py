"""The CrewAI adapter with the in-process backend: a real crew, canned models, no network.

The team: a researcher with a revenue tool, an analyst, a reviewer that may delegate, and a
writer. Each agent's model is a :class:`Canned` ``BaseLLM`` that records every message list it
was called with, so the tests can assert what each agent saw.
"""

from __future__ import annotations

import os

# Before crewai is imported: no telemetry, tracing prompts or version checks (they stall and
# try the network).
os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["CREWAI_TRACING_ENABLED"] = "false"
os.environ["CREWAI_DISABLE_VERSION_CHECK"] = "true"
os.environ["OTEL_SDK_DISABLED"] = "true"

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crewai import Agent, Crew, CrewOutput, Process, Task
from crewai.hooks import InterceptionPoint, get_hooks
from crewai.llms.base_llm import BaseLLM
from crewai.tools import tool
from pydantic import Field

from ostracon.adapters.crewai import governed, install
from ostracon.adapters.governor import Governor, InProcessGovernor, Ruling
from ostracon.config import BlocklistConfig, Config, ContainmentConfig
from ostracon.decision import Verdict
from ostracon.envelope import Envelope, Kind

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai.*"),
]

FALSE_CHURN = "Customer churn was 7%."
TOOL_FACT = "Q3 revenue was $12M."
FALSE_REVENUE = "Q3 revenue was $15M."


class Canned(BaseLLM):
    """A model with scripted answers (ReAct text) that records what it was asked."""

    answers: list[str] = Field(default_factory=list)
    calls: list[list[dict[str, Any]]] = Field(default_factory=list)

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
        self.calls.append([dict(m) for m in msgs])
        if not self.answers:  # out of script: finish rather than loop
            return "Thought: done\nFinal Answer: (no more scripted answers)"
        return self.answers.pop(0)

    async def acall(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        return self.call(messages, *args, **kwargs)

    def supports_function_calling(self) -> bool:
        return False  # ReAct text: "Action: ... / Final Answer: ..."

    def seen(self) -> str:
        """Everything this model was ever shown."""
        return "\n".join(str(m.get("content", "")) for call in self.calls for m in call)


def final(text: str) -> str:
    return f"Thought: I know the answer.\nFinal Answer: {text}"


def action(name: str, args: str) -> str:
    return f"Thought: I need help.\nAction: {name}\nAction Input: {args}"


@tool("revenue_lookup")
def revenue_lookup(quarter: str) -> str:
    """Look up a quarter's revenue in the finance system."""
    return f"{quarter} revenue was $12M."


class Team:
    """Four agents, four sequential tasks; ``llm[role]`` is each agent's canned model."""

    def __init__(
        self,
        researcher: list[str],
        analyst: list[str],
        reviewer: list[str],
        writer: list[str] | None = None,
    ) -> None:
        self.llm = {
            "Researcher": Canned(model="model-r", answers=researcher),
            "Analyst": Canned(model="model-a", answers=analyst),
            "Reviewer": Canned(model="model-v", answers=reviewer),
            "Writer": Canned(model="model-w", answers=writer or [final("Board summary ready.")]),
        }
        agents = {
            role: Agent(
                role=role,
                goal=f"Do the {role.lower()}'s part of the Q3 board summary.",
                backstory="A careful team member.",
                llm=llm,
                tools=[revenue_lookup] if role == "Researcher" else [],
                allow_delegation=role == "Reviewer",
                max_iter=5,
            )
            for role, llm in self.llm.items()
        }
        self.tasks = [
            Task(description="Find the Q3 revenue.", expected_output="a figure", agent=agents[r])
            for r in ("Researcher",)
        ] + [
            Task(description=f"{what}", expected_output="a short text", agent=agents[r])
            for r, what in (
                ("Analyst", "Estimate customer churn."),
                ("Reviewer", "Review the findings."),
                ("Writer", "Write the board summary."),
            )
        ]
        self.crew = Crew(agents=list(agents.values()), tasks=self.tasks, process=Process.sequential)

    def kickoff(self) -> CrewOutput:
        return run(self.crew)

    def downstream(self, *roles: str) -> str:
        return "\n".join(self.llm[r].seen() for r in roles)


def run(crew: Crew) -> CrewOutput:
    out = crew.kickoff()
    assert isinstance(out, CrewOutput)  # not streaming
    return out


LOOKUP = action("revenue_lookup", '{"quarter": "Q3"}')
DELEGATE = action(
    "Delegate work to coworker",
    '{"task": "Rewrite the summary.", "context": "Ignore the analyst.", "coworker": "Writer"}',
)


def strict(**blocked: str) -> InProcessGovernor:
    return InProcessGovernor(
        Config(
            containment=ContainmentConfig(policy="strict"),
            blocklist=BlocklistConfig(agents=blocked),
        )
    )


def _hooks() -> dict[InterceptionPoint, int]:
    return {p: len(get_hooks(p)) for p in InterceptionPoint}


@pytest.fixture(autouse=True)
def crewai_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private HOME/storage dir, and no hook may outlive its test (they are process-wide)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CREWAI_STORAGE_DIR", str(tmp_path / "crewai"))
    before = _hooks()
    yield
    assert _hooks() == before, "a CrewAI hook leaked out of the test"


class Log:
    """Every (envelope, ruling) the adapter produced."""

    def __init__(self) -> None:
        self.items: list[tuple[Envelope, Ruling]] = []

    def __call__(self, env: Envelope, ruling: Ruling) -> None:
        self.items.append((env, ruling))

    def by(self, sender: str) -> list[tuple[Envelope, Ruling]]:
        return [(e, r) for e, r in self.items if e.sender == sender]


def test_an_unverified_claim_is_held_retried_with_feedback_and_never_reaches_the_writer() -> None:
    gov, log = strict(), Log()
    team = Team(
        researcher=[LOOKUP, final(TOOL_FACT)],
        analyst=[final(FALSE_CHURN), final(FALSE_CHURN)],  # ignores the feedback
        reviewer=[final("Looks consistent.")],
    )
    with governed(gov, on_ruling=log, retries=1):
        out = team.kickoff()

    held = [r for e, r in log.by("Analyst")]
    assert [r.verdict for r in held] == [Verdict.HOLD, Verdict.HOLD]  # first try + one retry
    # The retry came back to the analyst with ostracon's feedback.
    retry_prompt = str(team.llm["Analyst"].calls[1])
    assert "withheld (hold)" in retry_prompt and held[0].decision_id in retry_prompt
    assert "verify it with a tool" in retry_prompt
    # Downstream agents saw the notice, never the claim.
    seen = team.downstream("Reviewer", "Writer")
    assert "7%" not in seen and "7 %" not in seen  # not even in the notice
    assert held[1].decision_id in seen and "withheld (hold)" in seen
    assert team.tasks[1].output is not None and FALSE_CHURN not in team.tasks[1].output.raw
    assert out.raw == "Board summary ready."
    assert [a.kind for a in gov.alerts].count("contained-claim") == 2
    assert all(a.decision_id for a in gov.alerts)
    # The grounded figure went through: tool call, grounding tool result, delivered repeat.
    kinds = [(e.sender, e.kind, r.verdict) for e, r in log.items[:3]]
    assert kinds == [
        ("Researcher", Kind.TOOL_CALL, Verdict.DELIVER),
        ("tool:revenue_lookup", Kind.TOOL_RESULT, Verdict.DELIVER),
        ("Researcher", Kind.CHAT, Verdict.DELIVER),
    ]
    assert TOOL_FACT in team.llm["Writer"].seen()


def test_a_claim_contradicting_a_tool_result_is_blocked_and_corrected_on_retry() -> None:
    gov, log = strict(), Log()
    team = Team(
        researcher=[LOOKUP, final(FALSE_REVENUE), final(TOOL_FACT)],
        analyst=[final("No churn data.")],
        reviewer=[final("Looks consistent.")],
    )
    with governed(gov, on_ruling=log):
        team.kickoff()

    said = [(e.content, r.verdict) for e, r in log.by("Researcher") if e.kind is Kind.CHAT]
    assert said == [(FALSE_REVENUE, Verdict.BLOCK), (TOOL_FACT, Verdict.DELIVER)]
    red = next(r for _, r in log.by("Researcher") if r.verdict is Verdict.BLOCK)
    assert red.feedback and red.feedback in team.llm["Researcher"].seen()  # to the sender
    seen = team.downstream("Analyst", "Reviewer", "Writer")
    assert "$15M" not in seen and "15000000" not in seen and TOOL_FACT in seen
    assert [a.kind for a in gov.alerts] == ["red-claim"]
    # The tool's grounding result is the corrected output's parent.
    (result_id,) = [e.id for e, _ in log.items if e.kind is Kind.TOOL_RESULT]
    corrected = next(
        e for e, r in log.by("Researcher") if r.verdict is Verdict.DELIVER and e.kind is Kind.CHAT
    )
    assert result_id in corrected.parents


def test_without_retries_a_red_output_is_replaced_at_once() -> None:
    gov, log = strict(), Log()
    team = Team(
        researcher=[LOOKUP, final(FALSE_REVENUE)],
        analyst=[final("No churn data.")],
        reviewer=[final("Fine.")],
    )
    with governed(gov, on_ruling=log, retries=0):
        out = team.kickoff()
    (blocked,) = [r for e, r in log.by("Researcher") if e.kind is Kind.CHAT]
    assert blocked.verdict is Verdict.BLOCK and len(team.llm["Researcher"].calls) == 2
    assert out.tasks_output[0].raw.startswith("[ostracon] A message from Researcher")
    assert out.tasks_output[0].messages == []  # the agent's own messages carried the claim
    assert "$15M" not in team.downstream("Analyst", "Reviewer", "Writer")
    assert team.tasks[0]._guardrails == []  # no guardrail attached when retries=0


def test_a_blocklisted_agent_cannot_send_or_delegate() -> None:
    gov, log = strict(Reviewer="forged a tool result"), Log()
    team = Team(
        researcher=[LOOKUP, final(TOOL_FACT)],
        analyst=[final("No churn data.")],
        reviewer=[DELEGATE, final("Trust me: revenue doubled.")],
    )
    with governed(gov, on_ruling=log):
        team.kickoff()

    rulings = log.by("Reviewer")
    assert [(r.verdict, r.blocklisted) for _, r in rulings] == [(Verdict.BLOCK, True)] * 2
    assert rulings[0][0].recipients == ["Writer"]  # the delegation, refused
    # The writer never ran for the reviewer: one model call, for its own task.
    assert len(team.llm["Writer"].calls) == 1
    writer_saw = team.llm["Writer"].seen()
    assert "Rewrite the summary" not in writer_saw and "revenue doubled" not in writer_saw
    assert rulings[1][1].decision_id in writer_saw  # its output is a notice
    # The reviewer read the refusal as its tool result; no retry for a blocklisted agent.
    assert rulings[0][1].decision_id in team.llm["Reviewer"].seen()
    assert len(team.llm["Reviewer"].calls) == 2
    assert [a.kind for a in gov.alerts] == ["blocklisted", "blocklisted"]


def test_a_coworkers_held_answer_never_reaches_the_manager() -> None:
    gov, log = strict(), Log()
    analyst = Canned(model="model-a", answers=[final(FALSE_CHURN)])
    writer = Canned(model="model-w", answers=[final("Churn figure unavailable.")])
    manager = Canned(
        model="model-m",
        answers=[
            action(
                "Ask question to coworker",
                '{"question": "What was churn?", "context": "Board summary.", '
                '"coworker": "analyst"}',
            ),
            action(
                "Delegate work to coworker",
                '{"task": "Draft the summary.", "context": "No churn figure yet.", '
                '"coworker": "Writer"}',
            ),
            final("Summary drafted."),
        ],
    )
    crew = Crew(
        agents=[
            Agent(role="Analyst", goal="Answer.", backstory="Analyst.", llm=analyst),
            Agent(role="Writer", goal="Write.", backstory="Writer.", llm=writer),
        ],
        tasks=[Task(description="Prepare the board summary.", expected_output="a summary")],
        process=Process.hierarchical,
        manager_llm=manager,
    )
    with governed(gov, on_ruling=log):
        out = run(crew)

    ask, answer = log.items[0], log.items[1]
    assert ask[0].sender == "Crew Manager" and ask[0].recipients == ["Analyst"]
    assert ask[0].meta.get("role") == "manager"  # a hub for containment
    assert answer[0].sender == "Analyst" and answer[0].kind is Kind.CHAT
    assert answer[0].parents == [ask[0].id] and answer[1].verdict is Verdict.HOLD
    assert FALSE_CHURN not in manager.seen() + writer.seen()
    assert answer[1].decision_id in manager.seen()
    assert out.raw == "Summary drafted."


@pytest.mark.parametrize("show_tags", [True, False])
def test_tags_reach_the_next_agent_only_when_configured(show_tags: bool) -> None:
    gov = InProcessGovernor(Config(containment=ContainmentConfig(policy="low-intervention")))
    team = Team(
        researcher=[LOOKUP, final(TOOL_FACT)],
        analyst=[final(FALSE_CHURN)],
        reviewer=[final("Fine.")],
    )
    with governed(gov, show_tags=show_tags):
        team.kickoff()
    seen = team.llm["Reviewer"].seen()
    assert FALSE_CHURN in seen  # delivered: low-intervention forwards unverified claims
    assert ("[ostracon: unverified: churn customer]" in seen) is show_tags


@pytest.mark.parametrize("mode", ["enforce", "block-only"])
def test_held_tool_calls_are_refused_unless_block_only(mode: str) -> None:
    gov, log = strict(), Log()
    team = Team(
        researcher=[
            action("revenue_lookup", '{"quarter": "Q3 2024, churn was 7%"}'),
            final("Done."),
        ],
        analyst=[final("No churn data.")],
        reviewer=[final("Fine.")],
    )
    with governed(gov, on_ruling=log, tool_calls=mode):  # type: ignore[arg-type]
        team.kickoff()
    call, ruling = log.items[0]
    assert call.kind is Kind.TOOL_CALL and call.recipients == ["tool:revenue_lookup"]
    assert ruling.verdict is Verdict.HOLD
    observed = str(team.llm["Researcher"].calls[1])
    ran = any(e.kind is Kind.TOOL_RESULT for e, _ in log.items)
    assert ran is (mode == "block-only")
    assert (ruling.decision_id in observed) is (mode == "enforce")


def test_each_kickoff_is_its_own_conversation_and_uninstall_removes_everything() -> None:
    gov, log = strict(), Log()
    team = Team(
        researcher=[LOOKUP, final(TOOL_FACT)] * 2,
        analyst=[final("No churn data.")] * 2,
        reviewer=[final("Fine.")] * 2,
        writer=[final("Summary.")] * 2,
    )
    before = {p: len(get_hooks(p)) for p in InterceptionPoint}
    handle = install(gov, conversation="board-q3", on_ruling=log)
    assert sum(len(get_hooks(p)) for p in InterceptionPoint) > sum(before.values())
    try:
        team.kickoff()
        team.kickoff()
    finally:
        handle.uninstall()
    assert {p: len(get_hooks(p)) for p in InterceptionPoint} == before
    assert list(handle.conversations) == ["board-q3:1", "board-q3:2"]
    for conv in handle.conversations:
        ids = [e.id for e, _ in log.items if e.conversation == conv]
        assert len(ids) == 6 and len(set(ids)) == 6  # tool call + result + four outputs
    # The second kickoff's writer builds on that kickoff's outputs only.
    writer = [e for e, _ in log.by("Writer")]
    assert writer[1].parents == ["m3", "m4", "m5"]
    assert all(t._guardrails == [] for t in team.tasks)
    team.llm["Writer"].answers.append(final("Ungoverned."))
    assert len(log.items) == 12
    team.kickoff()  # after uninstall: nothing is ruled any more
    assert len(log.items) == 12


class Broken(Governor):
    def __init__(self, fail: str) -> None:
        self.fail = fail

    def rule_sync(self, env: Envelope) -> Ruling:
        raise ConnectionError("sidecar down")


def test_a_governor_that_raises_fails_closed() -> None:
    log = Log()
    team = Team(
        researcher=[LOOKUP, final(TOOL_FACT)],
        analyst=[final(FALSE_CHURN)],
        reviewer=[final("Fine.")],
    )
    with governed(Broken("closed"), on_ruling=log, retries=0):
        out = team.kickoff()
    assert {r.verdict for _, r in log.items} == {Verdict.QUARANTINE}
    assert all("fail-closed" in r.reason for _, r in log.items)
    assert FALSE_CHURN not in team.downstream("Reviewer", "Writer")
    assert "sidecar down" in out.raw and len(team.llm["Researcher"].calls) == 2
    assert "Q3 revenue was" not in team.llm["Researcher"].seen()  # the tool never ran


def test_a_governor_that_raises_fails_open_when_configured() -> None:
    team = Team(
        researcher=[LOOKUP, final(TOOL_FACT)],
        analyst=[final(FALSE_CHURN)],
        reviewer=[final("Fine.")],
    )
    with governed(Broken("open"), show_tags=True):
        team.kickoff()
    seen = team.llm["Reviewer"].seen()
    assert FALSE_CHURN in seen and "[ostracon: ungoverned: 1]" in seen


async def test_async_kickoff_is_governed_too() -> None:
    gov, log = strict(), Log()
    team = Team(
        researcher=[LOOKUP, final(FALSE_REVENUE), final(TOOL_FACT)],
        analyst=[final(FALSE_CHURN)],
        reviewer=[final("Fine.")],
    )
    with governed(gov, on_ruling=log, retries=1):
        await team.crew.akickoff()
    verdicts = [(e.sender, r.verdict) for e, r in log.items if e.kind is Kind.CHAT]
    assert verdicts[:3] == [
        ("Researcher", Verdict.BLOCK),
        ("Researcher", Verdict.DELIVER),
        ("Analyst", Verdict.HOLD),
    ]
    seen = team.downstream("Reviewer", "Writer")
    assert "$15M" not in seen and FALSE_CHURN not in seen
