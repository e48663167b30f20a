"""How the sidecar hands a group of outputs to the producer (``Sidecar._ship``): released
copies, then side outputs, then main outputs, each tier once the one before is acknowledged.

The producer is a stand-in here that records each send and lets the test acknowledge it:
only a stand-in can hold an ack back at a chosen point. The crash loop in tests/reliability
checks the same order end to end against the real broker with SIGKILLs.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from ostracon.config import Config, ContainmentConfig
from ostracon.decision import Verdict
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.routing import Output, Route, released
from ostracon.transport.kafka import Sidecar, _Group, _unacknowledged
from ostracon.transport.memory import MemoryBus


def blocked_outcome() -> tuple[list[Output], str]:
    """A blocked message: an alert, a feedback record to its sender, its quarantined record."""
    bus = MemoryBus(Config(containment=ContainmentConfig(policy="balanced")))
    claims = [("tool", Kind.TOOL_RESULT, "8.1M USD"), ("analyst", Kind.CHAT, "12M USD")]
    outcome = None
    for n, (sender, kind, value) in enumerate(claims):
        env = Envelope(
            id=f"m-{n}",
            conversation="c",
            sender=sender,
            kind=kind,
            content="",
            claims=[Claim("q3 revenue", value)],
        )
        outcome = bus.publish(env)
    assert outcome is not None and outcome.decision is not None
    assert outcome.decision.verdict is Verdict.BLOCK
    return outcome.outputs, outcome.key


def test_outputs_are_sorted_into_released_side_and_main() -> None:
    outputs, key = blocked_outcome()
    copy = released(b"{}", b"c", [("ostracon-dedupe-key", b"d-other")], by="quorum")
    group = _Group()
    for out in [*outputs, copy]:
        group.add(out, key)
    assert [o.route for o in group.sides] == [Route.ALERTS, Route.DELIVERED]  # alert, feedback
    assert [o.route for o in group.mains] == [Route.QUARANTINE]
    assert group.released == [copy]


class Producer:
    """Stand-in: remembers what was sent, in order; the test acknowledges."""

    def __init__(self) -> None:
        self.sent: list[tuple[Output, asyncio.Future[object]]] = []

    async def send(self, out: Output) -> asyncio.Future[object]:
        ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.sent.append((out, ack))
        return ack

    def ack_all(self) -> None:
        for _, ack in self.sent:
            if not ack.done():
                ack.set_result(None)


def shipping() -> tuple[Sidecar, Producer]:
    """A sidecar that is never started (no broker needed), sending to the stand-in."""
    sidecar, producer = Sidecar(Config(), "127.0.0.1:1"), Producer()
    sidecar._send = producer.send  # type: ignore[method-assign]
    return sidecar, producer


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_each_tier_waits_for_the_acks_of_the_one_before_and_mains_keep_order() -> None:
    async def scenario() -> None:
        sidecar, producer = shipping()
        outputs, key = blocked_outcome()
        copy = released(b"{}", b"c", [], by="quorum")
        first, second = _Group(), _Group()
        for out in [copy, *outputs]:
            first.add(out, key)
        plain = Output(Route.DELIVERED, b"c", b"{}", [("ostracon-dedupe-key", b"k2")])
        second.add(plain, "k2")  # no side output: could go at once, but must follow first's
        one, two = sidecar._ship(first), sidecar._ship(second)
        await settle()
        assert [o for o, _ in producer.sent] == [copy]  # the released copy, alone
        producer.ack_all()
        await settle()
        assert [o.route for o, _ in producer.sent[1:]] == [Route.ALERTS, Route.DELIVERED]
        assert not one.done() and not two.done()
        producer.ack_all()
        await settle()
        # then the mains, in input order across groups
        assert [o for o, _ in producer.sent[3:]] == [outputs[-1], plain]
        producer.ack_all()
        await asyncio.gather(one, two)

    asyncio.run(scenario())


def test_a_group_cancelled_before_it_ran_does_not_stall_the_next() -> None:
    async def scenario() -> None:
        sidecar, producer = shipping()
        first, second = _Group(), _Group()
        first.add(Output(Route.DELIVERED, b"c", b"{}", [("ostracon-dedupe-key", b"a")]), "a")
        second.add(Output(Route.DELIVERED, b"c", b"{}", [("ostracon-dedupe-key", b"b")]), "b")
        one = sidecar._ship(first)
        one.cancel()  # before its first step
        two = sidecar._ship(second)
        await settle()
        assert len(producer.sent) == 1  # the second group's main went out anyway
        producer.ack_all()
        await asyncio.wait_for(two, 1)

    asyncio.run(scenario())


def test_a_recall_waits_until_the_group_before_it_is_acknowledged() -> None:
    async def scenario() -> None:
        sidecar, producer = shipping()
        first, second = _Group(), _Group()
        recalled = Output(Route.DELIVERED, b"c", b"{}", [("ostracon-dedupe-key", b"a")])
        first.add(recalled, "a")
        second.after_previous = True  # what Sidecar._submit sets for a message with a recall
        second.add(Output(Route.RECALLS, b"c", b"{}", []), "b")
        one, two = sidecar._ship(first), sidecar._ship(second)
        await settle()
        assert [o for o, _ in producer.sent] == [recalled]  # not the recall yet
        producer.ack_all()
        await settle()
        assert [o.route for o, _ in producer.sent[1:]] == [Route.RECALLS]
        producer.ack_all()
        await asyncio.gather(one, two)

    asyncio.run(scenario())


def test_a_record_the_producer_cannot_even_queue_is_sent_again_not_fatal() -> None:
    # aiokafka's send() raises KafkaTimeoutError itself when its buffer stays full for the
    # request timeout (the broker frozen longer than that). It must come back as a failed
    # ack that _acknowledged sends again, not stop the sidecar (a CI run of
    # test_broker_outage lost its sidecar that way). Stand-in producers: freezing the real
    # broker for longer than the request timeout is the reliability test's job (40+ s).
    class Full:
        async def send(self, *_: object, **__: object) -> asyncio.Future[object]:
            raise KafkaTimeoutError()

    class Broken:
        async def send(self, *_: object, **__: object) -> asyncio.Future[object]:
            raise UnknownTopicOrPartitionError()  # a missing topic: waiting does not fix it

    async def scenario() -> None:
        sidecar = Sidecar(Config(), "127.0.0.1:1")
        out = Output(Route.DELIVERED, b"c", b"{}", [("ostracon-dedupe-key", b"a")])
        sidecar.producer = Full()  # type: ignore[assignment]
        ack = await sidecar._send(out)
        await asyncio.wait([ack])
        assert isinstance(ack.exception(), KafkaTimeoutError)
        assert _unacknowledged([(out, ack)]) == [out]  # what _acknowledged sends again
        sidecar.producer = Broken()  # type: ignore[assignment]
        with pytest.raises(UnknownTopicOrPartitionError):
            await sidecar._send(out)

    asyncio.run(scenario())
