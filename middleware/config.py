"""Sidecar configuration: YAML decoded by msgspec into typed structs.

Every error names the file, the line and the field (``ostracon.yaml:7: topics.inbound: ...``):
msgspec reports the field path, and the YAML node tree gives the line it sits on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec
import yaml

from .decision import Verdict

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Config sections reject unknown keys so a typo is an error, not a silent default."""


class KafkaConfig(_Section, frozen=True):
    # None (the default) starts the embedded broker on a free loopback port.
    bootstrap_servers: str | None = None
    group_id: str = "ostracon"
    client_id: str = "ostracon"
    # A crashed member's partitions move after this long; a new member joins in about half.
    session_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] = 10_000
    heartbeat_interval_ms: Annotated[int, msgspec.Meta(ge=100)] = 3_000
    # How long the broker may hold a fetch waiting for data. Tansu holds fetches for this long
    # even when data arrives (500 ms gave a 260 ms p99 at 1k msg/s), so keep it low.
    fetch_max_wait_ms: Annotated[int, msgspec.Meta(ge=0)] = 20
    # Producer batching delay: 2 ms helps throughput; 0 minimizes latency (adapters waiting
    # on a ruling through the sidecar).
    linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 2


class TopicsConfig(_Section, frozen=True):
    inbound: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["agents.inbound"]
    )
    delivered: str = "agents.delivered"
    quarantine: str = "ostracon.quarantine"
    dead_letter: str = "ostracon.dead-letter"
    alerts: str = "ostracon.alerts"
    recalls: str = "ostracon.recalls"
    # Shared tables every instance reads whole (accusations, blocklist changes, human
    # decisions; see ostracon.store) and vote requests for quorum gates.
    state: str = "ostracon.state"
    votes: str = "ostracon.votes"
    # Used when ostracon creates missing topics (always on the embedded broker).
    partitions: PositiveInt = 4
    # 1 suits the embedded broker; use 3 on a production cluster so acks=all means something.
    replication: PositiveInt = 1
    create: bool = True


class LimitsConfig(_Section, frozen=True):
    # Value + key + headers of an inbound record. Below Kafka's default message.max.bytes
    # (1 048 588) so the verdict headers added on forward still fit.
    max_message_bytes: PositiveInt = 1_000_000
    # Records taken per poll; their offsets are committed together once all acks are in.
    max_batch: PositiveInt = 500
    # Batches produced but not yet acknowledged: overlaps routing with broker round trips.
    # In-flight work is bounded by max_batch * max_inflight_batches records.
    max_inflight_batches: PositiveInt = 4


class DedupeConfig(_Section, frozen=True):
    # Message ids remembered for duplicate suppression; rebuilt from the output topics.
    window: PositiveInt = 100_000


class BlocklistConfig(_Section, frozen=True):
    verdict: Literal["block", "quarantine"] = "block"
    agents: dict[str, str] = {}  # agent -> reason

    @property
    def verdict_enum(self) -> Verdict:
        return Verdict(self.verdict)


class ContainmentConfig(_Section, frozen=True):
    """Claim genealogy and containment (see ostracon.containment)."""

    enabled: bool = True
    policy: Literal["low-intervention", "balanced", "strict"] = "balanced"
    # meta.role values that make a sender a hub; observed hubs are added to these
    hub_roles: list[str] = msgspec.field(
        default_factory=lambda: [
            "aggregator",
            "summarizer",
            "decision-maker",
            "orchestrator",
            "manager",
            "planner",
        ]
    )
    hub_min_dependents: PositiveInt = 2  # agents building on a sender's messages -> hub
    # balanced also holds a Yellow claim whose propagation risk reaches this (docs/risk.md):
    # 0.4 = a hub's claim, or one already spreading (3+ agents over 2+ hops; one hop sooner
    # from a sender whose earlier claims were Red); 1.0 turns it off (hubs only)
    hold_risk: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.4
    trusted_sources: list[str] = []  # senders whose claims are grounded by definition
    confirm_support: PositiveInt = 2  # independent sources (distinct model families) -> Green
    max_retries: PositiveInt = 3  # contained attempts of one claim before the circuit breaker
    # Eviction (never of held, blocked, Red or convicted lineage; see docs/risk.md)
    max_claims_per_conversation: PositiveInt = 200_000
    conversation_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 86_400.0  # in message time
    max_conversations: PositiveInt = 100_000  # beyond: least recently active unprotected go


class MonitorsConfig(_Section, frozen=True):
    """Fleet monitors (see ostracon.monitors)."""

    enabled: bool = True
    agreement_threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.75
    liveness_rounds: PositiveInt = 12  # assertions on a key without agreement -> alert
    conformity_min_values: Annotated[int, msgspec.Meta(ge=2)] = 3  # diversity before a hub
    conformity_window: PositiveInt = 10  # messages after the hub's in which collapse counts
    early_warning_every: PositiveInt = 8  # messages per conversation between R estimates
    min_recovery: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.05  # floor for delta


class RulesConfig(_Section, frozen=True):
    """Rule files (see ostracon.rules): files or directories of *.yaml, loaded in order."""

    paths: list[str] = []
    # Hot reload (see ostracon.reload): poll the files for changes and swap the new set in
    # between messages; a broken file keeps the old set and raises an alert. SIGHUP always
    # reloads, even with this off.
    reload: bool = True
    reload_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # how often files are polled


class JudgeConfig(_Section, frozen=True):
    """The optional LLM-judge agent (see ostracon.judge); off by default."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:8000/v1"  # OpenAI-compatible base URL
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # env var holding the API key; unset = no auth header
    name: str = "llm-judge"  # the judge's sender name on the bus
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    max_concurrency: PositiveInt = 4  # claims judged at once


class IdentityConfig(_Section, frozen=True):
    """Signed agent identities (see ostracon.identity; issue 5). Fields grow with the layer."""


class ByzantineConfig(_Section, frozen=True):
    """Accusations, blocklist strategies, equivocation, quorum gates (see ostracon.byzantine)."""


class SinksConfig(_Section, frozen=True):
    """Alert sinks beside the Kafka alerts topic (see ostracon.sinks)."""


class ApiConfig(_Section, frozen=True):
    """The admin HTTP API and review UI (see ostracon.api)."""


class LogConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class EmbeddedConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0  # 0 = a free port


class Config(_Section, frozen=True):
    kafka: KafkaConfig = KafkaConfig()
    topics: TopicsConfig = TopicsConfig()
    limits: LimitsConfig = LimitsConfig()
    dedupe: DedupeConfig = DedupeConfig()
    blocklist: BlocklistConfig = BlocklistConfig()
    containment: ContainmentConfig = ContainmentConfig()
    monitors: MonitorsConfig = MonitorsConfig()
    rules: RulesConfig = RulesConfig()
    judge: JudgeConfig = JudgeConfig()
    identity: IdentityConfig = IdentityConfig()
    byzantine: ByzantineConfig = ByzantineConfig()
    sinks: SinksConfig = SinksConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    embedded: EmbeddedConfig = EmbeddedConfig()

    @property
    def output_topics(self) -> list[str]:
        """Topics whose records carry the dedupe key (alerts are side outputs)."""
        t = self.topics
        return [t.delivered, t.quarantine, t.dead_letter]

    @property
    def all_topics(self) -> list[str]:
        t = self.topics
        return [*t.inbound, *self.output_topics, t.alerts, t.recalls, t.state, t.votes]


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` is ``file:line: field: problem``."""

    def __init__(self, file: str, line: int | None, field: str, problem: str) -> None:
        self.file, self.line, self.field, self.problem = file, line, field, problem
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


def load_config(path: str | Path | None) -> Config:
    """Load a config file; ``None`` gives the defaults (embedded broker)."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), None, "", f"cannot read: {exc}") from None
    return parse_config(text, str(p))


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD_RE = re.compile(r"(?:unknown|required) field `(?P<field>[^`]+)`")


T = TypeVar("T")


def decode_yaml(text: str, file: str, type_: type[T]) -> tuple[T, yaml.Node] | None:
    """Decode YAML text into ``type_`` (None for an empty document), or raise a
    :class:`ConfigError` naming the line and the field. Also used for rule files."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, line, "", f"invalid YAML: {problem}") from None
    if root is None:
        return None
    try:
        return msgspec.yaml.decode(text.encode(), type=type_), root
    except msgspec.ValidationError as exc:
        message = str(exc)
        m = _PATH_RE.search(message)
        parts = _split_path(m.group("path")) if m else []
        problem = message[: m.start()] if m else message
        f = _FIELD_RE.search(problem)
        if f:  # the offending key itself is the field
            parts = [*parts, f.group("field")]
        line = _locate(root, parts)
        field = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in parts)
        raise ConfigError(file, line, field.replace(".[", "["), problem) from None
    except msgspec.DecodeError as exc:  # YAML the safe loader refuses (e.g. python tags)
        raise ConfigError(file, None, "", f"invalid YAML: {exc}") from None


def parse_config(text: str, file: str = "<config>") -> Config:
    """Decode YAML text into a :class:`Config`, raising positioned :class:`ConfigError`."""
    decoded = decode_yaml(text, file, Config)
    if decoded is None:
        return Config()
    config, root = decoded
    k = config.kafka
    if k.heartbeat_interval_ms >= k.session_timeout_ms:
        raise ConfigError(
            file,
            _locate(root, ["kafka", "heartbeat_interval_ms"]),
            "kafka.heartbeat_interval_ms",
            f"must be less than kafka.session_timeout_ms ({k.session_timeout_ms})",
        )
    return config


def _split_path(path: str) -> list[str | int]:
    """``.topics.inbound[0]`` -> ``["topics", "inbound", 0]``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        parts.append(name if name else int(index))
    return parts


def _locate(node: yaml.Node, parts: list[str | int]) -> int:
    """Line (1-based) of the deepest node along ``parts`` that exists in the YAML tree."""
    line = node.start_mark.line + 1
    for part in parts:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
