"""Assembles the decision core from a config: which stages, in which order, on what state."""

from __future__ import annotations

from .config import Config
from .containment import ContainmentStage, LineageStage
from .core import BlocklistStage, Core, MembershipStage, Stage, State
from .genealogy import Genealogy
from .monitors import MonitorStage


def build_core(config: Config, assume_delivered: bool = False) -> Core:
    """blocklist -> lineage (claims, genealogy, labels, risk) -> containment -> monitors ->
    rules -> byzantine -> quorum -> membership.

    ``assume_delivered`` is for replaying transcripts: the genealogy records every message as
    delivered (it was), while decisions still say what ostracon would have done.
    """
    stages: list[Stage] = [BlocklistStage(config.blocklist.verdict_enum)]
    if config.containment.enabled:
        c = config.containment
        stages += [LineageStage(c, assume_delivered=assume_delivered), ContainmentStage(c)]
        if config.monitors.enabled:
            stages.append(MonitorStage(config.monitors))
    if config.rules.paths:
        from .rules import RulesStage, load_rules

        stages.append(RulesStage(load_rules(config.rules.paths)))
    # With signing on, only verified senders accuse or vote (permissive lets unsigned on).
    signing = config.identity.mode != "off"
    if config.byzantine.enabled:  # after the rules: it weighs their accusations' evidence
        from .byzantine import ByzantineStage

        stages.append(
            ByzantineStage(
                config.byzantine,
                config.identity.registered,
                config.blocklist.agents,
                config.byzantine.max_conversations,
                signing,
            )
        )
    if config.quorum.enabled:  # after the rules: their hold actions open the ballots
        from .quorum import QuorumStage

        stages.append(
            QuorumStage(
                config.quorum, config.identity.registered, signing, config.identity.families()
            )
        )
    stages.append(MembershipStage())
    state = State(
        blocklist=dict(config.blocklist.agents),
        genealogy=Genealogy(
            config.containment.trusted_sources,
            config.containment.max_claims_per_conversation,
            config.containment.conversation_ttl_s,
            config.containment.max_conversations,
            config.identity.families(),
        ),
    )
    return Core(stages, state)
