"""Sinks against their real counterparts: a Prometheus server scraping the sidecar, an
Alertmanager receiving pushes, and HTTP receivers on loopback for the webhook and OTLP/HTTP;
a dead and a slow receiver do not stall the message path."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ostracon.config import (
    AlertmanagerSinkConfig,
    BlocklistConfig,
    Config,
    GroupingConfig,
    KafkaConfig,
    LimitsConfig,
    OtlpSinkConfig,
    PrometheusSinkConfig,
    SinksConfig,
    TopicsConfig,
    WebhookSinkConfig,
)
from ostracon.decision import decision_id
from ostracon.sinks.otlp import span_id_for, trace_id_for
from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import Sidecar
from tests.system_packages import ensure_debian

from .conftest import SidecarProcess, produce, read_all, write_config
from .test_sidecar import Running

pytestmark = pytest.mark.broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sinks: SinksConfig, inbound: str = "agents.inbound", group: str = "ostracon") -> Config:
    return Config(
        kafka=KafkaConfig(session_timeout_ms=3000, heartbeat_interval_ms=500, group_id=group),
        topics=TopicsConfig(inbound=[inbound], partitions=2),
        limits=LimitsConfig(max_batch=200),
        blocklist=BlocklistConfig(agents={"mallory": "forged a tool result"}),
        sinks=sinks,
    )


def msg(mid: str, sender: str, conv: str = "c", parents: list[str] | None = None) -> bytes:
    return msgspec.json.encode(
        {
            "id": mid,
            "conversation": conv,
            "sender": sender,
            "kind": "chat",
            "content": f"note {mid}",
            "parents": parents or [],
        }
    )


async def until(check: Any, timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check()`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


class Server:
    """A child process (Prometheus, Alertmanager) killed at the end of the test."""

    def __init__(self, argv: list[str], log: Path, ready_url: str) -> None:
        self.ready_url = ready_url
        self.out = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT)
        self.log = log

    async def ready(self) -> None:
        async def probe() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                async with httpx.AsyncClient(timeout=1) as c:
                    return (await c.get(self.ready_url)).status_code == 200
            except httpx.HTTPError:
                return False

        await until(probe, timeout=60)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


class Receiver:
    """A real HTTP server on loopback that records POSTs (path, headers, body).

    ``delay`` makes it slow: each request sleeps that long before answering 200."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if delay:
                    time.sleep(delay)
                outer.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "ostracon-dashboard.json"


def dashboard_queries() -> list[str]:
    """The dashboard's PromQL with Grafana's variables filled in."""
    dash = json.loads(DASHBOARD.read_text())
    return [
        t["expr"].replace("$__rate_interval", "1m").replace("$job", ".*")
        for p in dash["panels"]
        for t in p.get("targets", [])
    ]


# Prometheus -------------------------------------------------------------------------------


async def test_a_real_prometheus_scrapes_the_counts_of_known_traffic(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    binary = ensure_debian("prometheus", "prometheus")
    sinks = SinksConfig(prometheus=PrometheusSinkConfig(enabled=True, port=0))
    async with Running(config(sinks), broker.bootstrap) as sidecar:
        assert sidecar.sinks is not None and sidecar.sinks.metrics is not None
        target = f"127.0.0.1:{sidecar.sinks.metrics.port}"
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ostracon\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = free_port()
        prom = Server(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp_path / "prometheus.log",
            f"http://127.0.0.1:{port}/-/ready",
        )
        try:
            await prom.ready()
            values = [msg(f"m-{i}", "alice", conv=f"c-{i % 3}") for i in range(30)]
            values += [msg(f"x-{i}", "mallory") for i in range(5)]
            await produce(broker.bootstrap, "agents.inbound", values)
            t = sidecar.config.topics
            await read_all(broker.bootstrap, [t.delivered, t.quarantine], 35, settle=0)

            async def query(promql: str) -> float | None:
                async with httpx.AsyncClient(timeout=5) as c:
                    r = await c.get(
                        f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}
                    )
                result = r.json()["data"]["result"]
                return float(result[0]["value"][1]) if result else None

            expected = {
                'sum(ostracon_decisions_total{verdict="deliver"})': 30.0,
                'ostracon_decisions_total{job="ostracon",verdict="block"}': 5.0,
                'ostracon_alerts_total{kind="blocklisted",severity="critical"}': 5.0,
                "ostracon_decide_duration_seconds_count": 35.0,
                "ostracon_blocklist_agents": 1.0,
            }

            async def all_match() -> bool:
                return all([await query(q) == v for q, v in expected.items()])

            await until(all_match, timeout=30, every=0.5)
            # a histogram quantile over the scraped buckets is a number, as Grafana needs
            p99 = await query(
                "histogram_quantile(0.99, sum by (le) (ostracon_decide_duration_seconds_bucket))"
            )
            assert p99 is not None and 0 < p99 < 1
            # every query of the Grafana dashboard parses and finds series in this Prometheus
            for expr in dashboard_queries():
                async with httpx.AsyncClient(timeout=5) as c:
                    r = await c.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr})
                assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
        finally:
            prom.stop()


# Alertmanager -----------------------------------------------------------------------------


async def test_a_real_alertmanager_lists_the_pushed_alert(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    binary = ensure_debian("prometheus-alertmanager", "prometheus-alertmanager")
    (tmp_path / "alertmanager.yml").write_text(
        "route: {receiver: 'null'}\nreceivers:\n  - name: 'null'\n"
    )
    port = free_port()
    am = Server(
        [
            binary,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
        f"http://127.0.0.1:{port}/-/ready",
    )
    try:
        await am.ready()
        sinks = SinksConfig(
            alertmanager=AlertmanagerSinkConfig(
                enabled=True, url=f"http://127.0.0.1:{port}", labels={"env": "test"}
            )
        )
        async with Running(config(sinks), broker.bootstrap) as sidecar:
            await produce(broker.bootstrap, "agents.inbound", [msg("m-1", "mallory", "board")])
            records = await read_all(broker.bootstrap, [sidecar.config.topics.alerts], 1, settle=0)
            on_topic = json.loads(records[0].value)

            async def listed() -> list[dict[str, Any]]:
                async with httpx.AsyncClient(timeout=5) as c:
                    alerts = (await c.get(f"http://127.0.0.1:{port}/api/v2/alerts")).json()
                return [a for a in alerts if a["labels"].get("alertname") == "blocklisted"]

            found = await until(listed, timeout=30)
        assert found[0]["labels"] == {
            "alertname": "blocklisted",
            "severity": "critical",
            "source": "ostracon",
            "conversation": "board",
            "agents": "mallory",
            "env": "test",
        }
        notes = found[0]["annotations"]
        # the same alert as the Kafka record: one id across sinks
        assert (
            notes["alert_id"] == on_topic["id"] and notes["decision_id"] == on_topic["decision_id"]
        )
        assert notes["evidence"] == "m-1" and found[0]["status"]["state"] == "active"
        assert sidecar.sinks is not None
        assert sidecar.sinks.notifiers[0][0].counters()["sent"] == 1
    finally:
        am.stop()


# webhook + OTLP/HTTP + grouping -----------------------------------------------------------


async def test_webhook_and_otlp_receive_grouped_alerts_and_linked_spans(
    broker: EmbeddedBroker, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # the CrewAI tests set it
    sinks = SinksConfig(
        grouping=GroupingConfig(window_s=1.0),
        webhook=WebhookSinkConfig(
            enabled=True, url=receiver.url + "/hook", body="full", headers={"X-Token": "t"}
        ),
        otlp=OtlpSinkConfig(enabled=True, endpoint=receiver.url + "/v1/traces", batch=10),
    )
    async with Running(config(sinks), broker.bootstrap):
        values = [msg("m-1", "alice"), msg("m-2", "bob", parents=["m-1"])]
        values += [msg(f"x-{i}", "mallory") for i in range(4)]
        await produce(broker.bootstrap, "agents.inbound", values)

        def hooks() -> list[dict[str, Any]]:
            return [json.loads(b) for p, _, b in receiver.requests if p == "/hook"]

        # the first blocklisted alert at once, the three repeats as one after the window
        await until(lambda: len(hooks()) >= 2, timeout=30)
        await asyncio.sleep(1.5)  # nothing more arrives for this group

        def span_count() -> int:
            return sum(
                len(ss.spans)
                for p, _, b in receiver.requests
                if p == "/v1/traces"
                for rs in ExportTraceServiceRequest.FromString(b).resource_spans
                for ss in rs.scope_spans
            )

        await until(lambda: span_count() >= 6)
    assert span_count() == 6
    first, repeat = hooks()
    assert first["alert"]["kind"] == "blocklisted" and first["alert"]["count"] == 1
    assert first["alert"]["repeat"] is False and first["text"].startswith("[critical] blocklisted")
    assert repeat["alert"]["count"] == 3 and repeat["alert"]["repeat"] is True
    assert "repeated 3x" in repeat["text"] and repeat["blocks"][0]["type"] == "header"
    headers = [h for p, h, _ in receiver.requests if p == "/hook"]
    assert all(h.get("x-token") == "t" for h in headers)

    spans = {}
    for path, hdrs, body in receiver.requests:
        if path != "/v1/traces":
            continue
        assert hdrs["content-type"] == "application/x-protobuf"
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert service["service.name"] == "ostracon"
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {a.key: a.value for a in span.attributes}
                    spans[attrs["messaging.message.id"].string_value] = (span, attrs)
    assert set(spans) == {"m-1", "m-2", "x-0", "x-1", "x-2", "x-3"}
    m1, m2 = spans["m-1"][0], spans["m-2"][0]
    assert m1.name == "ostracon decide"
    assert int.from_bytes(m1.trace_id) == trace_id_for("c") == int.from_bytes(m2.trace_id)
    assert int.from_bytes(m1.span_id) == span_id_for(decision_id("c", "m-1"))
    # m-2 answers m-1: its span is m-1's child and links to it, with ids derived, not sent
    assert m2.parent_span_id == m1.span_id and [ln.span_id for ln in m2.links] == [m1.span_id]
    attrs = spans["x-0"][1]
    assert attrs["gen_ai.agent.name"].string_value == "mallory"
    assert attrs["gen_ai.conversation.id"].string_value == "c"
    assert attrs["ostracon.verdict"].string_value == "block"
    assert [e.name for e in spans["x-0"][0].events] == ["ostracon.alert"]


# a dead and a slow sink -------------------------------------------------------------------


async def _route_all(cfg: Config, bootstrap: str, n: int, prefix: str) -> tuple[float, Sidecar]:
    """Produce ``n`` messages (each raises an alert), then time the sidecar routing them."""
    values = [msg(f"{prefix}-{i}", "mallory", conv=f"c-{i % 50}") for i in range(n)]
    await produce(bootstrap, cfg.topics.inbound[0], values)
    async with Running(cfg, bootstrap) as sidecar:
        await until(lambda: sidecar.stats.consumed > 0, timeout=30, every=0.005)
        started = time.perf_counter()
        await until(lambda: sidecar.stats.consumed >= n, timeout=120, every=0.005)
        elapsed = time.perf_counter() - started
        # the sink counters are read before close (close drops what is still queued)
        return elapsed, sidecar


async def test_a_dead_and_a_slow_sink_do_not_stall_routing(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # the CrewAI tests set it
    n = 3000
    slow = Receiver(delay=2.0)  # answers each request after 2 s
    try:
        base, _ = await _route_all(
            config(SinksConfig(), inbound="in-base", group="g-base"), broker.bootstrap, n, "b"
        )
        sinks = SinksConfig(
            # every alert is a notification, none held back by the rate limit
            grouping=GroupingConfig(window_s=0, rate_per_minute=0),
            webhook=WebhookSinkConfig(  # nothing listens there: connection refused
                enabled=True,
                url=f"http://127.0.0.1:{free_port()}/hook",
                queue_size=100,
                backoff_s=0.05,
                max_retries=2,
            ),
            otlp=OtlpSinkConfig(
                enabled=True, endpoint=slow.url + "/v1/traces", queue_size=100, batch=50
            ),
            prometheus=PrometheusSinkConfig(enabled=True, port=0),
        )
        cfg = config(sinks, inbound="in-sinks", group="g-sinks")
        with_sinks, sidecar = await _route_all(cfg, broker.bootstrap, n, "s")
    finally:
        slow.close()
    print(f"\nrouted {n}: {base:.2f} s without sinks, {with_sinks:.2f} s with a dead webhook")
    assert sidecar.sinks is not None
    webhook, otlp = sidecar.sinks.sinks
    assert sidecar.stats.verdicts and sum(sidecar.stats.verdicts.values()) == n
    assert webhook.dropped >= n - 100 and webhook.sent == 0 and webhook.failures > 0
    assert otlp.dropped > 0
    # generous: the same traffic routed at least a third as fast with both receivers broken
    # (the precise overhead is measured in benchmarks, not asserted here)
    assert with_sinks < 3 * base + 1.0, (base, with_sinks)


# structlog JSON lines from the real process -----------------------------------------------


async def test_the_sidecar_process_logs_alerts_as_json_lines_and_serves_metrics(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "blocklist:\n  agents: {mallory: forged}\n"
        "sinks:\n"
        "  grouping: {window_s: 0}\n"
        "  log: {enabled: true}\n"
        f"  prometheus: {{enabled: true, port: {port}}}\n",
    )
    proc = SidecarProcess(cfg, tmp_path / "sidecar.log").start()
    try:
        await proc.wait_for("sidecar consuming")
        await produce(broker.bootstrap, "agents.inbound", [msg("m-1", "mallory", "q3")])
        line = await proc.wait_for("alert")
        assert line["kind"] == "blocklisted" and line["level"] == "critical"
        assert line["agents"] == ["mallory"] and line["evidence"] == ["m-1"]
        assert line["decision_id"] == decision_id("q3", "m-1") and line["id"].startswith("a-")
        assert isinstance(line["ts"], float) and line["count"] == 1
        async with httpx.AsyncClient(timeout=5) as c:
            text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'ostracon_decisions_total{verdict="block"} 1.0' in text
    finally:
        proc.stop()
