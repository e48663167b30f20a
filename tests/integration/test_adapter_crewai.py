"""The CrewAI adapter with the sidecar backend: a real crew, a real sidecar, the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from crewai.hooks import InterceptionPoint, get_hooks

from ostracon.adapters.crewai import governed
from ostracon.adapters.governor import SidecarGovernor
from ostracon.config import load_config
from ostracon.decision import Verdict
from ostracon.envelope import Kind
from ostracon.transport.embedded import EmbeddedBroker

from ..unit.test_adapter_crewai import (
    DELEGATE,
    FALSE_CHURN,
    FALSE_REVENUE,
    LOOKUP,
    TOOL_FACT,
    Log,
    Team,
    final,
)
from .conftest import SidecarProcess, read_all, write_config

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai.*"),
]


@pytest.fixture(autouse=True)
def crewai_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CREWAI_STORAGE_DIR", str(tmp_path / "crewai"))
    before = {p: len(get_hooks(p)) for p in InterceptionPoint}
    yield
    assert {p: len(get_hooks(p)) for p in InterceptionPoint} == before


async def test_a_crew_behind_the_sidecar_holds_blocks_and_shuts_out_a_blocklisted_agent(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg_path = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "containment:\n  policy: strict\nblocklist:\n  agents: {Reviewer: forged a tool result}\n",
    )
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    gov = SidecarGovernor(load_config(cfg_path), timeout_s=10.0)
    log = Log()
    team = Team(
        researcher=[LOOKUP, final(FALSE_REVENUE), final(TOOL_FACT)],  # Red, then corrected
        analyst=[final(FALSE_CHURN), final(FALSE_CHURN)],  # Yellow, held twice
        reviewer=[DELEGATE, final("Trust me: revenue doubled.")],  # blocklisted
    )
    try:
        await side.wait_for("sidecar consuming")

        def kickoff() -> str:
            with governed(gov, on_ruling=log, conversation="crew-it"):
                return team.kickoff().raw

        # CrewAI hooks are synchronous: the sidecar client runs on its own loop thread.
        out = await asyncio.to_thread(kickoff)
    finally:
        await asyncio.to_thread(gov.close_sync)
        side.stop()

    assert out == "Board summary ready."
    got = [(e.sender, e.kind, r.verdict) for e, r in log.items]
    assert got == [
        ("Researcher", Kind.TOOL_CALL, Verdict.DELIVER),
        ("tool:revenue_lookup", Kind.TOOL_RESULT, Verdict.DELIVER),
        ("Researcher", Kind.CHAT, Verdict.BLOCK),
        ("Researcher", Kind.CHAT, Verdict.DELIVER),
        ("Analyst", Kind.CHAT, Verdict.HOLD),
        ("Analyst", Kind.CHAT, Verdict.HOLD),
        ("Reviewer", Kind.CHAT, Verdict.BLOCK),  # the delegation to the writer, refused
        ("Reviewer", Kind.CHAT, Verdict.BLOCK),
        ("Writer", Kind.CHAT, Verdict.DELIVER),
    ]
    assert all(e.conversation == "crew-it:1" for e, _ in log.items)
    assert all(r.blocklisted for e, r in log.items if e.sender == "Reviewer")
    # The sidecar's reasons and decision ids came back and reached the agents.
    red, held = log.items[2][1], log.items[5][1]
    assert "contradicts the established" in red.reason and "unverified" in held.reason
    assert red.feedback and red.feedback in team.llm["Researcher"].seen()  # retry prompt
    first_hold = log.items[4][1]
    assert first_hold.feedback and first_hold.feedback in team.llm["Analyst"].seen()
    assert "$15M" not in team.downstream("Analyst", "Reviewer", "Writer")
    seen = team.downstream("Reviewer", "Writer")
    assert "7%" not in seen and "7 %" not in seen
    assert "revenue doubled" not in team.downstream("Writer")
    assert TOOL_FACT in seen and held.decision_id in seen
    assert len(team.llm["Writer"].calls) == 1  # the refused delegation never ran it

    alerts = [
        msgspec.json.decode(rec.value)
        for rec in await read_all(broker.bootstrap, ["ostracon.alerts"], 5, timeout=20)
    ]
    kinds = sorted(a["kind"] for a in alerts)
    assert kinds == [
        "blocklisted",
        "blocklisted",
        "contained-claim",
        "contained-claim",
        "red-claim",
    ]
    assert {a["decision_id"] for a in alerts} <= {r.decision_id for _, r in log.items}
