"""The in-process bus routes through the same core with no broker."""

from ostracon.config import BlocklistConfig, Config
from ostracon.decision import Decision, Verdict
from ostracon.envelope import Envelope, Kind
from ostracon.routing import Route
from ostracon.transport.memory import MemoryBus


def env(i: int, sender: str, recipients: list[str] | None = None) -> Envelope:
    return Envelope(
        id=f"m-{i}",
        conversation="c",
        sender=sender,
        kind=Kind.CHAT,
        content=f"message {i}",
        recipients=recipients or [],
    )


def test_delivery_to_recipients_and_to_everyone_else() -> None:
    bus = MemoryBus()
    inbox: dict[str, list[str]] = {"alice": [], "bob": [], "carol": []}
    for agent, box in inbox.items():
        bus.subscribe(agent, lambda e, d, box=box: box.append(e.id))
    bus.publish(env(1, "alice", ["bob"]))
    bus.publish(env(2, "bob"))
    assert inbox == {"alice": ["m-2"], "bob": ["m-1"], "carol": ["m-2"]}
    assert len(bus.topics[Route.DELIVERED]) == 2


def test_blocklisted_agent_reaches_nobody() -> None:
    bus = MemoryBus(Config(blocklist=BlocklistConfig(agents={"mallory": "liar"})))
    got: list[Decision] = []
    bus.subscribe("alice", lambda e, d: got.append(d))
    outcome = bus.publish(env(1, "mallory"))
    assert outcome.decision is not None and outcome.decision.verdict is Verdict.BLOCK
    assert got == []
    assert len(bus.topics[Route.QUARANTINE]) == 1 and len(bus.topics[Route.ALERTS]) == 1


def test_bad_bytes_are_dead_lettered_not_raised() -> None:
    bus = MemoryBus()
    outcome = bus.publish(b"\xff\xfe")
    assert outcome.error is not None and outcome.error.code == "invalid-utf8"
    assert len(bus.topics[Route.DEAD_LETTER]) == 1


def test_duplicates_are_delivered_once() -> None:
    bus = MemoryBus()
    got: list[str] = []
    bus.subscribe("bob", lambda e, d: got.append(e.id))
    bus.publish(env(1, "alice"))
    assert bus.publish(env(1, "alice")).duplicate
    assert got == ["m-1"]
