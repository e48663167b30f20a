"""Offline replay and root-cause attribution: ``ostracon replay FILE``.

A recorded transcript is decided message by message through the real core
(:func:`ostracon.pipeline.build_core` with ``assume_delivered=True``: every message of a
transcript did reach its readers, while each decision still says what ostracon *would* have
done). The rebuilt genealogy is written as ``genealogy.json``, ``genealogy.graphml`` and a
self-contained ``genealogy.html``, and the root claims behind the damage are ranked.

Input shapes (auto-detected)
----------------------------
- **JSONL envelopes**: one envelope per line (docs/protocol.md), decoded and validated exactly
  as the sidecar does; blank lines are skipped, a repeated (conversation, id) is skipped as
  the sidecar's de-duplication would.
- **A JSON list of chat messages** ``[{"role": ..., "name"?: ..., "content": ...}]``.
- **A JSON object holding such a list** under ``messages``, ``history`` or ``chat_history``
  (AutoGen/AG2 group chats, OpenAI-style exports).

A chat message becomes an envelope: the agent is ``name`` if present, else ``role``; the step
is its 0-based index, the id ``step-<n>``, the conversation the file's stem; role ``user`` /
``human`` -> ``human``, ``tool`` / ``function`` -> ``tool_result``, ``system`` -> ``system``,
anything else -> ``chat``; ``parents`` is the previous step (in a group chat each message
answers the one before); ``recipients`` is empty (everyone reads everything). ``content`` may be
a string, null, or a list of OpenAI-style parts whose text parts are joined.

Beware the ``user`` role: it makes a message a human one, i.e. a grounding source. Some exports
(AutoGen's view from a receiving agent) label *other agents* ``user``; a warning is given when
several names share the ``user``/``human`` role, since their claims were all taken as grounded.

What-if (``--rules CANDIDATE``)
-------------------------------
The transcript is decided a second time on a fresh core whose config has ``rules.paths``
replaced by the candidate files or directories, and every step is compared: a message is
listed when its verdict or the set of rules that fired on it differs (a candidate rule can
change later decisions too, through rate limits or the circuit breaker's count of held
attempts), with the verdict totals under each. The genealogy files and the ranking are
those of the current rules. Candidate rules that do not load exit 2 with their position.

Root-cause attribution
----------------------
Candidates are the **root claims** (a claim's ``origins``) of claims that ended Red, were
convicted (tainted) or are ungrounded and spread to at least two agents. A claim re-stated
after its first statement was convicted starts a new root in the genealogy (a convicted claim
grounds and supports nothing, so nothing links to it); for attribution such a later root is
folded into the earliest root of the same fingerprint its sender could have read, so the agent
that first said it keeps the blame for the re-statements. A root's **spread** is every claim
whose origins include it (or a root folded into it).

Each root claim is scored in [0, 1] from components in [0, 1]:

| component    | 1.0 means                                                        | weight |
|--------------|------------------------------------------------------------------|--------|
| contradicted | a grounded fact of the same key says otherwise (0.6: only Red or  | 0.35   |
|              | convicted against a confirmed, not grounded, value)              |        |
| reach        | 3+ other agents repeated it: ``min(1, (agents - 1) / 3)``        | 0.25   |
| repeats      | 5+ claims derive from or re-state it: ``min(1, repeats / 5)``    | 0.10   |
| ungrounded   | the root is ungrounded and no grounded claim states its value    | 0.15   |
| earliness    | stated at step 0: ``1 - step / (messages - 1)``                  | 0.15   |

``score = 0.35·contradicted + 0.25·reach + 0.10·repeats + 0.15·ungrounded + 0.15·earliness``

A candidate is one message (agent, step); its score is that of its best root claim, and its
evidence chain lists, in step order, the origin, every claim that derives from or re-states
it, and the grounded fact that contradicts it. Ties go to the earlier step.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import msgspec
import networkx as nx
from rich.console import Console

from .claims import ExtractedClaim, extract_claims
from .config import Config, ConfigError, load_config
from .core import Core
from .decision import ClaimReport, Decision, Label, Verdict
from .envelope import Envelope, InvalidEnvelope, Kind, decode
from .genealogy import SCAN, ClaimNode, Genealogy, Lineage
from .pipeline import build_core

__all__ = [
    "WEIGHTS",
    "Candidate",
    "Replay",
    "ReplayInputError",
    "Step",
    "Transcript",
    "attribute",
    "chat_envelopes",
    "genealogy_document",
    "graphml_graph",
    "load_transcript",
    "main",
    "render_html",
    "replay",
    "replay_file",
    "summary",
    "write_outputs",
]

WEIGHTS = {
    "contradicted": 0.35,
    "reach": 0.25,
    "repeats": 0.10,
    "ungrounded": 0.15,
    "earliness": 0.15,
}
CHAT_KEYS = ("messages", "history", "chat_history")
ROLE_KINDS = {
    "user": Kind.HUMAN,
    "human": Kind.HUMAN,
    "tool": Kind.TOOL_RESULT,
    "function": Kind.TOOL_RESULT,
    "system": Kind.SYSTEM,
}
MAX_NAME = 256  # envelope sender / conversation length limit
PROGRESS_ABOVE = 200  # messages; longer replays show a progress bar
HTML_MAP_LIMIT = 2000  # messages drawn in the HTML lineage map
HTML_CONTENT_LIMIT = 4000  # characters of a message shown in the HTML view
_LABEL_RANK = {Label.RED: 3, Label.YELLOW: 2, Label.GREEN: 1}


# ============================================================================ loading


class ReplayInputError(Exception):
    """A transcript that cannot be replayed; ``str()`` names the file and the line or item."""

    def __init__(
        self, file: str, problem: str, line: int | None = None, item: str | None = None
    ) -> None:
        self.file, self.problem, self.line, self.item = file, problem, line, item
        where = f"{file}:{line}" if line else file
        text = f"{item}: {problem}" if item else problem
        super().__init__(f"{where}: {text}")


class _BadItem(Exception):
    """One chat message that cannot become an envelope (positioned by the caller)."""


@dataclass
class Transcript:
    """A transcript read from disk: its envelopes in replay order."""

    path: Path
    shape: str  # "jsonl", "chat-list" or "chat-object"
    envelopes: list[Envelope]
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.shape != "jsonl":
            humans = {e.sender for e in self.envelopes if e.kind is Kind.HUMAN}
            if len(humans) > 1:
                self.warnings.append(
                    f"{len(humans)} names use the user/human role ({', '.join(sorted(humans))}):"
                    " their claims count as human-grounded; if they are agents, export the chat"
                    " with agents as 'assistant' or replay envelopes"
                )


def load_transcript(path: Path, max_bytes: int = 1_000_000) -> Transcript:
    """Read a transcript in any accepted shape, or raise :class:`ReplayInputError`."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReplayInputError(name, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ReplayInputError(name, f"not valid UTF-8 at byte {exc.start}", line) from None
    body = text.lstrip()
    if not body:
        raise ReplayInputError(name, "the file is empty: nothing to replay")
    conversation = _conversation_name(path)
    first = body[0]
    if first == "[":
        data = _parse_json(name, text)
        return Transcript(path, "chat-list", chat_envelopes(data, conversation, name, "", text))
    if first != "{":
        line = text[: len(text) - len(body)].count("\n") + 1
        raise ReplayInputError(
            name,
            "not a transcript: expected JSONL envelopes, a JSON list of chat messages, or a "
            "JSON object with a 'messages' or 'history' list",
            line,
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if not _first_record_is_json(text):
            raise ReplayInputError(
                name, f"invalid JSON at column {exc.colno}: {exc.msg}", exc.lineno
            ) from None
        return Transcript(path, "jsonl", jsonl_envelopes(text, name, max_bytes))
    except RecursionError:
        raise ReplayInputError(name, "invalid JSON: nested too deeply") from None
    if isinstance(data, dict):
        for key in CHAT_KEYS:
            if key in data:
                items = data[key]
                if not isinstance(items, list):
                    raise ReplayInputError(
                        name, f"'{key}' must be a list of chat messages, got {_type(items)}"
                    )
                envs = chat_envelopes(items, conversation, name, key, text)
                return Transcript(path, "chat-object", envs)
        if not {"id", "conversation", "sender", "kind"} & data.keys():
            raise ReplayInputError(
                name,
                "a JSON object with no 'messages' or 'history' list, and not an envelope",
                1,
            )
        # One envelope, perhaps pretty-printed over several lines: a one-record JSONL.
        text = json.dumps(data, ensure_ascii=False)
    return Transcript(path, "jsonl", jsonl_envelopes(text, name, max_bytes))


def jsonl_envelopes(text: str, file: str, max_bytes: int) -> list[Envelope]:
    """One envelope per non-blank line, validated as the sidecar validates them."""
    out = []
    # Split on "\n" only: U+2028 and friends may sit raw inside JSON strings.
    for n, line in enumerate(text.split("\n"), 1):
        record = line.strip()
        if not record:
            continue
        try:
            out.append(decode(record.encode(), max_bytes))
        except InvalidEnvelope as exc:
            raise ReplayInputError(file, f"{exc.code}: {exc.reason}", n) from None
    return out


def chat_envelopes(
    items: Sequence[Any], conversation: str, file: str = "<chat>", key: str = "", text: str = ""
) -> list[Envelope]:
    """Chat messages -> envelopes (see the module docstring for the mapping)."""
    if not isinstance(items, list):
        raise ReplayInputError(file, f"expected a list of chat messages, got {_type(items)}")
    out: list[Envelope] = []
    previous: str | None = None
    for i, item in enumerate(items):
        try:
            env = _chat_envelope(item, i, conversation, previous)
        except _BadItem as exc:
            where = f"{key}[{i}]" if key else f"item [{i}]"
            line = _item_line(text, key, i) if text else None
            raise ReplayInputError(file, str(exc), line, where) from None
        out.append(env)
        previous = env.id
    return out


def _chat_envelope(item: Any, step: int, conversation: str, previous: str | None) -> Envelope:
    if not isinstance(item, dict):
        raise _BadItem(f"a chat message must be an object, got {_type(item)}")
    role, name = item.get("role"), item.get("name")
    for fname, value in (("role", role), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise _BadItem(f"'{fname}' must be a string, got {_type(value)}")
    agent = (name or "").strip() or (role or "").strip()
    if not agent:
        if "sender" in item:
            raise _BadItem("looks like an envelope: put envelopes one per line (JSONL)")
        raise _BadItem("needs a 'name' or a 'role' to tell who wrote it")
    if len(agent) > MAX_NAME:
        raise _BadItem(f"the agent name is {len(agent)} characters, limit is {MAX_NAME}")
    if "content" not in item and not ({"tool_calls", "function_call"} & item.keys()):
        raise _BadItem("has no 'content'")
    content = _content_text(item.get("content"))
    kind = ROLE_KINDS.get((role or "").strip().lower(), Kind.CHAT)
    meta: dict[str, Any] = {"source": "chat"}
    if role:
        meta["chat_role"] = role  # not "role": that key names hub roles to the core
    return Envelope(
        id=f"step-{step}",
        conversation=conversation,
        sender=agent,
        kind=kind,
        content=content,
        parents=[previous] if previous else [],
        meta=meta,
    )


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": ...}, ...]
        texts = []
        for n, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
            else:
                raise _BadItem(f"content part {n} must be a string or an object, got {_type(part)}")
        return "\n".join(texts)
    raise _BadItem(f"'content' must be a string, a list of parts or null, got {_type(content)}")


def _parse_json(file: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayInputError(
            file, f"invalid JSON at column {exc.colno}: {exc.msg}", exc.lineno
        ) from None
    except RecursionError:
        raise ReplayInputError(file, "invalid JSON: nested too deeply") from None


def _first_record_is_json(text: str) -> bool:
    """Does the first non-blank line parse on its own (so the file is JSONL)?"""
    for line in text.split("\n"):
        if line.strip():
            try:
                json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return False
            return True
    return False


def _item_line(text: str, key: str, index: int) -> int | None:
    """Line of item ``index`` of the top-level list (or of the list under ``key``).

    Error path only: walks the top level with ``raw_decode``; None when anything is off.
    """
    dec = json.JSONDecoder()
    try:
        pos = _skip_ws(text, 0)
        if key:
            if text[pos] != "{":
                return None
            pos += 1
            while True:
                pos = _skip_ws(text, pos)
                name, pos = dec.raw_decode(text, pos)
                pos = _skip_ws(text, pos)
                if text[pos] != ":":
                    return None
                pos = _skip_ws(text, pos + 1)
                if name == key:
                    break
                _, pos = dec.raw_decode(text, pos)
                pos = _skip_ws(text, pos)
                if text[pos] != ",":
                    return None
                pos += 1
        if text[pos] != "[":
            return None
        pos += 1
        for i in range(index + 1):
            pos = _skip_ws(text, pos)
            if i == index:
                return text.count("\n", 0, pos) + 1
            _, pos = dec.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if text[pos] != ",":
                return None
            pos += 1
    except (IndexError, ValueError, RecursionError):
        return None
    return None


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _conversation_name(path: Path) -> str:
    return (path.stem.strip() or "transcript")[:MAX_NAME]


def _type(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# ============================================================================ replay


@dataclass
class Step:
    """One replayed message and the decision the core made on it."""

    index: int
    envelope: Envelope
    decision: Decision


@dataclass
class Candidate:
    """A root-cause candidate: a message whose root claims started the damage."""

    agent: str
    step: int
    message: str
    conversation: str
    score: float
    claims: list[dict[str, Any]]
    reason: str
    components: dict[str, float]
    evidence: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "step": self.step,
            "score": self.score,
            "claims": self.claims,
            "reason": self.reason,
            "message": self.message,
            "conversation": self.conversation,
            "components": self.components,
            "evidence": self.evidence,
        }


@dataclass
class Replay:
    """Everything a replay produced."""

    source: str
    shape: str
    steps: list[Step]
    genealogy: Genealogy
    duplicates: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    index: dict[tuple[str, str], int] = field(default_factory=dict)  # (conv, id) -> step

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {(s.envelope.conversation, s.envelope.id): s.index for s in self.steps}

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The genealogy graph, built once (Genealogy.graph builds it on every access)."""
        return self.genealogy.graph

    def step_of(self, conversation: str, message: str) -> int | None:
        return self.index.get((conversation, message))

    @cached_property
    def reports(self) -> dict[tuple[str, str], ClaimReport]:
        """(conversation, claim id) -> the claim as its message's decision reported it."""
        return {(s.envelope.conversation, c.id): c for s in self.steps for c in s.decision.claims}

    @cached_property
    def texts(self) -> dict[tuple[str, str], ExtractedClaim]:
        """(conversation, claim id) -> the extracted claim, with its surface text.

        Decisions keep only the normalized key and value. Extraction is deterministic, so
        extracting again yields the claims in the order the lineage numbered them
        (``c:<message id>#<n>``).
        """
        out = {}
        for s in self.steps:
            if s.decision.claims:
                env = s.envelope
                for n, claim in enumerate(extract_claims(env)):
                    out[(env.conversation, f"c:{env.id}#{n}")] = claim
        return out


def replay(
    envelopes: Iterable[Envelope],
    config: Config | None = None,
    advance: Callable[[], None] | None = None,
    source: str = "<memory>",
    shape: str = "envelopes",
) -> Replay:
    """Decide every envelope in order through the real core and attribute the damage."""
    cfg = config if config is not None else Config()
    steps, core, duplicates = decide_all(envelopes, cfg, advance)
    result = Replay(source, shape, steps, core.state.genealogy, duplicates)
    if duplicates:
        result.warnings.append(
            f"{duplicates} message(s) repeat an earlier (conversation, id) and were skipped"
        )
    if not cfg.containment.enabled:
        result.warnings.append("containment is disabled in the config: no claims were traced")
    clashes = _id_clashes(steps)
    if clashes:
        result.warnings.append(
            "message ids shared by several conversations share graph nodes in the "
            f"genealogy export: {', '.join(clashes[:5])}" + (" ..." if len(clashes) > 5 else "")
        )
    result.candidates = attribute(result)
    return result


def decide_all(
    envelopes: Iterable[Envelope], config: Config, advance: Callable[[], None] | None = None
) -> tuple[list[Step], Core, int]:
    """Decide every envelope in order on a fresh core (``assume_delivered``), skipping a
    repeated (conversation, id) as the sidecar's de-duplication would: the steps, the core
    and the number skipped."""
    core = build_core(config, assume_delivered=True)
    seen: set[tuple[str, str]] = set()
    steps: list[Step] = []
    duplicates = 0
    for env in envelopes:
        key = (env.conversation, env.id)
        if key in seen:
            duplicates += 1
        else:
            seen.add(key)
            steps.append(Step(len(steps), env, core.decide(env)))
        if advance is not None:
            advance()
    return steps, core, duplicates


def _id_clashes(steps: Sequence[Step]) -> list[str]:
    convs: dict[str, str] = {}
    clashes: list[str] = []
    for s in steps:
        mid, conv = s.envelope.id, s.envelope.conversation
        if convs.setdefault(mid, conv) != conv and mid not in clashes:
            clashes.append(mid)
    return clashes


# ============================================================================ attribution


@dataclass
class _Root:
    """One scored attribution group: its head root claim, score, claim summary and evidence."""

    conversation: str
    head: ClaimNode
    score: float
    claim: dict[str, Any]
    reason: str
    components: dict[str, float]
    evidence: list[dict[str, Any]]


def attribute(rep: Replay) -> list[Candidate]:
    """Rank the messages whose root claims caused the damage, best first."""
    reports = rep.reports
    by_message: dict[tuple[str, str], list[_Root]] = {}
    for conv, lin in rep.genealogy.lineages.items():
        facts = _grounded_by_key(lin)
        for head, members in _groups(lin):
            root = _score_root(rep, conv, head, members, reports, facts.get(head.key, ()))
            if root is not None:
                by_message.setdefault((conv, head.message), []).append(root)
    candidates = []
    for (conv, mid), roots in by_message.items():
        roots.sort(key=lambda r: (-r.score, r.head.seq))
        best = roots[0]
        evidence: dict[str, dict[str, Any]] = {}
        for root in roots:
            for item in root.evidence:
                evidence.setdefault(item["claim"], item)
        reason = best.reason
        if len(roots) > 1:
            reason += f"; and {len(roots) - 1} more suspect claim(s) in this message"
        step = rep.step_of(conv, mid)
        candidates.append(
            Candidate(
                agent=best.head.sender,
                step=step if step is not None else -1,
                message=mid,
                conversation=conv,
                score=best.score,
                claims=[r.claim for r in roots],
                reason=reason,
                components=best.components,
                evidence=sorted(evidence.values(), key=lambda it: (it["step"], it["claim"])),
            )
        )
    candidates.sort(key=lambda c: (-c.score, c.step, c.agent))
    return candidates


def _groups(lin: Lineage) -> list[tuple[ClaimNode, list[ClaimNode]]]:
    """(head root, every claim of its spread, head first, in order) per attribution group."""
    spread: dict[str, list[ClaimNode]] = {}
    roots: list[ClaimNode] = []
    for node in lin.claims.values():  # insertion order is assertion order
        if node.origins == (node.id,):
            roots.append(node)
        for origin in node.origins:
            spread.setdefault(origin, []).append(node)
    heads: dict[str, list[ClaimNode]] = {}  # fingerprint -> group heads
    groups: dict[str, list[ClaimNode]] = {}  # head id -> roots folded into it
    for root in roots:
        for head in heads.get(root.fingerprint, ())[:SCAN]:  # bounded, as in the genealogy
            msg = lin.messages.get(head.message)
            if msg is not None and msg.visible_to(root.sender):
                groups[head.id].append(root)
                break
        else:
            heads.setdefault(root.fingerprint, []).append(root)
            groups[root.id] = [root]
    out = []
    for folded in groups.values():
        members: dict[str, ClaimNode] = {}
        for root in folded:
            for node in spread.get(root.id, ()):
                members.setdefault(node.id, node)
        out.append((folded[0], sorted(members.values(), key=lambda n: n.seq)))
    return out


def _score_root(
    rep: Replay,
    conv: str,
    head: ClaimNode,
    members: list[ClaimNode],
    reports: dict[tuple[str, str], ClaimReport],
    grounded: Sequence[ClaimNode],
) -> _Root | None:
    """Score one attribution group (see the module docstring); None when not a candidate."""
    labels = {
        n.id: reports[(conv, n.id)].label if (conv, n.id) in reports else None for n in members
    }
    red = [n for n in members if labels[n.id] is Label.RED]
    convicted = [n for n in members if n.tainted]
    vindicated = any(n.value == head.value for n in grounded)  # a grounded source agrees
    fact = next((n for n in grounded if n.value != head.value), None)  # the earliest denial
    agents = list(dict.fromkeys(n.sender for n in members))
    ungrounded = not head.grounded and not vindicated
    if not (red or convicted or (ungrounded and len(agents) >= 2)):
        return None
    step = rep.step_of(conv, head.message) or 0
    total = len(rep.steps)
    repeats = len(members) - 1
    parts = {
        "contradicted": 1.0 if fact is not None else (0.6 if red or convicted else 0.0),
        "reach": min(1.0, (len(agents) - 1) / 3),
        "repeats": min(1.0, repeats / 5),
        "ungrounded": 1.0 if ungrounded else 0.0,
        "earliness": 1.0 - step / (total - 1) if total > 1 else 1.0,
    }
    score = round(sum(WEIGHTS[k] * v for k, v in parts.items()), 3)
    said = f"{head.key} = {head.value}"
    bits = [f"first stated {said}" if repeats else f"stated {said}"]
    if ungrounded:
        bits[0] += " with no grounding"
    if fact is not None:
        fstep = rep.step_of(conv, fact.message)
        bits.append(f"contradicted by {fact.sender}'s grounded {fact.value} (step {fstep})")
    elif red or convicted:
        bits.append("contradicted by an established value")
    others = [a for a in agents if a != head.sender]
    if others:
        bits.append(
            f"repeated by {len(others)} other agent(s) ({', '.join(others[:6])}"
            f"{', ...' if len(others) > 6 else ''}) in {repeats} later claim(s)"
        )
    elif repeats:
        bits.append(f"repeated {repeats} time(s) by its own sender")
    if red:
        bits.append(f"Red in {len({n.message for n in red})} message(s)")
    if convicted:
        bits.append(f"convicted in {len({n.message for n in convicted})} message(s)")
    evidence = []
    for n in members:
        relation = "origin" if n is head else ("derives" if head.id in n.origins else "restates")
        evidence.append(_evidence(rep, conv, n, labels[n.id], relation))
    if fact is not None:
        label = reports.get((conv, fact.id))
        evidence.append(
            _evidence(rep, conv, fact, label.label if label else None, "contradicted-by")
        )
    head_label = labels[head.id]
    claim = {
        "id": head.id,
        "key": head.key,
        "value": head.value,
        "label": head_label.value if head_label else None,
        "convicted": head.tainted,
        "agents": len(agents),
        "repeats": repeats,
        "score": score,
    }
    components = {k: round(v, 3) for k, v in parts.items()}
    return _Root(conv, head, score, claim, "; ".join(bits), components, evidence)


def _grounded_by_key(lin: Lineage) -> dict[str, list[ClaimNode]]:
    """key -> its grounded, unconvicted claims in assertion order: the facts of a lineage."""
    out: dict[str, list[ClaimNode]] = {}
    for node in lin.claims.values():
        if node.grounded and not node.tainted:
            out.setdefault(node.key, []).append(node)
    return out


def _evidence(
    rep: Replay, conv: str, node: ClaimNode, label: Label | None, relation: str
) -> dict[str, Any]:
    step = rep.step_of(conv, node.message)
    verdict = rep.steps[step].decision.verdict.value if step is not None else None
    return {
        "step": step if step is not None else -1,
        "agent": node.sender,
        "message": node.message,
        "claim": node.id,
        "key": node.key,
        "value": node.value,
        "label": label.value if label else None,
        "convicted": node.tainted,
        "verdict": verdict,
        "relation": relation,
    }


# ============================================================================ exports


def summary(rep: Replay, outputs: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``--format json`` object."""
    counts = Counter(s.decision.verdict for s in rep.steps)
    return {
        "messages": len(rep.steps),
        "decisions": {v.value: counts[v] for v in Verdict if counts[v]},
        "candidates": [c.to_dict() for c in rep.candidates],
        "outputs": outputs or {},
    }


def _node_attrs(rep: Replay) -> dict[str, dict[str, Any]]:
    """Attributes of every genealogy node (lists only where GraphML must join them)."""
    reports, texts = rep.reports, rep.texts
    attrs: dict[str, dict[str, Any]] = {}
    for s in rep.steps:
        env, d = s.envelope, s.decision
        attrs[f"m:{env.id}"] = {
            "type": "message",
            "conversation": env.conversation,
            "sender": env.sender,
            "kind": env.kind.value,
            "step": s.index,
            "verdict": d.verdict.value,
            "risk": float(d.risk),
            "content": env.content,
        }
    for conv, lin in rep.genealogy.lineages.items():
        for node in lin.claims.values():
            rpt = reports.get((conv, node.id))
            text = texts.get((conv, node.id))
            step = rep.step_of(conv, node.message)
            attrs[node.id] = {
                "type": "claim",
                "conversation": conv,
                "sender": node.sender,
                "message": node.message,
                "step": step if step is not None else -1,
                "key": node.key,
                "value": node.value,
                "fingerprint": node.fingerprint,
                "text": text.text if text else f"{node.key} = {node.value}",
                "label": rpt.label.value if rpt else "",
                "risk": float(rpt.risk) if rpt else 0.0,
                "grounded": bool(node.grounded),
                "tainted": bool(node.tainted),
                "suspect": bool(node.suspect),
                "depth": int(node.depth),
                "reach": int(rpt.reach) if rpt else 0,
                "origins": sorted(node.origins),
            }
    for nid in rep.graph.nodes:
        attrs.setdefault(nid, {"type": "missing"})  # a parent the transcript does not hold
    return attrs


def genealogy_document(rep: Replay) -> dict[str, Any]:
    """``genealogy.json``: nodes, edges with kinds, per-message decisions, candidates."""
    attrs = _node_attrs(rep)
    g = rep.graph
    return {
        "source": rep.source,
        "shape": rep.shape,
        "summary": {k: v for k, v in summary(rep).items() if k in ("messages", "decisions")},
        "warnings": rep.warnings,
        "messages": [
            {
                "step": s.index,
                "id": s.envelope.id,
                "conversation": s.envelope.conversation,
                "sender": s.envelope.sender,
                "kind": s.envelope.kind.value,
                "content": s.envelope.content,
                "parents": list(s.envelope.parents),
                "recipients": list(s.envelope.recipients),
                "decision": msgspec.to_builtins(s.decision),
            }
            for s in rep.steps
        ],
        "nodes": [{"id": nid, **attrs[nid]} for nid in g.nodes],
        "edges": [
            {"source": u, "target": v, "kind": kind}
            for u, v, kind in g.edges(data="kind", default="")
        ],
        "candidates": [c.to_dict() for c in rep.candidates],
    }


def graphml_graph(rep: Replay) -> nx.DiGraph:
    """The genealogy with GraphML-safe scalar attributes (lists joined by spaces)."""
    attrs = _node_attrs(rep)
    out = nx.DiGraph()
    for nid in rep.graph.nodes:
        scalars = {
            k: _xml_safe(" ".join(v) if isinstance(v, list) else v)
            for k, v in attrs[nid].items()
            if v is not None
        }
        out.add_node(nid, **scalars)
    for u, v, kind in rep.graph.edges(data="kind", default=""):
        out.add_edge(u, v, kind=str(kind))
    return nx.relabel_nodes(out, {n: _xml_safe(n) for n in out if _xml_safe(n) != n})


_XML_UNSAFE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(value: Any) -> Any:
    """Strings without the characters XML 1.0 cannot hold (control chars, lone surrogates)."""
    return _XML_UNSAFE.sub("\ufffd", value) if isinstance(value, str) else value


def write_outputs(rep: Replay, out_dir: Path) -> dict[str, str]:
    """Write genealogy.json, genealogy.graphml and genealogy.html; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "genealogy.json",
        "graphml": out_dir / "genealogy.graphml",
        "html": out_dir / "genealogy.html",
    }
    paths["json"].write_text(
        json.dumps(genealogy_document(rep), indent=1, ensure_ascii=False) + "\n",
        encoding="utf-8",
        errors="replace",  # a lone surrogate from a transcript's JSON escapes
    )
    nx.write_graphml(graphml_graph(rep), paths["graphml"])
    paths["html"].write_text(render_html(rep), encoding="utf-8", errors="replace")
    return {k: str(p) for k, p in paths.items()}


# ============================================================================ HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a202c;
background:#f7fafc}
header,section{max-width:1200px;margin:0 auto;padding:12px 20px}
h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:18px 0 8px}
.muted{color:#718096}.warn{color:#975a16}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #e2e8f0;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#edf2f7}
.scroll{overflow-x:auto;background:#fff;border:1px solid #e2e8f0}
ol.msgs{list-style:none;padding:0;margin:0}
.msg{background:#fff;border:1px solid #e2e8f0;border-left:5px solid #a0aec0;margin:6px 0;
padding:8px 12px}
.msg.red{border-left-color:#c53030}.msg.yellow{border-left-color:#d69e2e}
.msg.green{border-left-color:#38a169}.msg.cand{box-shadow:0 0 0 2px #2b6cb0}
.head{font-size:12px;color:#4a5568;margin-bottom:4px}
.head b{color:#1a202c;font-size:13px}
.content{white-space:pre-wrap;word-wrap:break-word}
.badge{display:inline-block;border-radius:3px;padding:0 6px;font-size:11px;margin-left:4px;
background:#edf2f7}
.v-block,.v-quarantine{background:#fed7d7;color:#822727}.v-hold{background:#feebc8;color:#7b341e}
.v-deliver-tagged{background:#fefcbf;color:#744210}.v-deliver{background:#c6f6d5;color:#22543d}
.claims{margin-top:6px}
.claim{display:inline-block;border-radius:4px;padding:1px 7px;margin:2px 4px 2px 0;font-size:12px;
border:1px solid}
.claim.green{background:#c6f6d5;border-color:#38a169}.claim.yellow{background:#fefcbf;
border-color:#d69e2e}.claim.red{background:#fed7d7;border-color:#c53030}
.claim.convicted{text-decoration:line-through}
.rel{font-size:11px;color:#4a5568}
mark.green{background:#c6f6d5}mark.yellow{background:#fefcbf}mark.red{background:#fed7d7}
.legend span{margin-right:14px}
a{color:#2b6cb0}
"""


def render_html(rep: Replay) -> str:
    """A self-contained page: inline CSS and SVG, no script, nothing fetched from anywhere."""
    texts = rep.texts
    nodes = {
        (conv, nid): node
        for conv, lin in rep.genealogy.lineages.items()
        for nid, node in lin.claims.items()
    }
    cand_rank = {(c.conversation, c.message): i + 1 for i, c in enumerate(rep.candidates)}
    e = html.escape
    counts = summary(rep)["decisions"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ostracon replay: {e(Path(rep.source).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header>",
        f"<h1>ostracon replay &mdash; {e(rep.source)}</h1>",
        f'<p class="muted">{len(rep.steps)} messages ({e(rep.shape)}); verdicts: '
        + e(", ".join(f"{k} {v}" for k, v in counts.items()) or "none")
        + "</p>",
    ]
    parts += [f'<p class="warn">warning: {e(w)}</p>' for w in rep.warnings]
    parts.append("</header>")
    parts.append(_html_candidates(rep))
    parts.append(_html_map(rep, nodes, cand_rank))
    parts.append('<section><h2>Messages</h2><ol class="msgs">')
    edges = rep.graph
    for s in rep.steps:
        env, d = s.envelope, s.decision
        conv = env.conversation
        worst = _worst(c.label for c in d.claims)
        rank = cand_rank.get((conv, env.id))
        classes = " ".join(filter(None, ["msg", worst, "cand" if rank else ""]))
        parts.append(f'<li id="s{s.index}" class="{classes}"><div class="head">')
        parts.append(
            f"step {s.index} &middot; <b>{e(env.sender)}</b> &middot; {e(env.kind.value)}"
            f' <span class="badge v-{e(d.verdict.value)}">{e(d.verdict.value)}</span>'
            f' <span class="muted">risk {d.risk:.3f}</span>'
        )
        if rank:
            parts.append(f' <span class="badge">root-cause candidate #{rank}</span>')
        if len(rep.genealogy.lineages) > 1:
            parts.append(f' <span class="muted">{e(conv)}</span>')
        parts.append("</div>")
        spans = []
        for c in d.claims:
            t = texts.get((conv, c.id))
            if t is not None:
                spans.append((t.text, c.label.value))
        parts.append(f'<div class="content">{_highlight(env.content, spans)}</div>')
        if d.claims:
            parts.append('<div class="claims">')
            for c in d.claims:
                parts.append(_html_claim(rep, conv, c, nodes.get((conv, c.id)), texts, edges))
            parts.append("</div>")
        if d.reasons:
            parts.append(f'<div class="rel">{e("; ".join(d.reasons))}</div>')
        parts.append("</li>")
    parts.append("</ol></section></body></html>\n")
    return "".join(parts)


def _html_candidates(rep: Replay) -> str:
    e = html.escape
    out = ["<section><h2>Root-cause candidates</h2>"]
    if not rep.candidates:
        out.append(
            '<p class="muted">None: no claim ended Red, was convicted, or spread ungrounded.</p>'
        )
        return "".join(out) + "</section>"
    out.append(
        "<table><tr><th>#</th><th>agent</th><th>step</th><th>score</th><th>claims</th>"
        "<th>reason</th></tr>"
    )
    for i, c in enumerate(rep.candidates[:50], 1):
        claims = ", ".join(f"{cl['key']} = {cl['value']}" for cl in c.claims)
        out.append(
            f"<tr><td>{i}</td><td>{e(c.agent)}</td>"
            f'<td><a href="#s{c.step}">{c.step}</a></td><td>{c.score:.3f}</td>'
            f"<td>{e(claims)}</td><td>{e(c.reason)}</td></tr>"
        )
    out.append("</table>")
    if len(rep.candidates) > 50:
        out.append(f'<p class="muted">{len(rep.candidates) - 50} more in genealogy.json</p>')
    for i, c in enumerate(rep.candidates[:10], 1):
        out.append(
            f"<details{' open' if i == 1 else ''}><summary>Evidence chain of #{i} "
            f"({e(c.agent)}, step {c.step})</summary><ol>"
        )
        for item in c.evidence:
            label = item["label"] or ""
            conv = " (convicted)" if item["convicted"] else ""
            out.append(
                f'<li><a href="#s{item["step"]}">step {item["step"]}</a> {e(item["agent"])}: '
                f'<span class="claim {e(label)}">{e(item["key"])} = {e(item["value"])}</span>'
                f'<span class="rel">{e(item["relation"])}, {e(label or "no label")}{conv}, '
                f"{e(item['verdict'] or '')}</span></li>"
            )
        out.append("</ol></details>")
    return "".join(out) + "</section>"


def _html_claim(
    rep: Replay,
    conv: str,
    c: ClaimReport,
    node: ClaimNode | None,
    texts: dict[tuple[str, str], ExtractedClaim],
    graph: nx.DiGraph,
) -> str:
    e = html.escape
    convicted = bool(node and node.tainted)
    classes = f"claim {c.label.value}" + (" convicted" if convicted else "")
    t = texts.get((conv, c.id))
    tip = f"{c.id}: {c.label.value}, risk {c.risk:.3f}, reach {c.reach}, depth {c.depth}"
    if t is not None:
        tip += f', "{t.text}" ({t.extractor})'
    rels = []
    if c.id in graph:
        for _, target, kind in graph.out_edges(c.id, data="kind"):
            if kind in ("derives", "contradicts"):
                other = target.split("#", 1)[0][2:]
                step = rep.step_of(conv, other)
                where = f'<a href="#s{step}">step {step}</a>' if step is not None else e(other)
                verb = "derives from" if kind == "derives" else "contradicts"
                rels.append(f"{verb} {where}")
    if convicted:
        rels.append("convicted later")
    if c.grounded:
        rels.append("grounded")
    extra = f' <span class="rel">{"; ".join(rels)}</span>' if rels else ""
    return f'<span class="{classes}" title="{e(tip)}">{e(c.key)} = {e(c.value)}</span>{extra}'


def _html_map(
    rep: Replay,
    nodes: dict[tuple[str, str], ClaimNode],
    cand_rank: dict[tuple[str, str], int],
) -> str:
    """Swimlane map: one lane per agent, one dot per message, derive/contradict arcs."""
    e = html.escape
    head = "<section><h2>Lineage map</h2>"
    if len(rep.steps) > HTML_MAP_LIMIT:
        return head + (
            f'<p class="muted">Omitted above {HTML_MAP_LIMIT} messages; the full graph is '
            "in genealogy.graphml.</p></section>"
        )
    agents = list(dict.fromkeys(s.envelope.sender for s in rep.steps))
    lane = {a: i for i, a in enumerate(agents)}
    left, dx, dy, top = 150, 34, 36, 26
    width = left + dx * max(1, len(rep.steps)) + 20
    height = top + dy * max(1, len(agents)) + 10
    pos: dict[tuple[str, str], tuple[int, int]] = {}
    for s in rep.steps:
        env = s.envelope
        pos[(env.conversation, env.id)] = (
            left + dx * s.index + dx // 2,
            top + dy * lane[env.sender] + dy // 2,
        )
    svg = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="lineage map" font-family="system-ui,sans-serif" font-size="12">'
    ]
    for a, i in lane.items():
        y = top + dy * i + dy // 2
        svg.append(
            f'<line x1="{left}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#edf2f7"/>'
            f'<text x="8" y="{y + 4}">{e(a[:20])}</text>'
        )
    for s in rep.steps:
        if s.index % 5 == 0:
            x = left + dx * s.index + dx // 2
            svg.append(f'<text x="{x}" y="14" text-anchor="middle" fill="#718096">{s.index}</text>')
    drawn: set[tuple[str, str, str, str]] = set()
    style = {
        "derives": 'stroke="#3182ce" stroke-width="1.5"',
        "contradicts": 'stroke="#c53030" stroke-width="1.5" stroke-dasharray="4 3"',
    }
    g = rep.graph
    for (conv, cid), node in nodes.items():
        if cid not in g:
            continue
        for _, target, kind in g.out_edges(cid, data="kind"):
            if kind not in style:
                continue
            other = nodes.get((conv, target))
            if other is None:
                continue
            key = (conv, node.message, other.message, kind)
            if key in drawn or node.message == other.message:
                continue
            drawn.add(key)
            src, dst = pos.get((conv, node.message)), pos.get((conv, other.message))
            if src is None or dst is None:
                continue
            (x1, y1), (x2, y2) = src, dst
            lift = 14 + min(60, abs(x1 - x2) // 6)
            cx, cy = (x1 + x2) // 2, min(y1, y2) - lift
            svg.append(
                f'<path d="M{x1} {y1} Q{cx} {cy} {x2} {y2}" fill="none" {style[kind]}>'
                f"<title>{e(kind)}</title></path>"
            )
    fills = {"red": "#e53e3e", "yellow": "#ecc94b", "green": "#48bb78", "": "#cbd5e0"}
    for s in rep.steps:
        env, d = s.envelope, s.decision
        x, y = pos[(env.conversation, env.id)]
        worst = _worst(c.label for c in d.claims)
        claims = "; ".join(f"{c.key} = {c.value} ({c.label.value})" for c in d.claims)
        tip = f"step {s.index} {env.sender}: {d.verdict.value}" + (f" | {claims}" if claims else "")
        rank = cand_rank.get((env.conversation, env.id))
        ring = ' stroke="#2b6cb0" stroke-width="3"' if rank else ' stroke="#4a5568"'
        svg.append(
            f'<a href="#s{s.index}"><circle cx="{x}" cy="{y}" r="7" fill="{fills[worst]}"{ring}>'
            f"<title>{e(tip)}</title></circle></a>"
        )
        if rank and rank <= 9:
            svg.append(
                f'<text x="{x + 9}" y="{y - 8}" fill="#2b6cb0" font-weight="bold">#{rank}</text>'
            )
    svg.append("</svg>")
    legend = (
        '<p class="legend muted"><span>&#9679; green / yellow / red: worst claim label</span>'
        "<span>blue arc: derives from</span><span>red dashed arc: contradicts</span>"
        "<span>blue ring #n: root-cause candidate</span></p>"
    )
    return head + '<div class="scroll">' + "".join(svg) + "</div>" + legend + "</section>"


def _worst(labels: Iterable[Label]) -> str:
    best: Label | None = None
    for label in labels:
        if best is None or _LABEL_RANK[label] > _LABEL_RANK[best]:
            best = label
    return best.value if best else ""


def _highlight(content: str, spans: list[tuple[str, str]]) -> str:
    """Escape ``content``, wrapping each claim's surface text in a coloured ``<mark>``."""
    text = content if len(content) <= HTML_CONTENT_LIMIT else content[:HTML_CONTENT_LIMIT]
    found: list[tuple[int, int, str]] = []
    for span, label in spans:
        if not span:
            continue
        at = text.find(span)
        if at >= 0 and all(at >= end or at + len(span) <= start for start, end, _ in found):
            found.append((at, at + len(span), label))
    found.sort()
    out, pos = [], 0
    for start, end, label in found:
        out.append(html.escape(text[pos:start]))
        out.append(f'<mark class="{label}">{html.escape(text[start:end])}</mark>')
        pos = end
    out.append(html.escape(text[pos:]))
    if len(content) > len(text):
        out.append(f" … ({len(content) - len(text)} more characters)")
    return "".join(out)


# ============================================================================ what-if


@dataclass
class Change:
    """A message whose verdict or set of fired rules differs under the candidate rules."""

    step: int
    message: str
    conversation: str
    sender: str
    current: Verdict
    candidate: Verdict
    current_rules: list[str]
    candidate_rules: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "id": self.message,
            "conversation": self.conversation,
            "sender": self.sender,
            "verdict": {"current": self.current.value, "candidate": self.candidate.value},
            "rules": {"current": self.current_rules, "candidate": self.candidate_rules},
        }


@dataclass
class WhatIf:
    """The same transcript decided under the current and under candidate rules."""

    current_rules: list[str]  # rule paths (the config's rules.paths; maybe none)
    candidate_rules: list[str]
    current: Counter[Verdict]  # verdict -> messages
    candidate: Counter[Verdict]
    changes: list[Change]

    def to_dict(self) -> dict[str, Any]:
        """The ``what_if`` object of ``--format json``."""
        return {
            "current": {
                "rules": self.current_rules,
                "decisions": {v.value: self.current[v] for v in Verdict if self.current[v]},
            },
            "candidate": {
                "rules": self.candidate_rules,
                "decisions": {v.value: self.candidate[v] for v in Verdict if self.candidate[v]},
            },
            "totals": {
                v.value: {
                    "current": self.current[v],
                    "candidate": self.candidate[v],
                    "change": self.candidate[v] - self.current[v],
                }
                for v in Verdict
                if self.current[v] or self.candidate[v]
            },
            "changed": len(self.changes),
            "changes": [c.to_dict() for c in self.changes],
        }


def fired_rules(decision: Decision) -> list[str]:
    """The rules that fired on a decision, in evaluation order (``rule:<name>`` entries)."""
    return [r[5:] for r in decision.rules if r.startswith("rule:")]


def with_rules(config: Config, paths: Sequence[str | Path]) -> Config:
    """``config`` with ``rules.paths`` replaced by ``paths`` (the rest of it unchanged)."""
    rules = msgspec.structs.replace(config.rules, paths=[str(p) for p in paths])
    return msgspec.structs.replace(config, rules=rules)


def what_if(
    current: Sequence[Step],
    candidate: Sequence[Step],
    current_rules: Sequence[str] = (),
    candidate_rules: Sequence[str] = (),
) -> WhatIf:
    """Compare two replays of the same transcript, step by step.

    Both start from a fresh core, so a candidate rule can change later decisions too (the
    circuit breaker counts held attempts; rate limits count messages): every step is compared.
    """
    if len(current) != len(candidate):
        raise ValueError(f"replays differ in length: {len(current)} != {len(candidate)}")
    changes = []
    for a, b in zip(current, candidate, strict=True):
        da, db = a.decision, b.decision
        ra, rb = fired_rules(da), fired_rules(db)
        if da.verdict is not db.verdict or set(ra) != set(rb):
            env = a.envelope
            changes.append(
                Change(
                    a.index, env.id, env.conversation, env.sender, da.verdict, db.verdict, ra, rb
                )
            )
    return WhatIf(
        list(current_rules),
        list(candidate_rules),
        Counter(s.decision.verdict for s in current),
        Counter(s.decision.verdict for s in candidate),
        changes,
    )


def rule_paths(values: Iterable[str | Path]) -> list[str]:
    """``--rules`` values: each a file or directory, or a comma-separated list of them (a
    value that names an existing path is never split)."""
    out: list[str] = []
    for value in map(str, values):
        if "," in value and not Path(value).exists():
            out += [v.strip() for v in value.split(",") if v.strip()]
        else:
            out.append(value)
    return out


# ============================================================================ command line


def replay_file(
    file: Path, config: Config | None = None, advance: Callable[[], None] | None = None
) -> Replay:
    """Load and replay a transcript file (raises :class:`ReplayInputError`)."""
    cfg = config if config is not None else Config()
    transcript = load_transcript(file, cfg.limits.max_message_bytes)
    rep = replay(transcript.envelopes, cfg, advance, str(file), transcript.shape)
    rep.warnings[:0] = transcript.warnings
    return rep


def main(
    file: Path,
    fmt: str = "text",
    out: Path | None = None,
    config: Path | None = None,
    rules: Sequence[str | Path] | None = None,
) -> int:
    """``ostracon replay``: returns the exit code (2 for unusable input, config or rules).

    With ``rules`` (candidate rule files or directories) the transcript is also replayed with
    them in place of the config's ``rules.paths`` and the differences are reported (what-if);
    the genealogy outputs and the ranking stay those of the current rules.
    """
    from rich.markup import escape

    err = Console(stderr=True)

    def fail(exc: Exception | str) -> int:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2

    candidate = rule_paths(rules) if rules is not None else None
    try:
        cfg = load_config(config)
        if candidate is not None:
            from .rules import load_rules

            if not candidate:
                return fail("--rules: no rule files given")
            if not load_rules(candidate).files:
                return fail(f"--rules {', '.join(candidate)}: no rule files (*.yaml) found")
        transcript = load_transcript(file, cfg.limits.max_message_bytes)
    except (ConfigError, ReplayInputError) as exc:
        return fail(exc)
    envelopes = transcript.envelopes
    if not envelopes:
        return fail(f"{file}: no messages to replay")
    runs = 1 if candidate is None else 2
    try:
        with ExitStack() as stack:
            advance: Callable[[], None] | None = None
            if len(envelopes) * runs > PROGRESS_ABOVE:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

                bar = stack.enter_context(
                    Progress(
                        TextColumn("replaying"),
                        BarColumn(),
                        MofNCompleteColumn(),
                        console=err,
                        transient=True,
                    )
                )
                task = bar.add_task("replay", total=len(envelopes) * runs)
                advance = partial(bar.advance, task)
            rep = replay(envelopes, cfg, advance, str(file), transcript.shape)
            diff = None
            if candidate is not None:
                steps, _, _ = decide_all(envelopes, with_rules(cfg, candidate), advance)
                diff = what_if(rep.steps, steps, cfg.rules.paths, candidate)
    except ConfigError as exc:  # the config's own rules.paths are loaded by the core
        return fail(exc)
    rep.warnings[:0] = transcript.warnings
    for w in rep.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)
    out_dir = out if out is not None else file.parent / f"{file.stem}.replay"
    try:
        outputs = write_outputs(rep, out_dir)
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot write {escape(str(out_dir))}: {escape(str(exc))}")
        return 1
    if fmt == "json":
        doc = summary(rep, outputs)
        if diff is not None:
            doc["what_if"] = diff.to_dict()
        print(json.dumps(doc))
        return 0
    console = Console()
    _print_text(rep, outputs, console)
    if diff is not None:
        _print_what_if(diff, console)
    return 0


def _print_text(rep: Replay, outputs: dict[str, str], console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    counts = summary(rep)["decisions"]
    console.print(
        f"Replayed [bold]{len(rep.steps)}[/bold] messages: "
        + escape(", ".join(f"{k} {v}" for k, v in counts.items())),
        highlight=False,
    )
    if not rep.candidates:
        console.print("No root-cause candidates: no claim ended Red, was convicted or spread.")
    else:
        table = Table(title="Root-cause candidates", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("agent")
        table.add_column("step", justify="right")
        table.add_column("score", justify="right")
        table.add_column("claims")
        table.add_column("reason", ratio=1)
        for i, c in enumerate(rep.candidates[:10], 1):
            claims = ", ".join(f"{cl['key']} = {cl['value']}" for cl in c.claims)
            table.add_row(
                str(i), Text(c.agent), str(c.step), f"{c.score:.3f}", Text(claims), Text(c.reason)
            )
        console.print(table)
        if len(rep.candidates) > 10:
            console.print(f"... and {len(rep.candidates) - 10} more in genealogy.json")
        top = rep.candidates[0]
        chain = Table(
            title=f"Evidence chain of #1 ({top.agent}, step {top.step})",
            title_justify="left",
            box=None,
            padding=(0, 1),
        )
        chain.add_column("step", justify="right", no_wrap=True)
        chain.add_column("agent", overflow="fold")
        chain.add_column("claim (label)", ratio=1, overflow="fold")
        chain.add_column("relation", no_wrap=True)
        chain.add_column("verdict", no_wrap=True)
        for item in top.evidence:
            label = item["label"] or ""
            claim = Text(f"{item['key']} = {item['value']}", style=label)
            claim.append(f" ({label or 'no label'})")
            relation = item["relation"] + (", convicted" if item["convicted"] else "")
            chain.add_row(
                str(item["step"]), Text(item["agent"]), claim, relation, item["verdict"] or ""
            )
        console.print()
        console.print(chain)
    console.print("\nOutputs:")
    for kind, path in outputs.items():
        console.print(Text(f"  {kind:<8} {path}"), soft_wrap=True)


WHAT_IF_ROWS = 100  # changed messages listed in text; --format json lists all


def _print_what_if(diff: WhatIf, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    def names(paths: Sequence[str]) -> str:
        return ", ".join(paths) if paths else "none"

    console.print()
    console.print(
        Text(
            f"What if: candidate rules {names(diff.candidate_rules)} "
            f"instead of the current ({names(diff.current_rules)})",
            style="bold",
        ),
        soft_wrap=True,
    )
    if not diff.changes:
        console.print("No message would be decided differently.")
    else:
        table = Table(
            title=f"{len(diff.changes)} message(s) would change (verdict: current -> candidate)",
            title_justify="left",
            box=None,
            padding=(0, 1),
        )
        table.add_column("step", justify="right", no_wrap=True)
        table.add_column("id", overflow="fold")
        table.add_column("sender", overflow="fold")
        table.add_column("verdict", no_wrap=True)
        table.add_column("rules fired: current", ratio=1, overflow="fold")
        table.add_column("candidate", ratio=1, overflow="fold")
        for c in diff.changes[:WHAT_IF_ROWS]:
            verdict = Text(c.current.value)
            if c.candidate is not c.current:
                verdict.append(" -> ")
                verdict.append(c.candidate.value, style="bold")
            else:
                verdict.append(" (same)", style="dim")
            table.add_row(  # one rule per line: rule names are long and unbreakable
                str(c.step),
                Text(c.message),
                Text(c.sender),
                verdict,
                Text("\n".join(c.current_rules) or "-"),
                Text("\n".join(c.candidate_rules) or "-"),
            )
        console.print(table)
        if len(diff.changes) > WHAT_IF_ROWS:
            more = len(diff.changes) - WHAT_IF_ROWS
            console.print(f"... and {more} more (--format json lists all)")
    totals = Table(title="Verdicts", title_justify="left")
    totals.add_column("verdict")
    totals.add_column("current", justify="right")
    totals.add_column("candidate", justify="right")
    totals.add_column("change", justify="right")
    for v in Verdict:
        a, b = diff.current[v], diff.candidate[v]
        if a or b:
            totals.add_row(v.value, str(a), str(b), f"{b - a:+d}" if b != a else "0")
    console.print(totals)
