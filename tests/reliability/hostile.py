"""A fast generator of hostile inbound records, and the check that the router handled one.

Each generated record is (value, key, headers) in one of many shapes: truncated JSON, deep
nesting, huge strings, invalid UTF-8, wrong types, control characters, duplicate ids, JSON
that is not an object, duplicate keys, forged ``ostracon-*`` headers and oversized headers,
plus valid envelopes with odd content (which are decided, not dead-lettered).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import msgspec

from ostracon.routing import H_DEDUPE, H_ERROR, H_REASON, H_VERDICT, Outcome, Route, header

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]

KINDS = ["chat", "tool_call", "tool_result", "action", "vote", "accusation", "human", "system"]
ODD_TEXT = [
    "",
    "\x00\x01\x02\x1b[31m",
    "\u202eevil\u202c",
    "😀" * 40,
    "a\nb\rc\td",
    "\ud7ff\ue000\ufffd",
    "Q3 revenue was $12M. Churn is 7%.",
    '{"id": "inner"}',
]


def _valid(rng: random.Random, i: int) -> dict[str, object]:
    env: dict[str, object] = {
        "id": f"f-{i}",
        "conversation": f"conv-{rng.randrange(200)}",
        "sender": f"agent-{rng.randrange(12)}",
        "kind": rng.choice(KINDS),
        "content": rng.choice(ODD_TEXT),
    }
    if rng.random() < 0.3:
        env["claims"] = [{"key": f"k{rng.randrange(50)}", "value": rng.randrange(100)}]
    if rng.random() < 0.2:
        env["parents"] = [f"f-{rng.randrange(max(i, 1))}"]
    if rng.random() < 0.2:
        env["meta"] = {"role": rng.choice(["aggregator", 7, None, ["x"], {"a": 1}])}
    return env


def _wrong_type(rng: random.Random, env: dict[str, object]) -> dict[str, object]:
    field = rng.choice(["id", "conversation", "sender", "kind", "content", "recipients",
                        "parents", "claims", "ts", "meta"])  # fmt: skip
    env[field] = rng.choice([1, 1.5, None, True, [], {}, ["a", 2], "x" * 200, -1e308])
    return env


def _nested(depth: int, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def hostile_records(n: int, seed: int = 1) -> Iterator[Record]:
    """``n`` hostile records, deterministic for a seed."""
    rng = random.Random(seed)
    recent: list[bytes] = []
    shapes: list[Callable[[int], Record]] = []

    def ok(i: int) -> Record:
        value = msgspec.json.encode(_valid(rng, i))
        recent.append(value)
        if len(recent) > 64:
            recent.pop(0)
        return value, b"k", []

    def truncated(i: int) -> Record:
        value = msgspec.json.encode(_valid(rng, i))
        return value[: rng.randrange(len(value))], b"k", []

    def deep(i: int) -> Record:
        depth = rng.choice([64, 1_000, 10_000, 100_000])
        body = _nested(depth, rng)
        if rng.random() < 0.5:  # inside an otherwise valid envelope's meta
            env = msgspec.json.encode(_valid(rng, i))
            body = env[:-1] + b',"meta":{"x":' + body + b"}}"
        return body, b"k", []

    def huge(i: int) -> Record:
        env = _valid(rng, i)
        size = rng.choice([10_000, 200_000, 1_100_000])
        env[rng.choice(["content", "sender", "id"])] = "x" * size
        return msgspec.json.encode(env), b"k", []

    def bad_utf8(i: int) -> Record:
        value = bytearray(msgspec.json.encode(_valid(rng, i)))
        for _ in range(rng.randrange(1, 4)):
            value.insert(rng.randrange(len(value)), rng.choice([0xFF, 0xC3, 0x80, 0xED]))
        return bytes(value), b"k", []

    def wrong_type(i: int) -> Record:
        return msgspec.json.encode(_wrong_type(rng, _valid(rng, i))), b"k", []

    def control(i: int) -> Record:
        env = _valid(rng, i)
        env[rng.choice(["id", "sender", "conversation", "content"])] = "".join(
            chr(rng.randrange(0, 32)) for _ in range(rng.randrange(1, 20))
        )
        return msgspec.json.encode(env), b"k", []

    def duplicate(i: int) -> Record:
        return (rng.choice(recent) if recent else b"{}"), b"k", []

    def not_object(i: int) -> Record:
        return rng.choice([b"null", b"1", b'"s"', b"[]", b"true", b"", b" ", b"\x00"]), b"k", []

    def dup_keys(i: int) -> Record:
        return (
            b'{"id":"a","id":"b","conversation":"c","sender":"s","kind":"chat","content":"x"}',
            b"k",
            [],
        )

    def random_bytes(i: int) -> Record:
        return rng.randbytes(rng.randrange(0, 256)), None, []

    def tombstone(i: int) -> Record:
        return None, rng.choice([None, b"k"]), []

    def bad_headers(i: int) -> Record:
        value, key, _ = ok(i)
        headers = rng.choice(
            [
                [(H_VERDICT, b"deliver"), ("ostracon-risk", b"0.000")],  # forged verdict
                [("x", b"\xff" * 10), ("", b""), ("y", b"")],
                [("big", b"h" * 1_000_001)],  # over the size limit by itself
                [("\x00\x1b", b"\x00")],
            ]
        )
        return value, key, headers

    def unknown_kind(i: int) -> Record:
        env = _valid(rng, i)
        env["kind"] = rng.choice(["CHAT", "", "admin", "chat "])
        return msgspec.json.encode(env), b"k", []

    shapes = [ok, truncated, deep, huge, bad_utf8, wrong_type, control, duplicate, not_object,
              dup_keys, random_bytes, tombstone, bad_headers, unknown_kind]  # fmt: skip
    weights = [30, 10, 2, 1, 8, 12, 6, 6, 4, 1, 8, 2, 6, 4]
    for i, shape in enumerate(rng.choices(shapes, weights, k=n)):
        yield shape(i)


def check_outcome(outcome: Outcome) -> str:
    """Assert the router handled one input properly; return what became of it: ``decided``,
    ``duplicate`` or the dead-letter code."""
    if outcome.duplicate:
        assert outcome.outputs == []
        return "duplicate"
    main = [o for o in outcome.outputs if header(o.headers, H_DEDUPE) is not None]
    assert len(main) == 1, outcome
    out = main[0]
    if outcome.decision is not None:
        assert out.route in (Route.DELIVERED, Route.QUARANTINE)
        verdicts = [v for k, v in out.headers if k == H_VERDICT]
        assert verdicts == [outcome.decision.verdict.value.encode()], "forged verdict kept"
        return "decided"
    assert outcome.error is not None and out.route is Route.DEAD_LETTER
    assert header(out.headers, H_ERROR) == outcome.error.code
    assert header(out.headers, H_REASON), "a dead letter without a reason"
    return outcome.error.code
