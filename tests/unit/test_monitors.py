"""Fleet monitors through the real core: agreement map, liveness, conformity, early warning."""

from __future__ import annotations

from typing import Any

from ostracon.config import Config, ContainmentConfig, MonitorsConfig
from ostracon.decision import Decision
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.monitors import agreement_map, early_warning
from ostracon.pipeline import build_core


class Chat:
    def __init__(self, **monitors: Any) -> None:
        self.core = build_core(
            Config(
                containment=ContainmentConfig(policy="low-intervention"),
                monitors=MonitorsConfig(**monitors),
            )
        )
        self.n = 0
        self.alerts: list[str] = []

    def say(
        self,
        sender: str,
        key: str,
        value: str,
        kind: Kind = Kind.CHAT,
        parents: list[str] | None = None,
        **meta: Any,
    ) -> Decision:
        self.n += 1
        d = self.core.decide(
            Envelope(
                id=f"m-{self.n}",
                conversation="c",
                sender=sender,
                kind=kind,
                content="",
                claims=[Claim(key, value)],
                parents=parents or [],
                meta=meta,
            )
        )
        self.alerts += [a.kind for a in d.alerts]
        return d

    @property
    def lineage(self) -> Any:
        return self.core.state.genealogy.lineage("c")


def test_agreement_map_tracks_each_agents_latest_value() -> None:
    chat = Chat()
    chat.say("a", "answer", "42")
    chat.say("b", "answer", "42")
    chat.say("c", "answer", "41")
    chat.say("c", "answer", "42")  # c changes its mind
    amap = agreement_map(chat.lineage)
    assert amap["answer"] == {"values": {"42": ["a", "b", "c"]}, "ratio": 1.0}


def test_liveness_alert_once_when_a_key_never_converges() -> None:
    chat = Chat(liveness_rounds=6)
    for i in range(10):
        chat.say("a" if i % 2 else "b", "deadline", "friday" if i % 2 else "monday")
    assert chat.alerts.count("liveness") == 1


def test_no_liveness_alert_when_agents_agree() -> None:
    chat = Chat(liveness_rounds=6)
    for i in range(10):
        chat.say("abc"[i % 3], "deadline", "friday")
    assert "liveness" not in chat.alerts


def test_conformity_alert_when_diversity_collapses_onto_a_hub() -> None:
    chat = Chat(conformity_min_values=3, conformity_window=6)
    chat.say("a", "best design", "design a")
    chat.say("b", "best design", "design b")
    chat.say("c", "best design", "design c")
    chat.say("lead", "best design", "design x", role="aggregator")
    for agent in "abc":
        chat.say(agent, "best design", "design x", parents=["m-4"])
    assert chat.alerts.count("conformity") == 1


def test_no_conformity_alert_without_a_hub() -> None:
    chat = Chat(conformity_min_values=3, conformity_window=6)
    for agent, value in (("a", "1"), ("b", "2"), ("c", "3"), ("d", "9")):
        chat.say(agent, "pick", value)
    for agent in "abc":
        chat.say(agent, "pick", "9", parents=["m-4"])
    assert "conformity" not in chat.alerts


def test_early_warning_fires_when_an_ungrounded_claim_spreads_unchecked() -> None:
    chat = Chat(early_warning_every=4)
    agents = [f"agent-{i}" for i in range(6)]
    for agent in agents:  # everyone joins the broadcast conversation
        chat.say(agent, "hello", "yes", kind=Kind.SYSTEM)
    chat.say("agent-0", "rumour", "true")
    for agent in agents[1:]:
        chat.say(agent, "rumour", "true", parents=["m-7"])
    r, beta, rho, delta = early_warning(chat.lineage, 0.05)
    assert rho > 1 and beta > 0 and delta == 0.05  # nobody recovered: delta at its floor
    assert r > 1
    assert chat.alerts.count("early-warning") == 1


def test_no_early_warning_when_claims_are_grounded() -> None:
    chat = Chat(early_warning_every=4)
    for i in range(12):
        chat.say(f"tool-{i % 3}", "price", "10 usd", kind=Kind.TOOL_RESULT)
    r, *_ = early_warning(chat.lineage, 0.05)
    assert r == 0.0
    assert "early-warning" not in chat.alerts


def test_no_liveness_alert_for_a_lone_agent_repeating_itself() -> None:
    chat = Chat(liveness_rounds=3)
    for _ in range(6):
        chat.say("a", "status", "ok")
    assert "liveness" not in chat.alerts


def test_moving_to_the_grounded_value_counts_as_recovery() -> None:
    chat = Chat()
    chat.say("a", "price", "99")  # infected: ungrounded
    chat.say("tool", "price", "10", kind=Kind.TOOL_RESULT)
    chat.say("a", "price", "10", parents=["m-2"])  # recovers, to the grounded value
    lin = chat.lineage
    assert (lin.infections, lin.recoveries) == (1, 1)
