"""A span per decision over OTLP/HTTP, built and exported with the OpenTelemetry SDK.

Ids are derived, not propagated, so links work without any context in the messages:
a conversation is a trace (``trace_id`` = the first 16 bytes of blake2b(conversation)), and a
message's span is its decision's span (``span_id`` = the first 8 bytes of the decision id,
``ostracon.decision.decision_id(conversation, message_id)``). The span of a message is a child
of its first parent's span and links to every parent's span, so a trace viewer shows the
reply tree and a claim's spread across agents. An agent that exports its own spans with the
same derivation joins the same trace.

Attributes: GenAI semantic conventions where they fit (``gen_ai.agent.name`` = sender,
``gen_ai.conversation.id``), ``messaging.message.id``, and ``ostracon.*`` for the verdict,
risk, rules, claims and reasons; each alert is a span event ``ostracon.alert``.

Spans are built and exported on a worker thread (the SDK's exporter is blocking), from the
sink's bounded queue; the exporter's result drives the queue's retries and drop counter.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    NoOpTracer,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)

from ..config import OtlpSinkConfig
from ..decision import Decision, decision_id
from ..envelope import Envelope
from .queue import QueuedSink, log

SPAN_NAME = "ostracon decide"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)

# (envelope, decision, wall-clock seconds when decided, seconds it took)
DecisionItem = tuple[Envelope, Decision, float, float]


def trace_id_for(conversation: str) -> int:
    """The trace of a conversation (never 0, which OpenTelemetry reserves for "invalid")."""
    value = int.from_bytes(hashlib.blake2b(conversation.encode(), digest_size=16).digest())
    return value or 1


def span_id_for(did: str) -> int:
    """A message's span id from its decision id (``d-`` + 24 hex digits)."""
    return int(did[2:18], 16) or 1


class _FixedIds(IdGenerator):
    """Hands out the ids set just before ``start_span`` (one worker thread builds spans)."""

    def __init__(self) -> None:
        self.trace_id = 1
        self.span_id = 1

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class _Collect(SpanProcessor):
    """Keeps ended spans for the worker to export as one batch."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class OtlpSink(QueuedSink[DecisionItem]):
    def __init__(self, cfg: OtlpSinkConfig) -> None:
        super().__init__("otlp", cfg)
        self.flagged_only = cfg.decisions == "flagged"
        self.exporter = OTLPSpanExporter(
            endpoint=cfg.endpoint, headers=dict(cfg.headers), timeout=cfg.timeout_s
        )
        self._ids = _FixedIds()
        self._collected = _Collect()
        provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=Resource.create({"service.name": cfg.service_name}),
            id_generator=self._ids,
            shutdown_on_exit=False,
        )
        provider.add_span_processor(self._collected)
        self.tracer = provider.get_tracer("ostracon")
        # The standard opt-out (CrewAI users set it to silence its telemetry) turns the SDK
        # into no-ops; honour it, and say so rather than export nothing silently.
        self.disabled = isinstance(self.tracer, NoOpTracer)
        if self.disabled:
            log.warning("OTEL_SDK_DISABLED is true: the otlp sink exports no spans")

    def wants(self, decision: Decision) -> bool:
        if self.disabled:
            return False
        return not self.flagged_only or decision.verdict.severity > 0 or bool(decision.alerts)

    async def send(self, batch: list[DecisionItem]) -> None:
        await asyncio.to_thread(self._export, batch)

    def _export(self, batch: list[DecisionItem]) -> None:
        spans = [self.build(*item) for item in batch]
        if self.exporter.export(spans) is not SpanExportResult.SUCCESS:
            raise RuntimeError(f"OTLP export of {len(spans)} spans failed")

    async def shut(self) -> None:
        self.exporter.shutdown()

    def build(
        self, env: Envelope, decision: Decision, decided_at: float, seconds: float
    ) -> ReadableSpan:
        """The decision's span (ended; not exported)."""
        conv = env.conversation
        trace_id = trace_id_for(conv)
        links = [
            Link(SpanContext(trace_id, span_id_for(decision_id(conv, p)), True, _SAMPLED))
            for p in env.parents
        ]
        parent: Context | None = None
        if links:
            parent = set_span_in_context(NonRecordingSpan(links[0].context))
        self._ids.trace_id, self._ids.span_id = trace_id, span_id_for(decision.id)
        end = int(decided_at * 1e9)
        start = end - int(seconds * 1e9)
        attrs: dict[str, Any] = {
            "gen_ai.agent.name": env.sender,
            "gen_ai.conversation.id": conv,
            "messaging.message.id": env.id,
            "ostracon.decision.id": decision.id,
            "ostracon.message.kind": env.kind.value,
            "ostracon.verdict": decision.verdict.value,
            "ostracon.risk": decision.risk,
            "ostracon.rules": list(decision.rules),
            "ostracon.claims": [f"{c.key}={c.value}" for c in decision.claims],
            "ostracon.claim_labels": [c.label.value for c in decision.claims],
        }
        if env.recipients:
            attrs["ostracon.recipients"] = list(env.recipients)
        if decision.reasons:
            attrs["ostracon.reasons"] = list(decision.reasons)
        span = self.tracer.start_span(
            SPAN_NAME,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attrs,
            links=links,
            start_time=start,
        )
        for alert in decision.alerts:
            span.add_event(
                "ostracon.alert",
                {
                    "ostracon.alert.id": alert.id,
                    "ostracon.alert.kind": alert.kind,
                    "ostracon.alert.severity": alert.severity.value,
                    "ostracon.alert.summary": alert.summary,
                },
                timestamp=end,
            )
        span.end(end_time=end)
        return self._collected.spans.pop()
