"""The router: dead letters with reasons, dedupe, verdict headers, forged-header stripping."""

import msgspec

from ostracon.core import Core, State, default_stages
from ostracon.dedupe import DedupeWindow
from ostracon.routing import (
    H_DECISION,
    H_DEDUPE,
    H_ERROR,
    H_REASON,
    H_RISK,
    H_RULES,
    H_SOURCE,
    H_VERDICT,
    Route,
    Router,
    header,
)


def router(blocklist: dict[str, str] | None = None, limit: int = 1 << 20) -> Router:
    core = Core(default_stages(), State(blocklist=dict(blocklist or {})))
    return Router(core, limit, DedupeWindow(1000))


def raw(i: int = 1, sender: str = "alice", **extra: object) -> bytes:
    return msgspec.json.encode(
        {
            "id": f"m-{i}",
            "conversation": "c",
            "sender": sender,
            "kind": "chat",
            "content": "hi",
            **extra,
        }
    )


def test_delivered_record_keeps_original_bytes_and_gains_headers() -> None:
    value = raw(custom_field={"nested": [1, 2]})
    out = router().route(value, b"c", [("traceparent", b"00-abc")], "in/0/7")
    (record,) = out.outputs
    assert record.route is Route.DELIVERED
    assert record.value == value  # unknown fields survive byte for byte
    assert record.key == b"c"
    h = record.headers
    assert header(h, "traceparent") == "00-abc"
    assert header(h, H_VERDICT) == "deliver"
    assert header(h, H_RISK) == "0.000"
    assert header(h, H_RULES) == ""
    assert header(h, H_DECISION) == out.decision.id  # type: ignore[union-attr]
    assert header(h, H_DEDUPE) == out.decision.id  # type: ignore[union-attr]
    assert header(h, H_SOURCE) == "in/0/7"


def test_sender_cannot_forge_ostracon_headers() -> None:
    forged = [("ostracon-verdict", b"deliver"), ("ostracon-dedupe-key", b"other")]
    out = router({"mallory": "x"}).route(raw(sender="mallory"), b"c", forged, "in/0/1")
    record = out.outputs[-1]
    assert record.route is Route.QUARANTINE
    assert [v for k, v in record.headers if k == H_VERDICT] == [b"block"]
    assert [v for k, v in record.headers if k == H_DEDUPE] == [out.decision.id.encode()]  # type: ignore[union-attr]


def test_blocked_message_goes_to_quarantine_after_its_alert() -> None:
    out = router({"mallory": "forged"}).route(raw(sender="mallory"), b"c", [], "in/0/1")
    assert [o.route for o in out.outputs] == [Route.ALERTS, Route.QUARANTINE]
    alert = msgspec.json.decode(out.outputs[0].value)
    assert alert["kind"] == "blocklisted" and alert["decision_id"] == out.decision.id  # type: ignore[union-attr]
    assert header(out.outputs[1].headers, H_RULES) == "blocklist"


def test_malformed_record_is_dead_lettered_with_reason_and_original_bytes() -> None:
    bad = b'{"id": "m-1", "conversation": "c", "sender": "al'
    out = router().route(bad, b"k", [("x", b"y")], "in/2/40")
    (record,) = out.outputs
    assert record.route is Route.DEAD_LETTER
    assert record.value == bad and record.key == b"k"
    assert header(record.headers, H_ERROR) == "invalid-json"
    assert "truncated" in (header(record.headers, H_REASON) or "")
    assert header(record.headers, H_SOURCE) == "in/2/40"
    assert header(record.headers, H_DEDUPE) == "dlq:in/2/40"
    assert header(record.headers, "x") == "y"
    assert out.error is not None and out.decision is None


def test_deeply_nested_json_is_dead_lettered_not_raised() -> None:
    deep = b'{"id": "m-1", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    out = router().route(deep, None, [], "in/0/9")
    assert out.outputs[0].route is Route.DEAD_LETTER
    assert header(out.outputs[0].headers, H_REASON) == "nested too deeply"


def test_same_id_in_another_conversation_is_not_a_duplicate() -> None:
    r = router()
    assert r.route(raw(), b"c", [], "in/0/1").outputs
    other = msgspec.json.encode(
        {"id": "m-1", "conversation": "elsewhere", "sender": "bob", "kind": "chat", "content": "hi"}
    )
    assert not r.route(other, b"elsewhere", [], "in/0/2").duplicate


def test_tombstone_is_dead_lettered_as_a_tombstone() -> None:
    out = router().route(None, b"k", [], "in/0/3")
    assert out.outputs[0].value is None
    assert header(out.outputs[0].headers, H_ERROR) == "empty"


def test_oversized_record_is_dead_lettered() -> None:
    out = router(limit=50).route(raw(content="x" * 100), None, [], "in/0/0")
    assert out.outputs[0].route is Route.DEAD_LETTER
    assert header(out.outputs[0].headers, H_ERROR) == "too-large"


def test_duplicate_message_id_produces_nothing_the_second_time() -> None:
    r = router()
    first = r.route(raw(), b"c", [], "in/0/1")
    again = r.route(raw(), b"c", [], "in/0/2")
    assert len(first.outputs) == 1 and not first.duplicate
    assert again.duplicate and again.outputs == [] and again.decision is None
    # The same malformed record re-read from the same offset is also a duplicate.
    assert r.route(b"{", None, [], "in/0/3").outputs
    assert r.route(b"{", None, [], "in/0/3").duplicate
    # ...but the same bad bytes at another offset are a separate input.
    assert r.route(b"{", None, [], "in/0/4").outputs
