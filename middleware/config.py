"""Sidecar configuration: YAML decoded by msgspec into typed structs.

Every error names the file, the line and the field (``ostracon.yaml:7: topics.inbound: ...``):
msgspec reports the field path, and the YAML node tree gives the line it sits on.
"""

from __future__ import annotations

import ipaddress
import os
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
    # Records routed between two hand-offs to the producer: the outputs of the first records
    # of a poll leave while the rest is routed (latency), at one event-loop turn each.
    handoff_every: PositiveInt = 8


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
    """Rule files (see ostracon.rules): files or directories of *.yaml, loaded in order.

    A relative path in a config file is relative to that file's directory (as Prometheus
    reads ``rule_files``), so a config works from any working directory."""

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


class AgentKeyConfig(_Section, frozen=True):
    """One registered agent's key: exactly one of the three (checked, with the line, on load).

    ``hmac_secret`` / the env var's value: the HMAC-SHA256 key is the text's UTF-8 bytes.
    ``ed25519_public_key``: the raw 32-byte public key in base64 (standard or URL-safe).
    """

    hmac_secret: str | None = None
    hmac_secret_env: str | None = None  # name of an env var holding the secret (read at start)
    ed25519_public_key: str | None = None
    # The agent's model family as registered; overrides its self-reported meta.model_family
    # for the quorum diversity cap and the genealogy (docs/byzantine.md, Quorum gate).
    model_family: str | None = None


class IdentityConfig(_Section, frozen=True):
    """Signed agent identities (see ostracon.identity and docs/protocol.md, Identity).

    ``off``: no checks. ``permissive``: signatures present are verified; failures raise an
    alert but the message goes on unsigned (a roll-out mode). ``enforce``: unsigned, forged,
    unregistered, replayed and stale messages are dead-lettered with a reason and an alert.
    """

    mode: Literal["off", "permissive", "enforce"] = "off"
    window_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0  # accepted |ts - now|, seconds
    # Count a replayed message whose signature verifies against its sender (forged and
    # unsigned ones never are). Off by default: anyone who reads the bus can replay an honest
    # agent's messages; turn on where only agents can produce to the inbound topics (ACLs).
    count_replays: bool = False
    agents: dict[str, AgentKeyConfig] = {}

    def registered(self, name: str) -> bool:
        """May ``name`` accuse or vote (the Sybil guard)? With no agents configured every
        name counts (open membership: the guard needs identities to mean anything)."""
        return not self.agents or name in self.agents

    def families(self) -> dict[str, str]:
        """Registered agent -> model family, for those registered with one."""
        return {a: k.model_family for a, k in self.agents.items() if k.model_family}


Weight = Annotated[float, msgspec.Meta(ge=0, le=1)]


class ByzantineConfig(_Section, frozen=True):
    """Accusations, the blocklist they add up to, equivocation (see ostracon.byzantine and
    docs/byzantine.md). Blocked agents' messages get ``blocklist.verdict``."""

    enabled: bool = True
    # quorum: blocked at >= f+1 credibility-weighted accusations from distinct registered,
    # non-blocked accusers; matching: the Decentralized Blocklist Protocol's maximum matching
    strategy: Literal["quorum", "matching"] = "quorum"
    f: Annotated[int, msgspec.Meta(ge=0)] = 1  # Byzantine (colluding) agents tolerated
    # Both messages signed: proof. block = immediate block without a vote (and a proven
    # accusation); accuse = a proven accusation only; alert = an alert only.
    equivocation: Literal["block", "accuse", "alert"] = "block"
    unsigned_equivocation: Literal["block", "accuse", "alert", "ignore"] = "alert"
    # Conflicting statements are proof only when concurrent: the sender was told nothing new
    # about the key between them, and (both with ts) they are at most this far apart.
    equivocation_window_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    accuse_red: bool = False  # a Red claim becomes a verifier's proven accusation of its sender
    # An accusation whose evidence ostracon did not find Red or convicted counts this much;
    # one whose accusing message builds on tainted claims is multiplied by tainted_weight.
    unproven_weight: Weight = 0.25
    tainted_weight: Weight = 0.25
    # Credibility = proven_penalty ** (proven accusations against the agent)
    #             * wrong_penalty ** (its accusations proven wrong)
    proven_penalty: Weight = 0.5
    wrong_penalty: Weight = 0.5
    max_conversations: PositiveInt = 100_000  # equivocation index; least recently active go
    # Distinct agents one agent may accuse; beyond, its accusations are refused (alerted).
    max_accused_per_accuser: PositiveInt = 16


class QuorumConfig(_Section, frozen=True):
    """Quorum gates, leaderless aggregation (see ostracon.quorum; docs/byzantine.md)."""

    enabled: bool = True
    # Diversity cap: one model family (or one cited lineage) supplies at most this share of
    # the weight a ballot needs, so same-model validators cannot decide alone; 1 = no cap.
    max_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    # count only votes whose signature the shell verified (always so with identity.mode on)
    require_signed: bool = False
    # Open ballots (their held records are kept for release); beyond, the oldest escalates.
    max_open: PositiveInt = 10_000
    # Bytes of held records kept for release; beyond, the oldest ballots escalate too.
    max_held_bytes: PositiveInt = 256 * 1024 * 1024
    tick_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # shell checks deadlines
    # Adaptive threshold: a human override moves every gate's quorum by one step, within
    # [adapt_min, adapt_max] of what the rule says (docs/byzantine.md, "Quorum gate").
    adapt_step: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    adapt_min: Annotated[float, msgspec.Meta(le=0)] = -1.0
    adapt_max: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # Leaderless aggregation of evaluator scores (votes with meta.scores)
    aggregate: Literal["median", "trimmed-mean"] = "median"
    trim: Annotated[float, msgspec.Meta(ge=0, lt=0.5)] = 0.2  # per side, for trimmed-mean
    min_evaluators: PositiveInt = 3  # score sets before a winner is named
    max_questions: PositiveInt = 10_000  # questions whose scores are kept (oldest go)


Seconds = Annotated[float, msgspec.Meta(gt=0)]
SeverityName = Literal["info", "warning", "critical"]


class QueuedSinkConfig(_Section, frozen=True):
    """What every queued sink shares: the bound on memory and how hard it retries."""

    enabled: bool = False
    queue_size: PositiveInt = 10_000  # items waiting; beyond it new ones are dropped, counted
    batch: PositiveInt = 100  # items per send
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 5  # then the batch is dropped, counted
    backoff_s: Seconds = 0.5  # first retry delay, doubled each retry
    max_backoff_s: Seconds = 30.0
    timeout_s: Seconds = 5.0  # per request


class _UrlSinkConfig(QueuedSinkConfig, frozen=True):
    url: str = ""
    min_severity: SeverityName = "warning"  # alerts below it are not sent here

    def __post_init__(self) -> None:
        if self.enabled and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL when enabled, got {self.url!r}")


class AlertmanagerSinkConfig(_UrlSinkConfig, frozen=True):
    """Alertmanager API v2 push (POST {url}/api/v2/alerts)."""

    url: str = "http://127.0.0.1:9093"
    resolve_after_s: Seconds = 300.0  # endsAt = time + this (Alertmanager resolves then)
    labels: dict[str, str] = {}  # static labels added to every alert (e.g. env, cluster)


class WebhookSinkConfig(_UrlSinkConfig, frozen=True):
    """A generic webhook with a Slack-compatible body ({"text", "blocks"})."""

    body: Literal["slack", "full"] = "slack"  # full: also the alert itself under "alert"
    headers: dict[str, str] = {}  # e.g. Authorization


class OtlpSinkConfig(QueuedSinkConfig, frozen=True):
    """A span per decision over OTLP/HTTP (protobuf) via the OpenTelemetry SDK."""

    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "ostracon"
    headers: dict[str, str] = {}
    decisions: Literal["all", "flagged"] = "all"  # flagged: only not plainly delivered ones

    def __post_init__(self) -> None:
        if self.enabled and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http(s) URL, got {self.endpoint!r}")


class LogSinkConfig(QueuedSinkConfig, frozen=True):
    """Alerts as structlog JSON lines (logger ``ostracon.alerts``, event ``alert``)."""

    min_severity: SeverityName = "info"


class PrometheusSinkConfig(_Section, frozen=True):
    """The metrics endpoint (GET http://{host}:{port}/metrics); 0 = a free port."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464


class GroupingConfig(_Section, frozen=True):
    """Repeats of an alert (same kind, conversation and agents) within ``window_s`` of the
    first become one notification with a count (log, Alertmanager, webhook)."""

    window_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0  # 0 = every alert is sent
    max_groups: PositiveInt = 10_000  # open groups; the oldest is flushed beyond it
    # Notifications per minute over all groups (a flood of distinct alerts); beyond it they
    # are counted and summarised by one ``alerts-rate-limited`` notification. 0 = no limit.
    rate_per_minute: Annotated[float, msgspec.Meta(ge=0)] = 120.0


class SinksConfig(_Section, frozen=True):
    """Alert sinks beside the Kafka alerts topic (see ostracon.sinks, docs/observability.md)."""

    grouping: GroupingConfig = GroupingConfig()
    log: LogSinkConfig = LogSinkConfig()
    prometheus: PrometheusSinkConfig = PrometheusSinkConfig()
    alertmanager: AlertmanagerSinkConfig = AlertmanagerSinkConfig()
    webhook: WebhookSinkConfig = WebhookSinkConfig()
    otlp: OtlpSinkConfig = OtlpSinkConfig()

    @property
    def any_enabled(self) -> bool:
        return any(
            s.enabled
            for s in (self.log, self.prometheus, self.alertmanager, self.webhook, self.otlp)
        )


class ApiConfig(_Section, frozen=True):
    """The admin HTTP API and review UI (see ostracon.api and docs/api.md), served inside the
    sidecar process. Bearer-token auth on everything but /health and /ready."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8470  # 0 = a free port (logged)
    token: str | None = None  # the bearer token; prefer token_env in files you share
    token_env: str | None = None  # name of an env var holding the token (read at start)
    user: str = "admin"  # who the token's decisions are audited as (X-Ostracon-User overrides)
    # No token serves without auth: allowed on a loopback host only, unless this is set.
    allow_unauthenticated: bool = False
    max_held: PositiveInt = 50_000  # quarantined records indexed (oldest dropped beyond)
    max_graph_nodes: PositiveInt = 2_000  # nodes in one genealogy response
    audit_window: PositiveInt = 10_000  # newest state-topic records read per partition (audit)

    def resolve_token(self) -> str | None:
        """The configured token (``token_env``'s value when set), or None for no auth."""
        if self.token_env is not None:
            return os.environ.get(self.token_env) or None
        return self.token or None


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
    quorum: QuorumConfig = QuorumConfig()
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
    config = parse_config(text, str(p))
    paths = config.rules.paths
    if any(not os.path.isabs(rel) for rel in paths):
        base = p.parent
        rules = msgspec.structs.replace(
            config.rules, paths=[os.path.normpath(base / rel) for rel in paths]
        )
        config = msgspec.structs.replace(config, rules=rules)
    return config


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
        parts = _name_keys(root, parts)
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
    _check_identity(config.identity, root, file)
    _check_api(config.api, root, file)
    return config


def _check_identity(identity: IdentityConfig, root: yaml.Node, file: str) -> None:
    """Load every agent key now, so a missing env var or a bad key fails at start, with
    its line (msgspec's path for dict values does not name the agent)."""
    from .identity import KeyProblem, load_keys  # identity imports this module

    if identity.mode != "off" and not identity.agents:
        where = _locate(root, ["identity", "mode"])
        raise ConfigError(file, where, "identity.mode", f"{identity.mode} needs identity.agents")
    try:
        load_keys(identity)
    except KeyProblem as exc:
        parts: list[str | int] = ["identity", "agents", exc.agent]
        if exc.field:
            parts.append(exc.field)
        field = ".".join(map(str, parts))
        raise ConfigError(file, _locate(root, parts), field, exc.problem) from None


def _is_loopback(host: str) -> bool:
    """An address on this machine only; a name other than localhost resolves wherever DNS
    says (``localhost.example.com``), so it does not count."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_api(api: ApiConfig, root: yaml.Node, file: str) -> None:
    """An admin API with no auth must not listen beyond this machine by accident."""
    if not api.enabled:
        return
    if api.token is not None and api.token_env is not None:
        where = _locate(root, ["api", "token_env"])
        raise ConfigError(file, where, "api.token_env", "set api.token or api.token_env, not both")
    if api.token_env is not None and api.resolve_token() is None:
        where = _locate(root, ["api", "token_env"])
        raise ConfigError(
            file, where, "api.token_env", f"environment variable {api.token_env} is not set"
        )
    if api.resolve_token() is None and not _is_loopback(api.host) and not api.allow_unauthenticated:
        raise ConfigError(
            file,
            _locate(root, ["api", "host"]),
            "api.host",
            f"{api.host} is not loopback and no api.token is set: set a token, or "
            "api.allow_unauthenticated: true to serve the admin API without auth",
        )


_ANY_KEY = "[...]"  # msgspec's path for a dict value: it does not say which key


def _split_path(path: str) -> list[str | int]:
    """``.topics.inbound[0]`` -> ``["topics", "inbound", 0]``; ``.agents[...]`` -> a dict
    value whose key msgspec does not give (see :func:`_name_keys`)."""
    parts: list[str | int] = []
    for name, index, _ in re.findall(r"\.([^.\[]+)|\[(\d+)\]|\[(\.\.\.)\]", path):
        parts.append(name if name else int(index) if index else _ANY_KEY)
    return parts


def _name_keys(node: yaml.Node, parts: list[str | int]) -> list[str | int]:
    """``parts`` with each unnamed dict key replaced by the first key of the YAML mapping
    whose value has the next part (e.g. the unknown field), else by its first key."""
    named: list[str | int] = []
    for i, part in enumerate(parts):
        if part == _ANY_KEY and isinstance(node, yaml.MappingNode) and node.value:
            nxt = parts[i + 1] if i + 1 < len(parts) else None
            part = next(
                (k.value for k, v in node.value if nxt is not None and _child(v, nxt)),
                node.value[0][0].value,
            )
        named.append(part)
        found = _child(node, part)
        if found is None:
            return named + parts[i + 1 :]
        node = found[1]
    return named


def _locate(node: yaml.Node, parts: list[str | int]) -> int:
    """Line (1-based) of the deepest node along ``parts`` that exists in the YAML tree."""
    line = node.start_mark.line + 1
    for part in parts:
        found = _child(node, part)
        if found is None:
            break
        line, node = found
    return line


def _child(node: yaml.Node, part: str | int) -> tuple[int, yaml.Node] | None:
    """(line, node) of a mapping's key ``part`` (the key's line) or a sequence's item."""
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if key.value == part:
                return key.start_mark.line + 1, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        if part < len(node.value):
            child = node.value[part]
            return child.start_mark.line + 1, child
    return None
