"""Sinks without the network: grouping, the bounded queue, metrics text, payload shapes,
structlog lines, OTLP span ids and links, and the alert id/claims the core stamps."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from ostracon import logs
from ostracon.config import (
    AlertmanagerSinkConfig,
    ConfigError,
    LogSinkConfig,
    OtlpSinkConfig,
    PrometheusSinkConfig,
    QueuedSinkConfig,
    SinksConfig,
    WebhookSinkConfig,
    parse_config,
)
from ostracon.core import State
from ostracon.decision import Alert, Decision, Severity, Verdict, alert_id, decision_id
from ostracon.envelope import Envelope, InvalidEnvelope, Kind
from ostracon.routing import Outcome, Output, Route, alert_output
from ostracon.sinks import AlertGroups, Notification, PermanentError, QueuedSink, SinkHub
from ostracon.sinks.alertmanager import AlertmanagerSink
from ostracon.sinks.hub import dead_letter_alert
from ostracon.sinks.log import LogSink
from ostracon.sinks.metrics import Metrics
from ostracon.sinks.otlp import OtlpSink, span_id_for, trace_id_for
from ostracon.sinks.webhook import slack_body
from ostracon.transport.memory import MemoryBus


def alert(kind: str = "red-claim", conv: str = "c", agents: tuple[str, ...] = ("eve",)) -> Alert:
    return Alert(
        kind=kind,
        severity=Severity.CRITICAL,
        summary=f"{kind} from {','.join(agents)}",
        conversation=conv,
        agents=list(agents),
        evidence=["m-1"],
        rules=["containment"],
        decision_id="d-0123456789abcdef01234567",
        ts=100.0,
        id="a-1",
        claims=["revenue q3=8.1m usd"],
    )


# grouping ---------------------------------------------------------------------------------


def test_repeats_within_the_window_become_one_notification_with_a_count() -> None:
    groups = AlertGroups(window_s=10, max_groups=100)
    first = groups.add(alert(), now=0.0)
    assert [(n.count, n.repeat) for n in first] == [(1, False)]
    for t in range(1, 8):
        assert groups.add(alert(), now=float(t)) == []
    other = groups.add(alert(agents=("bob",)), now=8.0)  # other agents: its own group
    assert len(other) == 1 and other[0].alert.agents == ["bob"]
    assert groups.due(9.9) == []
    closed = groups.due(10.0)
    assert [(n.count, n.repeat, n.alert.agents) for n in closed] == [(7, True, ["eve"])]
    assert "repeated 7x" in closed[0].title()
    assert groups.suppressed == 7
    # after the window the next alert notifies at once again
    assert len(groups.add(alert(), now=11.0)) == 1


def test_window_zero_sends_everything_and_groups_are_bounded() -> None:
    assert all(len(AlertGroups(0, 10).add(alert(), float(t))) == 1 for t in range(5))
    groups = AlertGroups(window_s=60, max_groups=3)
    groups.add(alert(conv="c0"), 0.0)
    groups.add(alert(conv="c0"), 0.1)  # a repeat in the oldest group
    for i in range(1, 4):
        out = groups.add(alert(conv=f"c{i}"), 1.0)
    assert len(groups) == 3
    # the fourth group pushed out the oldest, whose repeat is reported now
    assert [(n.alert.conversation, n.count, n.repeat) for n in out] == [
        ("c0", 1, True),
        ("c3", 1, False),
    ]
    flushed = groups.flush(2.0)
    assert flushed == [] and len(groups) == 0


def test_a_flood_of_distinct_alerts_is_rate_limited_and_summarised() -> None:
    # 500 alerts in 500 conversations: grouping folds none of them
    groups = AlertGroups(window_s=60, max_groups=10_000, rate_per_minute=60)
    sent = [n for i in range(500) for n in groups.add(alert(conv=f"c{i}"), now=0.0)]
    assert len(sent) == 60  # the burst: one minute's worth
    assert groups.rate_limited == 440
    # a second later one token is back: the summary of what was held back rides on it
    later = groups.add(alert(conv="late"), now=1.0)
    assert [n.alert.kind for n in later] == ["alerts-rate-limited", "red-claim"]
    assert later[0].count == 440 and "440 alert notifications held back" in later[0].title()
    # no limit: everything goes
    free = AlertGroups(window_s=60, max_groups=10_000, rate_per_minute=0)
    assert sum(len(free.add(alert(conv=f"c{i}"), 0.0)) for i in range(500)) == 500


def test_what_is_held_back_at_shutdown_is_still_summarised() -> None:
    groups = AlertGroups(window_s=60, max_groups=100, rate_per_minute=1)
    assert len(groups.add(alert(conv="a"), 0.0)) == 1
    assert groups.add(alert(conv="b"), 0.1) == []
    assert [(n.alert.kind, n.count) for n in groups.flush(0.2)] == [("alerts-rate-limited", 1)]


# the bounded queue ------------------------------------------------------------------------


class Flaky(QueuedSink[int]):
    def __init__(self, cfg: QueuedSinkConfig, fail: int = 0, delay: float = 0.0) -> None:
        super().__init__("flaky", cfg)
        self.fail, self.delay = fail, delay
        self.got: list[int] = []
        self.attempts = 0

    async def send(self, batch: list[int]) -> None:
        self.attempts += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("refused")
        self.got += batch


async def test_failed_batches_are_retried_with_backoff_then_dropped_and_counted() -> None:
    cfg = QueuedSinkConfig(batch=10, max_retries=2, backoff_s=0.01)
    sink = Flaky(cfg, fail=2)  # two failures, then the third attempt succeeds
    await sink.start()
    for i in range(5):
        sink.offer(i)
    assert await sink.drain(2.0)
    assert sink.got == [0, 1, 2, 3, 4] and sink.sent == 5 and sink.failures == 2
    sink.fail = 99  # now dead: 1 + 2 retries, then the batch is dropped
    sink.offer(5)
    assert await sink.drain(2.0)
    assert sink.dropped == 1 and sink.failures == 5 and sink.attempts == 6
    await sink.close()


async def test_a_permanent_error_is_not_retried() -> None:
    class Rejects(QueuedSink[int]):
        async def send(self, batch: list[int]) -> None:
            raise PermanentError("HTTP 400")

    sink = Rejects("rejects", QueuedSinkConfig(max_retries=5, backoff_s=1.0))
    await sink.start()
    sink.offer(1)
    assert await sink.drain(0.5)
    assert (sink.dropped, sink.failures) == (1, 1)
    await sink.close()


async def test_a_slow_sink_never_blocks_offer_and_drops_beyond_its_queue() -> None:
    sink = Flaky(QueuedSinkConfig(queue_size=100, batch=10), delay=0.5)
    await sink.start()
    started = time.perf_counter()
    accepted = sum(sink.offer(i) for i in range(10_000))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5  # 10 000 offers against a receiver that takes 0.5 s per batch
    assert accepted == 100 and sink.dropped == 9_900
    await sink.close(timeout=0.1)  # what is left on close is dropped and counted
    assert sink.sent + sink.dropped == 10_000


# metrics ----------------------------------------------------------------------------------


class FakeStats:
    """The sidecar's Stats shape (ostracon.transport.kafka.Stats) without a sidecar."""

    def __init__(self) -> None:
        self.consumed = 7
        self.duplicates = 1
        self.routed: collections.Counter[str] = collections.Counter({"delivered": 5})
        self.verdicts: collections.Counter[Verdict] = collections.Counter({Verdict.DELIVER: 5})
        self.dead_letter_reasons: collections.Counter[str] = collections.Counter({"schema": 1})


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_expose_decisions_rules_alerts_histograms_and_gauges() -> None:
    state = State(blocklist={"mallory": "x", "eve": "y"})
    m = Metrics(FakeStats(), state)
    held = Decision("d-1", "m-1", "c", "eve", Verdict.HOLD, risk=0.45, rules=["containment"])
    m.observe(held, 0.0003)
    m.observe(Decision("d-2", "m-2", "c", "bob", Verdict.DELIVER), 0.00002)
    m.alert(alert())
    got = scrape(m)
    assert got["ostracon_decisions_total", (("verdict", "deliver"),)] == 5
    assert got["ostracon_decisions_total", (("verdict", "block"),)] == 0
    assert got["ostracon_messages_consumed_total", ()] == 7
    assert got["ostracon_dead_letters_total", (("reason", "schema"),)] == 1
    assert got["ostracon_rule_matches_total", (("rule", "containment"),)] == 1
    assert got["ostracon_alerts_total", (("kind", "red-claim"), ("severity", "critical"))] == 1
    assert got["ostracon_decide_duration_seconds_count", ()] == 2
    assert got["ostracon_decide_duration_seconds_bucket", (("le", "0.0005"),)] == 2
    assert got["ostracon_decide_duration_seconds_bucket", (("le", "2.5e-05"),)] == 1
    assert got["ostracon_decision_risk_bucket", (("le", "0.5"),)] == 2
    assert got["ostracon_decision_risk_sum", ()] == pytest.approx(0.45)
    assert got["ostracon_blocklist_agents", ()] == 2
    assert got["ostracon_quarantine_messages", ()] == 1
    state.resolved["d-1"] = "release"
    m.prune()
    assert scrape(m)["ostracon_quarantine_messages", ()] == 0


def test_metrics_observe_costs_about_a_microsecond() -> None:
    """A guard against a 10x regression (e.g. prometheus-client objects on the hot path);
    the number itself belongs to a benchmark, so the bound is loose."""
    m = Metrics(FakeStats(), State())
    d = Decision("d-1", "m-1", "c", "eve", Verdict.DELIVER_TAGGED, risk=0.3, rules=["a", "b"])
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        m.observe(d, 0.0001)
    per = (time.perf_counter() - started) / n
    assert per < 10e-6, f"{per * 1e6:.2f} us per decision"


# payloads ---------------------------------------------------------------------------------


def test_slack_body_has_text_and_blocks_and_full_adds_the_alert() -> None:
    note = Notification(alert(), time=200.0, count=3, repeat=True)
    body = slack_body(note)
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("[critical] red-claim in c:") and "repeated 3x" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    fields = " ".join(f["text"] for f in body["blocks"][2]["fields"])
    assert "*Agents*\neve" in fields and "revenue q3=8.1m usd" in fields and "*Count*\n3" in fields
    full = slack_body(note, full=True)
    assert full["alert"]["id"] == "a-1" and full["alert"]["count"] == 3
    assert json.loads(json.dumps(full)) == full


def test_alertmanager_payload_labels_identify_and_annotations_describe() -> None:
    sink = AlertmanagerSink(AlertmanagerSinkConfig(enabled=True, labels={"env": "test"}))
    p = sink.payload(Notification(alert(), time=0.0))
    assert sink.url == "http://127.0.0.1:9093/api/v2/alerts"
    assert p["labels"] == {
        "env": "test",
        "alertname": "red-claim",
        "severity": "critical",
        "source": "ostracon",
        "conversation": "c",
        "agents": "eve",
    }
    assert p["annotations"]["alert_id"] == "a-1" and p["annotations"]["count"] == "1"
    assert p["startsAt"] == "1970-01-01T00:00:00.000+00:00"
    assert p["endsAt"] == "1970-01-01T00:05:00.000+00:00"


async def test_log_sink_writes_one_json_line_per_alert(capsys: pytest.CaptureFixture[str]) -> None:
    saved, handlers = structlog.get_config(), logging.root.handlers[:]
    logs.configure("info", "json")  # binds the captured stderr: restored below
    try:
        sink = LogSink(LogSinkConfig(enabled=True))
        await sink.start()
        sink.offer(Notification(alert(), time=1.0))
        sink.offer(Notification(alert(kind="liveness"), time=2.0, count=4, repeat=True))
        assert await sink.drain(2.0)
        await sink.close()
    finally:
        structlog.configure(**saved)
        logging.root.handlers[:] = handlers
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if '"alert"' in x]
    assert [(x["kind"], x["count"], x["repeat"], x["level"]) for x in lines] == [
        ("red-claim", 1, False, "critical"),
        ("liveness", 4, True, "critical"),
    ]
    assert lines[0]["claims"] == ["revenue q3=8.1m usd"] and lines[0]["event"] == "alert"


# OTLP span ids ----------------------------------------------------------------------------


def test_decision_span_ids_are_derived_and_link_to_the_parents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # the CrewAI tests set it
    sink = OtlpSink(OtlpSinkConfig(enabled=True))
    env = Envelope(
        id="m-2",
        conversation="c",
        sender="bob",
        kind=Kind.CHAT,
        content="x",
        parents=["m-1", "m-0"],
    )
    did = decision_id("c", "m-2")
    decision = Decision(did, "m-2", "c", "bob", Verdict.HOLD, risk=0.5, alerts=[alert()])
    span = sink.build(env, decision, decided_at=1000.0, seconds=0.001)
    ctx = span.get_span_context()
    assert ctx.trace_id == trace_id_for("c") and ctx.span_id == span_id_for(did)
    assert span.parent is not None and span.parent.span_id == span_id_for(decision_id("c", "m-1"))
    assert [link.context.span_id for link in span.links] == [
        span_id_for(decision_id("c", p)) for p in ("m-1", "m-0")
    ]
    assert span.attributes is not None and span.attributes["gen_ai.agent.name"] == "bob"
    assert span.attributes["ostracon.verdict"] == "hold"
    assert [e.name for e in span.events] == ["ostracon.alert"]
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time == 1_000_000


# the alert model --------------------------------------------------------------------------


def test_the_core_stamps_alert_id_decision_time_and_claims_deterministically() -> None:
    def run() -> list[Alert]:
        bus = MemoryBus()
        bus.core.state.blocklist["mallory"] = "test"
        env = Envelope(id="m-9", conversation="c", sender="mallory", kind=Kind.CHAT, content="hi")
        outcome = bus.publish(msgspec_replace_ts(env, 42.0))
        assert outcome.decision is not None
        return outcome.decision.alerts

    first, again = run(), run()
    assert first == again and len(first) == 1
    a = first[0]
    assert a.id == alert_id(a.decision_id, "blocklisted", 0) and a.id.startswith("a-")
    assert a.ts == 42.0 and a.decision_id == decision_id("c", "m-9")


def msgspec_replace_ts(env: Envelope, ts: float) -> Envelope:
    import msgspec

    return msgspec.structs.replace(env, ts=ts)


def test_sink_config_errors_name_the_line_and_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("sinks:\n  webhook:\n    enabled: true\n", "o.yaml")
    assert str(err.value).startswith("o.yaml:2: sinks.webhook: url must be an http(s) URL")
    with pytest.raises(ConfigError) as err:
        parse_config("sinks:\n  alertmanager:\n    queue_size: 0\n", "o.yaml")
    assert str(err.value).startswith("o.yaml:3: sinks.alertmanager.queue_size:")
    cfg = parse_config("sinks:\n  webhook: {enabled: true, url: 'http://h/x'}\n").sinks
    assert cfg.any_enabled and isinstance(cfg.webhook, WebhookSinkConfig)


def test_the_grafana_dashboard_uses_only_metrics_the_sidecar_exports() -> None:
    import re
    from pathlib import Path

    dash = json.loads(
        (Path(__file__).parents[2] / "docs" / "grafana" / "ostracon-dashboard.json").read_text()
    )
    assert dash["schemaVersion"] >= 36 and dash["uid"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {name for e in exprs for name in re.findall(r"\bostracon_[a-z_]+", e)}
    m = Metrics(FakeStats(), State(), [Flaky(QueuedSinkConfig())], AlertGroups(1, 1))
    m.alert(alert())
    m.observe(Decision("d-1", "m-1", "c", "eve", Verdict.HOLD, rules=["x"]), 0.001)
    exported = {name for name, _ in scrape(m)}
    assert used - exported == set()


def test_the_otel_opt_out_variable_turns_the_otlp_sink_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    sink = OtlpSink(OtlpSinkConfig(enabled=True))
    assert sink.disabled and not sink.wants(Decision("d-1", "m", "c", "a", Verdict.BLOCK))


# the hub ----------------------------------------------------------------------------------


def test_the_hub_notifies_alerts_the_router_wrote_beside_the_decision() -> None:
    """Alert records the router adds itself (identity failures on a dead-lettered record,
    accusations' blocklist changes, a lost quorum release) reach the notifying sinks and the
    alert counter too, not only the decision's own alerts. The outcome is built by hand the
    way Router._refuse builds it (an alert record, then the dead letter, no decision)."""
    cfg = SinksConfig(
        log=LogSinkConfig(enabled=True, min_severity="info"),
        prometheus=PrometheusSinkConfig(enabled=True),
    )
    hub = SinkHub(cfg, FakeStats(), State())
    forged = alert(kind="forged-message")
    refused = Outcome(
        "k",
        [alert_output(forged), Output(Route.DEAD_LETTER, None, b"x", [])],
        error=InvalidEnvelope("forged", "bad signature"),
    )
    hub.outcome(refused, 0.0001)
    decided = Decision("d-1", "m-1", "c", "eve", Verdict.BLOCK, alerts=[alert(kind="blocklisted")])
    accused = alert(kind="agent-blocked", conv="")
    hub.outcome(
        Outcome("k2", [alert_output(accused), *forward_alerts(decided)], decision=decided),
        0.0001,
    )
    assert hub.metrics is not None
    assert dict(hub.metrics.alerts) == {
        ("forged-message", "critical"): 1,
        ("agent-blocked", "critical"): 1,
        ("blocklisted", "critical"): 1,
    }
    log_sink = hub.notifiers[0][0]
    assert log_sink.depth == 3


def forward_alerts(decision: Decision) -> list[Output]:
    """The records ``routing.forward`` writes for a decision: its alerts, then the message."""
    return [*(alert_output(a) for a in decision.alerts), Output(Route.QUARANTINE, None, b"", [])]


def test_the_held_gauge_is_bounded_and_prunes_only_when_a_reviewer_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Quarantined messages nobody reviews must not grow the sidecar's memory without bound
    (the review queue and the router's held records are bounded too)."""
    from ostracon.sinks import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "MAX_HELD", 100)
    state = State()
    m = Metrics(FakeStats(), state)
    for i in range(250):
        m.observe(Decision(f"d-{i}", f"m-{i}", "c", "eve", Verdict.QUARANTINE), 0.0001)
    assert len(m.held) == 100 and "d-249" in m.held and "d-149" not in m.held
    state.resolved["d-200"] = "deny"
    m.prune()
    assert len(m.held) == 99 and "d-200" not in m.held
    state.resolved.update({f"x-{i}": "deny" for i in range(10)})  # none of ours
    m.prune()
    assert scrape(m)["ostracon_quarantine_messages", ()] == 99


def test_a_malformed_record_raises_one_dead_letter_alert() -> None:
    cfg = SinksConfig(
        log=LogSinkConfig(enabled=True, min_severity="info"),
        prometheus=PrometheusSinkConfig(enabled=True),
    )
    hub = SinkHub(cfg, FakeStats(), State())
    bad = Outcome(
        "dlq:agents.inbound/2/17",
        [Output(Route.DEAD_LETTER, None, b"{", [])],
        error=InvalidEnvelope("invalid-json", "truncated"),
    )
    hub.outcome(bad, 0.0001)
    dup = Outcome("dlq:agents.inbound/2/17", [], error=bad.error, duplicate=True)
    hub.outcome(dup, 0.0001)  # a re-read after a crash is not announced again
    assert hub.metrics is not None
    assert dict(hub.metrics.alerts) == {("dead-letter", "warning"): 1}
    note = hub.notifiers[0][0]._queue[0]
    assert note.alert.evidence == ["agents.inbound/2/17"]
    assert "(invalid-json): truncated" in note.alert.summary
    assert note.alert.id == dead_letter_alert(bad.key, "invalid-json", "truncated").id
