"""The adapters' in-process backend: rulings from the real core, alerts kept and passed on."""

from __future__ import annotations

from ostracon.adapters.governor import InProcessGovernor, Ruling, notice
from ostracon.config import BlocklistConfig, Config, ContainmentConfig
from ostracon.decision import Alert, Verdict
from ostracon.envelope import Claim, Envelope, Kind


def env(i: int, sender: str, *claims: Claim, kind: Kind = Kind.CHAT) -> Envelope:
    return Envelope(
        id=f"m-{i}", conversation="c", sender=sender, kind=kind, content="", claims=list(claims)
    )


async def test_in_process_rulings_carry_verdict_reason_feedback_and_alerts() -> None:
    seen: list[Alert] = []
    gov = InProcessGovernor(
        Config(containment=ContainmentConfig(policy="strict")), on_alert=seen.append
    )
    tool = await gov.rule(env(1, "tool", Claim("q3 revenue", "8.1M USD"), kind=Kind.TOOL_RESULT))
    assert tool.verdict is Verdict.DELIVER and tool.delivers
    held = gov.rule_sync(env(2, "gossip", Claim("churn", "7%")))
    assert held.verdict is Verdict.HOLD and not held.delivers
    assert "unverified" in held.reason and "cite the message" in held.feedback.lower()
    assert held.decision_id.startswith("d-")
    assert [a.kind for a in seen] == ["contained-claim"] and list(gov.alerts) == seen
    text = notice(held, "gossip")
    assert held.decision_id in text and "withheld (hold)" in text and "gossip" in text
    # The notice names what was withheld, never the value: it must not spread the claim.
    assert "unverified claims about churn" in text and "= 7" not in text and "%" not in text


def test_a_blocklisted_sender_is_flagged() -> None:
    gov = InProcessGovernor(Config(blocklist=BlocklistConfig(agents={"mallory": "forged"})))
    r = gov.rule_sync(env(1, "mallory"))
    assert r.verdict is Verdict.BLOCK and r.blocklisted
    assert not gov.rule_sync(env(2, "alice")).blocklisted
    assert isinstance(r, Ruling)
