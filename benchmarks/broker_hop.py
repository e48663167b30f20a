"""The broker's floor for a round trip: produce one record (acks=all) and consume it back.

One hop on the embedded Tansu broker, one record at a time; an adapter's sidecar round trip
is two such hops (inbound -> sidecar -> output topic -> adapter). Compare with
benchmarks/adapters.py.

    python benchmarks/broker_hop.py
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import ensure_topics

N = 300


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def main() -> None:
    broker = EmbeddedBroker()
    broker.start()
    try:
        await ensure_topics(broker.bootstrap, ["hop"], 1, 1)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        await producer.send_and_wait("hop", b"x")
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=1)
        await consumer.start()
        await consumer.topics()
        tp = TopicPartition("hop", 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        hop: list[float] = []
        ack: list[float] = []
        for _ in range(N):
            t0 = time.perf_counter()
            await producer.send_and_wait("hop", b"y")
            t1 = time.perf_counter()
            while not await consumer.getmany(timeout_ms=100):
                pass
            hop.append((time.perf_counter() - t0) * 1e3)
            ack.append((t1 - t0) * 1e3)
        print(
            f"one hop, produce (acks=all) + consume, {N} records: p50 {pct(hop, 50):.2f} ms, "
            f"p99 {pct(hop, 99):.2f} ms; the produce ack alone: p50 {pct(ack, 50):.2f} ms, "
            f"p99 {pct(ack, 99):.2f} ms"
        )
        await producer.stop()
        await consumer.stop()
    finally:
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
