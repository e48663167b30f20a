"""The LLM judge: reply parsing, the verdict envelope, the HTTP client and record selection.

No real LLM can run here: the HTTP client is tested against ``tests/fake_openai.py``, a real
HTTP server on loopback that answers like an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from typer.testing import CliRunner

from ostracon.claims import ExtractedClaim, extract_claims
from ostracon.cli import app
from ostracon.config import Config, JudgeConfig, load_config
from ostracon.envelope import Claim, Envelope, Kind, decode, encode
from ostracon.judge import (
    H_UNVERIFIED,
    REFUTED,
    SUPPORTED,
    UNKNOWN,
    Judge,
    JudgeClient,
    Judgement,
    build_verdict,
    judge_message_id,
    parse_reply,
)
from ostracon.routing import H_VERDICT

from ..fake_openai import FakeOpenAI, answer, claim_key, completion

CHURN = "Customer churn is 7%."


def held(
    content: str = CHURN,
    id: str = "m-1",
    sender: str = "analyst",
    recipients: list[str] | None = None,
    claims: list[Claim] | None = None,
) -> Envelope:
    return Envelope(
        id=id,
        conversation="c-1",
        sender=sender,
        kind=Kind.CHAT,
        content=content,
        recipients=recipients or [],
        claims=claims or [],
        ts=1700000001.0,
    )


def only_claim(env: Envelope) -> ExtractedClaim:
    (claim,) = extract_claims(env)
    return claim


# ------------------------------------------------------------------------------ parse_reply


def test_parse_clean_json() -> None:
    j = parse_reply('{"verdict": "refuted", "correct_value": "5%", "rationale": "It was 5%."}')
    assert j == Judgement(REFUTED, "5%", "It was 5%.")


def test_parse_fenced_json_with_prose_around() -> None:
    text = (
        'Here is my answer:\n```json\n{"verdict": "Supported", "correct_value": null,\n'
        ' "rationale": "matches\\n the report"}\n```\nThanks!'
    )
    assert parse_reply(text) == Judgement(SUPPORTED, None, "matches the report")


def test_parse_first_object_inside_prose() -> None:
    text = 'Verdict follows {"verdict": "refuted", "correct_value": 5, "rationale": "x"} done'
    assert parse_reply(text) == Judgement(REFUTED, 5, "x")


@pytest.mark.parametrize(
    "text",
    [
        "I think this claim is false.",
        "",
        "{not json}",
        '{"verdict": "maybe", "rationale": "?"}',
        '["supported"]',
        '{"verdict": 1}',
    ],
)
def test_parse_garbage_is_unknown(text: str) -> None:
    j = parse_reply(text)
    assert j.verdict == UNKNOWN and j.correct_value is None and j.rationale


def test_parse_ignores_odd_correct_values() -> None:
    assert parse_reply('{"verdict": "refuted", "correct_value": [1, 2]}').correct_value is None
    assert parse_reply('{"verdict": "refuted", "correct_value": "null"}').correct_value is None
    # A correct value only means something with a refutation.
    assert parse_reply('{"verdict": "supported", "correct_value": 3}').correct_value is None


# ---------------------------------------------------------------------------- build_verdict


def test_supported_states_the_claim_as_a_grounding_tool_result() -> None:
    h = held(recipients=["writer"])
    claim = only_claim(h)
    env = build_verdict(h, claim, Judgement(SUPPORTED, None, "per the report"), JudgeConfig(), 0)
    assert env is not None
    assert env.id == "judge:m-1:0" and env.kind is Kind.TOOL_RESULT
    assert env.sender == "llm-judge" and env.conversation == "c-1"
    assert env.parents == ["m-1"] and env.ts == h.ts
    assert env.recipients == ["analyst", "writer"]  # whoever could read the claim
    (stated,) = extract_claims(env)
    assert stated.fingerprint == claim.fingerprint  # the same claim, so it grounds repeats
    assert "refutes" not in env.meta
    assert env.meta["judge"] == {
        "model": "gpt-4o-mini",
        "verdict": "supported",
        "rationale": "per the report",
        "held": "m-1",
        "claim": {"key": "churn customer", "value": "7 %"},
    }
    assert env.content == 'llm-judge: "churn customer = 7 %" is supported: per the report'
    assert decode(encode(env), 10_000) == env  # a valid envelope on the wire


def test_refuted_without_a_correct_value_names_the_false_value_only() -> None:
    h = held()
    env = build_verdict(h, only_claim(h), Judgement(REFUTED, None, "churn was 5%"), JudgeConfig())
    assert env is not None
    assert env.claims == []
    assert env.meta["refutes"] == [{"key": "churn customer", "value": "7 %"}]
    assert env.meta["judge"]["verdict"] == "refuted"
    assert env.recipients == []  # the held message went to everyone: so does the verdict
    # No structured claims: the core reads the text, which must not state (ground) anything.
    assert extract_claims(env) == []


def test_refuted_with_a_correct_value_states_it() -> None:
    h = held()
    cfg = JudgeConfig(name="checker", model="m")
    env = build_verdict(h, only_claim(h), Judgement(REFUTED, "5%", "it was 5%"), cfg, 2)
    assert env is not None
    assert env.id == "judge:m-1:2" and env.sender == "checker"
    assert env.claims == [Claim("churn customer", "5%")]
    assert [c.fingerprint for c in extract_claims(env)] == ["churn customer=5 %"]
    assert env.meta["refutes"] == [{"key": "churn customer", "value": "7 %"}]
    assert env.meta["judge"]["model"] == "m" and env.meta["judge"]["correct_value"] == "5%"
    assert "is refuted (correct value: 5%)" in env.content


def test_a_refutation_whose_correct_value_is_the_claim_itself_is_dropped() -> None:
    h = held()
    assert build_verdict(h, only_claim(h), Judgement(REFUTED, "7 percent"), JudgeConfig()) is None


def test_unknown_publishes_nothing() -> None:
    h = held()
    assert build_verdict(h, only_claim(h), Judgement(UNKNOWN), JudgeConfig()) is None


def test_structured_claims_round_trip_to_the_same_fingerprint() -> None:
    h = held(content="see claims", claims=[Claim("Q3 Revenue", "$12M"), Claim("build", "failed")])
    for n, claim in enumerate(extract_claims(h)):
        env = build_verdict(h, claim, Judgement(SUPPORTED), JudgeConfig(), n)
        assert env is not None
        assert [c.fingerprint for c in extract_claims(env)] == [claim.fingerprint]


def test_long_held_ids_give_valid_verdict_ids() -> None:
    assert judge_message_id("m-1", 3) == "judge:m-1:3"
    long_id = "x" * 128
    mid = judge_message_id(long_id, 0)
    assert len(mid) <= 128 and mid == judge_message_id(long_id, 0) != judge_message_id("y", 0)
    h = held(id=long_id)
    env = build_verdict(h, only_claim(h), Judgement(SUPPORTED), JudgeConfig())
    assert env is not None and decode(encode(env), 10_000).id == mid


# ------------------------------------------------------------------------------ HTTP client


def client_config(url: str, **kw: Any) -> JudgeConfig:
    return JudgeConfig(enabled=True, endpoint=url, model="judge-model", **kw)


async def test_client_asks_the_endpoint_and_parses_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test")
    h = held()
    with FakeOpenAI(lambda req: answer("refuted", "5%", "Q3 report says 5%")) as llm:
        client = JudgeClient(client_config(llm.url, api_key_env="JUDGE_TEST_KEY"))
        try:
            j = await client.judge(h, only_claim(h))
        finally:
            await client.aclose()
    assert j == Judgement(REFUTED, "5%", "Q3 report says 5%")
    (req,) = llm.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert "response_format" not in body  # not every compatible server has it
    assert claim_key(req) == "churn customer"
    assert CHURN in body["messages"][-1]["content"]


async def test_client_sends_no_key_when_the_env_var_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    h = held()
    fenced = completion('```json\n{"verdict": "supported", "rationale": "ok"}\n```')
    with FakeOpenAI(lambda req: (200, fenced, 0.0)) as llm:
        client = JudgeClient(client_config(llm.url + "/", api_key_env="JUDGE_TEST_KEY"))
        try:
            j = await client.judge(h, only_claim(h))
        finally:
            await client.aclose()
    assert j == Judgement(SUPPORTED, None, "ok")
    assert "authorization" not in llm.requests[0]["headers"]


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ((500, {"error": "boom"}, 0.0), "HTTPStatusError"),
        ((200, "not json at all", 0.0), "JSONDecodeError"),
        ((200, {"choices": []}, 0.0), "IndexError"),
        ((200, completion("no idea, sorry"), 0.0), "unparseable"),
        ((200, completion('{"verdict": "supported"}'), 2.0), "ReadTimeout"),
    ],
)
async def test_client_failures_are_unknown(response: tuple[Any, ...], reason: str) -> None:
    h = held()
    with FakeOpenAI(lambda req: response) as llm:  # type: ignore[arg-type,return-value]
        client = JudgeClient(client_config(llm.url, timeout_s=0.3))
        try:
            j = await client.judge(h, only_claim(h))
        finally:
            await client.aclose()
    assert j.verdict == UNKNOWN
    assert reason in j.rationale


async def test_client_unreachable_endpoint_is_unknown() -> None:
    with FakeOpenAI() as llm:
        url = llm.url  # the port is closed once the server is gone
    client = JudgeClient(client_config(url, timeout_s=1.0))
    h = held()
    try:
        j = await client.judge(h, only_claim(h))
    finally:
        await client.aclose()
    assert j.verdict == UNKNOWN and "ConnectError" in j.rationale


# --------------------------------------------------------------------- record selection


def record(env: Envelope, verdict: str = "hold", unverified: str | None = "churn customer") -> Any:
    headers = [(H_VERDICT, verdict.encode())]
    if unverified is not None:
        headers.append((H_UNVERIFIED, unverified.encode()))
    value = encode(env)
    return ConsumerRecord(
        "ostracon.quarantine",
        0,
        0,
        0,
        0,
        env.conversation.encode(),
        value,
        None,
        0,
        len(value),
        headers,
    )


class ScriptedClient:
    """Answers from a dict of claim key -> judgement; tracks concurrency."""

    def __init__(self, answers: dict[str, Judgement]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []
        self.running = self.peak = 0

    async def judge(self, env: Envelope, claim: ExtractedClaim) -> Judgement:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        self.asked.append((env.id, claim.key))
        return self.answers.get(claim.key, Judgement(UNKNOWN))

    async def aclose(self) -> None:
        pass


async def test_judges_only_held_records_and_only_their_unverified_keys() -> None:
    cfg = Config(judge=JudgeConfig(enabled=True, max_concurrency=2))
    client = ScriptedClient(
        {
            "churn customer": Judgement(REFUTED, None, "no"),
            "owner": Judgement(SUPPORTED, None, "yes"),
        }
    )
    judge = Judge(cfg, "unused:9092", client)  # type: ignore[arg-type]
    two = held(content="x", id="m-2", claims=[Claim("customer churn", "7%"), Claim("owner", "bob")])
    records = [
        record(held(id="m-1")),
        record(held(id="m-1")),  # re-read: judged once
        record(held(id="m-3"), verdict="block"),
        record(held(id="m-4"), verdict="deliver-tagged"),
        record(held(id="m-5"), unverified=None),
        record(held(id="m-6", sender="llm-judge")),
        record(two, unverified="owner"),  # only owner is unverified
        record(
            held(id="m-7", content="Customer churn is 7%. The owner is bob."),
            unverified="churn customer,owner",
        ),
    ]
    outputs = await judge.judge_records(records)
    assert client.asked.count(("m-1", "churn customer")) == 1
    assert sorted(client.asked) == [
        ("m-1", "churn customer"),
        ("m-2", "owner"),
        ("m-7", "churn customer"),
        ("m-7", "owner"),
    ]
    assert [o.id for o in outputs] == ["judge:m-1:0", "judge:m-2:1", "judge:m-7:0", "judge:m-7:1"]
    assert client.peak == 2  # bounded by max_concurrency
    assert judge.stats[REFUTED] == 2 and judge.stats[SUPPORTED] == 2


async def test_undecided_claims_publish_nothing() -> None:
    judge = Judge(Config(), "unused:9092", ScriptedClient({}))  # type: ignore[arg-type]
    assert await judge.judge_records([record(held())]) == []
    assert judge.stats[UNKNOWN] == 1


# ------------------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_judge_config_is_off_by_default() -> None:
    assert Config().judge.enabled is False
    example = Path(__file__).parents[2] / "examples" / "ostracon.yaml"
    assert load_config(example).judge == JudgeConfig()


def test_cli_judge_refuses_when_disabled(tmp_path: Path) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: 127.0.0.1:9\n")
    result = runner.invoke(app, ["judge", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "judge.enabled is false" in result.output


def test_cli_judge_needs_a_broker_address(tmp_path: Path) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text("judge:\n  enabled: true\n")
    result = runner.invoke(app, ["judge", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "kafka.bootstrap_servers" in result.output


def test_cli_judge_needs_httpx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: 127.0.0.1:9\njudge:\n  enabled: true\n")
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx -> ImportError
    result = runner.invoke(app, ["judge", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "pip install 'ostracon[judge]'" in result.output
