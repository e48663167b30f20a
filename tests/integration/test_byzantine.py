"""Two real sidecar processes (one consumer group, a 4-partition inbound topic, the real
broker) converge on the same blocklist; humans change it with the CLI.

Every agent signs (identity.mode: enforce, HMAC keys). An equivocator is proven and blocked
by whichever instance owns its conversation; a liar is accused by four honest agents in
four conversations (one per partition, so both instances decide some of the accusations)
and blocked only once the quorum (f = 3: four proven accusers) adds up across instances
through the state topic. Then both instances block both agents' messages in every
conversation, and a human unblock through ``ostracon blocklist remove`` reaches both.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from aiokafka.partitioner import murmur2

from ostracon.envelope import Claim, Envelope, Kind, encode
from ostracon.identity import sign_hmac
from ostracon.routing import H_REASON, H_VERDICT, header
from ostracon.transport.embedded import EmbeddedBroker

from .conftest import SidecarProcess, produce, read_all, write_config

pytestmark = pytest.mark.broker

AGENTS = ["alice", "bob", "carol", "dave", "eve", "mallory", "search"]
CONFIG = (
    "topics:\n  partitions: 4\n"
    "byzantine:\n  f: 3\n"
    "identity:\n  mode: enforce\n  agents:\n"
    + "".join(f"    {a}: {{hmac_secret: secret-{a}}}\n" for a in AGENTS)
)


def conversations() -> list[str]:
    """One conversation name per partition of a 4-partition topic."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < 4:
        name = f"conv-{i}"
        found.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % 4, name)
        i += 1
    return [found[p] for p in range(4)]


class Script:
    def __init__(self) -> None:
        self.n = 0
        self.values: list[bytes] = []
        self.keys: list[bytes] = []

    def say(
        self,
        conversation: str,
        sender: str,
        recipients: list[str],
        claims: dict[str, str] | None = None,
        kind: Kind = Kind.CHAT,
        meta: dict[str, object] | None = None,
    ) -> str:
        self.n += 1
        env = Envelope(
            id=f"m{self.n}",
            conversation=conversation,
            sender=sender,
            kind=kind,
            content=f"{sender}: {claims or meta}",
            recipients=recipients,
            claims=[Claim(k, v) for k, v in (claims or {}).items()],
            meta=meta or {},
            ts=time.time(),
        )
        self.values.append(encode(sign_hmac(env, f"secret-{sender}")))
        self.keys.append(conversation.encode())
        return env.id

    async def send(self, bootstrap: str) -> None:
        await produce(bootstrap, "agents.inbound", self.values, self.keys)
        self.values, self.keys = [], []


def blocklists(sides: list[SidecarProcess]) -> list[list[str] | None]:
    out: list[list[str] | None] = []
    for side in sides:
        last = None
        for e in side.events():
            if e.get("event") in ("blocklist changed", "state caught up"):
                last = e.get("blocklist")
        out.append(last)  # type: ignore[arg-type]
    return out


async def converge(sides: list[SidecarProcess], want: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if blocklists(sides) == [want] * len(sides):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no convergence on {want}: {blocklists(sides)}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ostracon", *args], capture_output=True, text=True, timeout=60
    )


async def test_two_instances_converge_on_the_same_blocklist(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, CONFIG)
    sides = [SidecarProcess(cfg, tmp_path / f"sidecar-{i}.log") for i in range(2)]
    try:
        sides[0].start()
        await sides[0].wait_for("sidecar consuming")
        sides[1].start()
        await sides[1].wait_for("dedupe window restored")
        # The first instance was assigned again (half the partitions) after the second joined:
        # the four conversations below are split between two processes.
        deadline = time.monotonic() + 30
        while sum(e.get("event") == "dedupe window restored" for e in sides[0].events()) < 2:
            assert time.monotonic() < deadline, "no rebalance"
            await asyncio.sleep(0.1)
        convs = conversations()
        s = Script()
        # The equivocator, in one conversation: 12M to alice, 10M to bob (signed: proof).
        s.say(convs[0], "eve", ["alice"], {"revenue": "12M"})
        s.say(convs[0], "eve", ["bob"], {"revenue": "10M"})
        # The liar, in every conversation, after a tool established the truth (Red).
        lies = []
        for conv in convs:
            s.say(
                conv,
                "search",
                ["alice", "bob", "carol", "dave"],
                {"users": "1200"},
                Kind.TOOL_RESULT,
            )
            lies.append(
                s.say(conv, "mallory", ["alice", "bob", "carol", "dave"], {"users": "9000"})
            )
        await s.send(broker.bootstrap)
        await converge(sides, ["eve"])
        # Four honest accusers, one per conversation (and partition).
        for conv, lie, accuser in zip(convs, lies, ["alice", "bob", "carol", "dave"], strict=True):
            s.say(
                conv,
                accuser,
                [],
                kind=Kind.ACCUSATION,
                meta={"accused": "mallory", "evidence": [lie]},
            )
        await s.send(broker.bootstrap)
        await converge(sides, ["eve", "mallory"])
        # Both instances block both agents in every conversation.
        ids = [
            s.say(conv, agent, ["alice"], {"cost": "3"})
            for conv in convs
            for agent in ("eve", "mallory")
        ]
        await s.send(broker.bootstrap)
        records = await read_all(
            broker.bootstrap, ["ostracon.quarantine"], expect=4 + 8, settle=1.0
        )
        blocked = {
            msgspec.json.decode(r.value)["id"]
            for r in records
            if header(r.headers, H_VERDICT) == "block"
            and "blocklisted" in (header(r.headers, H_REASON) or "")
        }
        assert set(ids) <= blocked
        # A human unblocks eve from the CLI; both instances follow.
        done = cli(
            "blocklist",
            "remove",
            "eve",
            "--why",
            "false alarm",
            "--by",
            "human:ops",
            "--config",
            str(cfg),
        )
        assert done.returncode == 0, done.stderr
        assert "AgentUnblocked" in done.stdout
        await converge(sides, ["mallory"])
        listed = cli("blocklist", "list", "--config", str(cfg))
        assert listed.returncode == 0, listed.stderr
        assert "1 blocked" in listed.stdout and "mallory" in listed.stdout
        assert "accused: mallory by alice, bob, carol, dave" in listed.stdout
    finally:
        for side in sides:
            side.stop()


def test_cli_needs_a_cluster_address(tmp_path: Path) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text("log:\n  level: info\n")
    done = cli("blocklist", "add", "eve", "--reason", "x", "--config", str(cfg))
    assert done.returncode == 2 and "kafka.bootstrap_servers" in done.stderr


async def test_cli_blocks_and_accuses_on_a_running_sidecar(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, "byzantine:\n  f: 0\n")
    side = SidecarProcess(cfg, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("sidecar consuming")
        done = cli("blocklist", "add", "eve", "--reason", "leaked keys", "--config", str(cfg))
        assert done.returncode == 0, done.stderr
        done = cli("accuse", "mallory", "-r", "forged a report", "-e", "m9", "--config", str(cfg))
        assert done.returncode == 0, done.stderr
        await converge([side], ["eve", "mallory"])
        s = Script()
        s.say("c", "eve", [], {"x": "1"})
        await s.send(broker.bootstrap)
        [record] = await read_all(broker.bootstrap, ["ostracon.quarantine"], 1, settle=0.5)
        assert "leaked keys" in (header(record.headers, H_REASON) or "")
    finally:
        side.stop()
