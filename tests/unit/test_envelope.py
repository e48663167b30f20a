"""The envelope contract: what decodes, what is rejected, and with which reason code."""

import msgspec
import pytest

from ostracon.envelope import Claim, Envelope, InvalidEnvelope, Kind, decode, encode

LIMIT = 1 << 20


def raw(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "m-1",
        "conversation": "c-1",
        "sender": "alice",
        "kind": "chat",
        "content": "hello",
    }
    base.update(fields)
    return msgspec.json.encode({k: v for k, v in base.items() if v is not ...})


def test_minimal_envelope_gets_defaults() -> None:
    env = decode(raw(), LIMIT)
    assert env.id == "m-1" and env.kind is Kind.CHAT
    assert env.recipients == [] and env.parents == [] and env.claims == []
    assert env.meta == {} and env.sig is None and env.ts is None


def test_full_envelope_round_trips() -> None:
    env = Envelope(
        id="m-2",
        conversation="c",
        sender="bob",
        kind=Kind.TOOL_RESULT,
        content="42 km",
        recipients=["alice"],
        parents=["m-1"],
        claims=[Claim("distance", 42, ["tool:maps"])],
        ts=1.5,
        meta={"model_family": "llama", "role": "tool"},
        sig="abc",
    )
    assert decode(encode(env), LIMIT) == env


def test_unknown_fields_are_accepted() -> None:
    env = decode(raw(trace={"span": "x"}, priority=3), LIMIT)
    assert env.id == "m-1"


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        (b'{"id": "m-1", "conv', "invalid-json", "truncated"),
        (b"not json at all", "invalid-json", "malformed"),
        (b'{"id": "m-\xff", "conversation": "c"}', "invalid-utf8", "UTF-8"),
        (raw(sender=...), "schema", "sender"),
        (raw(sender=7), "schema", "$.sender"),
        (raw(kind="gossip"), "unknown-kind", "gossip"),
        (raw(id=""), "schema", "$.id"),
        (raw(id="x" * 129), "schema", "$.id"),
        (raw(claims=[{"key": "k"}]), "schema", "value"),
        (b"[1, 2]", "schema", "object"),
        (None, "empty", "tombstone"),
    ],
)
def test_bad_input_has_a_reason(data: bytes | None, code: str, needle: str) -> None:
    with pytest.raises(InvalidEnvelope) as info:
        decode(data, LIMIT)
    assert info.value.code == code
    assert needle in info.value.reason


def test_size_limit_is_checked_before_parsing() -> None:
    data = raw(content="x" * 2000)
    with pytest.raises(InvalidEnvelope) as info:
        decode(data, 1000)
    assert info.value.code == "too-large"
    assert str(len(data)) in info.value.reason
    assert decode(data, len(data)).content == "x" * 2000


def test_id_of_exactly_128_chars_is_valid() -> None:
    assert decode(raw(id="x" * 128), LIMIT).id == "x" * 128
