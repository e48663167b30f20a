"""Rules in YAML: files of rules, macros and lists, compiled once into a core stage.

A rule file is a YAML list of items, each one of::

    - requires: "0.1"                 # minimum ostracon version for this file
    - list: trusted_agents            # a named list, usable right of `in`
      items: [finance-tool, auditor]
    - macro: from_hub                 # a named boolean condition, usable in conditions
      condition: sender.hub or meta.role in ["aggregator", "summarizer"]
    - rule: hold-spreading-rumours
      description: Unverified claims repeated by 3+ agents are held.
      condition: claims.any(c, c.label == "yellow" and c.reach >= 3)
      actions: {hold: {reason: "spreading without a source"}, alert: {severity: warning}}
      priority: 50                    # higher wins a conflict; default 0
      tags: [containment]
      enabled: true
      exceptions:                     # matches to exempt: any listed value tuple
        - name: trusted
          fields: [sender]
          values: [[finance-tool], [auditor]]

Several files (or directories of ``*.yaml``) load in order and merge: a later list or
macro with the same name replaces the earlier one (``append: true`` extends a list); a later
rule with an existing name is an error unless it says ``override: true`` (its fields replace
the earlier rule's) or carries only ``enabled`` (to switch the earlier rule on or off).

Conditions use :mod:`ostracon.conditions` over the fields in :data:`SCHEMA`. Actions: one
verdict among ``deliver``, ``tag`` (deliver tagged, adds ``ostracon-tag-*`` headers),
``quarantine``, ``block`` (with feedback to the sender), ``hold`` (hold for quorum; the gate
parameters are recorded) plus any of ``alert``, ``accuse`` and ``rate_limit``. Among the
rules that fire, the verdict of the highest ``priority`` wins, ties going to the more severe
verdict, then to the rule name, so the outcome is deterministic; every fired rule is recorded
in the decision. Rules combine with the built-in stages like any stage: the most restrictive
verdict wins, so a rule can tighten the built-in containment, never loosen it.

Every error names the file, line (and column inside a condition) and the field.

Evaluation: the rule set runs as one generated function (:mod:`ostracon.codegen`; each
condition's closures stay the reference and the fallback), gated by an index on the fields
most rules test (:class:`_Index`): per message it evaluates only what the rules its key
leaves have beyond the key, and records what fires inline. ``benchmarks/rules.py`` measures
it; ``RulesStage(index=False)`` evaluates every rule's closures instead (the tests compare
the two).
"""

from __future__ import annotations

import ast
import bisect
import enum
import functools
import operator
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from . import __version__
from .codegen import Entry, attribute_read, program
from .conditions import (
    Compiler,
    Condition,
    ConditionError,
    Field,
    Schema,
    Type,
    _dig,
    _resolve,
)
from .config import ConfigError, _locate, decode_yaml
from .core import Context, Core, Stage, decide
from .decision import Accusation, Alert, Decision, Label, Severity, StageOutcome, Verdict
from .envelope import Envelope

# --------------------------------------------------------------------------------------------
# File schema


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class QuarantineAction(_Strict, frozen=True):
    reason: str = ""


class BlockAction(_Strict, frozen=True):
    reason: str = ""
    feedback: str = ""  # sent to the sender; a template like summary


class HoldAction(_Strict, frozen=True):
    """Hold for quorum: the message waits for ``quorum`` approvals from ``validators``."""

    reason: str = ""
    validators: list[str] = []
    quorum: Annotated[int, msgspec.Meta(ge=1)] = 1
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0


class AlertAction(_Strict, frozen=True):
    severity: Severity = Severity.WARNING
    kind: str = "rule"
    summary: str = "{rule} matched {kind} {id} from {sender}"


class AccuseAction(_Strict, frozen=True):
    reason: str = ""


class RateLimitAction(_Strict, frozen=True):
    """More than ``max`` messages per sender within ``window_s`` (message time) -> ``then``."""

    max: Annotated[int, msgspec.Meta(ge=1)]
    window_s: Annotated[float, msgspec.Meta(gt=0)]
    then: Literal["deliver-tagged", "hold", "quarantine", "block"] = "quarantine"


class Actions(_Strict, frozen=True):
    deliver: bool = False
    tag: dict[str, str] = {}
    quarantine: QuarantineAction | None = None
    block: BlockAction | None = None
    hold: HoldAction | None = None
    alert: AlertAction | None = None
    accuse: AccuseAction | None = None
    rate_limit: RateLimitAction | None = None


class ExceptionSpec(_Strict, frozen=True):
    name: str
    fields: list[str]
    values: list[list[str | int | float | bool]]


class Item(_Strict, frozen=True):
    """One entry of a rule file: exactly one of rule / macro / list / requires."""

    rule: str | None = None
    macro: str | None = None
    list_: str | None = msgspec.field(default=None, name="list")
    requires: str | None = None
    description: str | None = None
    condition: str | None = None
    actions: Actions | None = None
    priority: int | None = None
    tags: list[str] | None = None
    enabled: bool | None = None
    exceptions: list[ExceptionSpec] | None = None
    items: list[str | int | float] | None = None
    append: bool = False
    override: bool = False


class RuleError(ConfigError):
    """A rule file that cannot be used: ``file:line[:col]: field: problem (hint: ...)``."""

    def __init__(
        self, file: str, line: int | None, field: str, problem: str, col: int | None = None
    ) -> None:
        super().__init__(file, line, field, problem)
        self.col = col
        if col is not None and line:
            self.args = (str(self).replace(f"{file}:{line}:", f"{file}:{line}:{col}:", 1),)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


# --------------------------------------------------------------------------------------------
# What conditions can read


_UNSET: Any = object()  # a derived fact not computed yet for this message


class Facts:
    """What a rule sees of one message: the envelope and what earlier stages found.

    Facts derived from the claims or the state (labels, lineage, components, reputation,
    disputed keys, the rate) are computed on first read and kept for the other rules of the
    message: many rules read the same few, and most rule sets never read some of them.
    """

    __slots__ = (
        "_claims",
        "_components",
        "_count",
        "_depth",
        "_disputed",
        "_labels",
        "_rate",
        "_reputation",
        "_sources",
        "_stage",
        "_texts",
        "ctx",
        "env",
    )

    def __init__(
        self,
        ctx: Context,
        rate: int = 0,
        count: Callable[[], int] | None = None,
        stage: RulesStage | None = None,
    ) -> None:
        self.ctx = ctx
        self.env = ctx.envelope
        # The sender's messages in the recent window: ``rate``, or on first read ``count()``
        # or the stage's count over its window (counting scans the sender's window; most
        # rule sets never read it).
        self._rate = rate if count is None and stage is None else _UNSET
        self._count = count
        self._stage = stage
        self._labels = self._depth = self._sources = _UNSET
        self._reputation = self._disputed = _UNSET
        self._components: dict[str, float] | None = None
        self._claims: str | None = None  # the {claims} text of alerts
        self._texts: dict[str, str] | None = None  # rendered alert texts (see _summary)

    @property
    def rate(self) -> int:
        v = self._rate
        if v is _UNSET:
            if self._count is not None:
                v = self._rate = self._count()
            else:
                stage = self._stage
                assert stage is not None
                v = self._rate = stage._count(self.ctx, stage.window)
        return v  # type: ignore[no-any-return]


# The derived facts below loop in plain bytecode: a comprehension makes a function object
# per call, max(default=) parses keywords, and round() formats the float (all measured
# under cachegrind as instruction-cache misses of the rules stage).

_LABELS = tuple(sorted(label.value for label in Label))
_REPUTATIONS: dict[tuple[int, int], float] = {}  # (claims, red) -> reputation, rounded


def _reputation(f: Facts) -> float:
    v = f._reputation
    if v is _UNSET:
        rec = f.ctx.state.records.get(f.env.sender)
        if not rec:
            v = 1.0
        else:
            key = (rec[0], rec[1])
            v = _REPUTATIONS.get(key)
            if v is None:
                if len(_REPUTATIONS) >= 65_536:
                    _REPUTATIONS.clear()
                v = _REPUTATIONS[key] = round(1.0 - rec[1] / (rec[0] + 1), 3)
        f._reputation = v
    return v  # type: ignore[no-any-return]


def _lineage_depth(f: Facts) -> int:
    v = f._depth
    if v is _UNSET:
        v = None
        for c in f.ctx.claims:  # as max(): the first of the greatest
            if v is None or c.depth > v:
                v = c.depth
        f._depth = v = 0 if v is None else v
    return v  # type: ignore[no-any-return]


def _sources(f: Facts) -> int | None:
    v = f._sources
    if v is _UNSET:
        v = None
        for c in f.ctx.claims:
            if v is None or c.support < v:
                v = c.support
        f._sources = v
    return v  # type: ignore[no-any-return]


def _labels(f: Facts) -> list[str]:
    v = f._labels
    if v is _UNSET:
        # (_value_ is what .value reads, without the enum property's Python-level lookup;
        # the three labels in sorted order, without a sort)
        seen = set()
        for c in f.ctx.claims:
            seen.add(c.label._value_)
        v = []
        for x in _LABELS:
            if x in seen:
                v.append(x)
        f._labels = v
    return v  # type: ignore[no-any-return]


def _disputed(f: Facts) -> list[str]:
    """Keys of this message's claims on which another agent's latest value differs."""
    cached = f._disputed
    if cached is not _UNSET:
        return cached  # type: ignore[no-any-return]
    out: list[str] = []
    lin = f.ctx.state.genealogy.lineage(f.env.conversation)
    if lin is not None:
        for c in f.ctx.claims:
            held = lin.latest.get(c.key)
            if held and any(v != c.value for a, v in held.items() if a != f.env.sender):
                out.append(c.key)
    f._disputed = out
    return out


def _origin_nodes(f: Facts) -> list[Any]:
    """The root claims this message's claims descend from (those not evicted)."""
    lin = f.ctx.state.genealogy.lineage(f.env.conversation)
    if lin is None:
        return []
    roots = {o for c in f.ctx.claims for o in c.origins}
    return [n for n in map(lin.claims.get, sorted(roots)) if n is not None]


def _origin_agents(f: Facts) -> list[str]:
    return sorted({n.sender for n in _origin_nodes(f)} | _own_roots(f, "sender"))


def _origin_kinds(f: Facts) -> list[str]:
    lin = f.ctx.state.genealogy.lineage(f.env.conversation)
    kinds = {m.kind.value for n in _origin_nodes(f) if lin and (m := lin.messages.get(n.message))}
    return sorted(kinds | _own_roots(f, "kind"))


def _own_roots(f: Facts, what: str) -> set[str]:
    """This message itself, when one of its claims is a root (not recorded yet)."""
    if not any(c.depth == 0 for c in f.ctx.claims):
        return set()
    return {f.env.sender if what == "sender" else f.env.kind.value}


def _conversation_r(f: Facts) -> float | None:
    """The latest early-warning estimate R = beta * rho(A) / delta (monitors)."""
    r = f.ctx.notes.get("r")
    if r is None:
        r = getattr(f.ctx.state.monitors.get(f.env.conversation), "r", None)
    return r  # type: ignore[return-value]


def _component(name: str) -> Callable[[Facts], float]:
    def get(f: Facts) -> float:
        memo = f._components
        if memo is None:
            memo = f._components = {}
        v = memo.get(name)
        if v is None:
            for c in f.ctx.claims:  # as max(): the first of the greatest
                x = c.components.get(name, 0.0)
                if v is None or x > v:
                    v = x
            v = memo[name] = 0.0 if v is None else v
        return v

    return get


_CLAIM = {
    "key": Field(Type.STR, operator.attrgetter("key"), "normalized claim key"),
    "value": Field(Type.STR, operator.attrgetter("value"), "normalized value"),
    "label": Field(Type.STR, operator.attrgetter("label"), "green | yellow | red"),
    "risk": Field(Type.NUM, operator.attrgetter("risk"), "propagation risk 0..1"),
    "reach": Field(Type.NUM, operator.attrgetter("reach"), "agents asserting it"),
    "depth": Field(Type.NUM, operator.attrgetter("depth"), "hops from its root"),
    "grounded": Field(Type.BOOL, operator.attrgetter("grounded"), "tool/human/trusted source"),
    "sources": Field(Type.NUM, operator.attrgetter("support"), "independent sources"),
    "contradicts": Field(Type.LIST, operator.attrgetter("contradicts"), "values it disagrees with"),
}

SCHEMA: Schema = {
    "id": Field(Type.STR, operator.attrgetter("env.id"), "message id"),
    "sender": Field(Type.STR, operator.attrgetter("env.sender"), "sending agent"),
    "kind": Field(Type.STR, operator.attrgetter("env.kind"), "chat, tool_call, tool_result, ..."),
    "conversation": Field(Type.STR, operator.attrgetter("env.conversation"), "conversation id"),
    "content": Field(Type.STR, operator.attrgetter("env.content"), "message text"),
    "recipients": Field(Type.LIST, operator.attrgetter("env.recipients"), "addressed agents"),
    "parents": Field(Type.LIST, operator.attrgetter("env.parents"), "message ids it answers"),
    "meta.*": Field(Type.ANY, operator.attrgetter("env.meta"), "the envelope's meta object"),
    "claims": Field(
        Type.RECORDS, operator.attrgetter("ctx.claims"), "the message's claims", _CLAIM
    ),
    "labels": Field(Type.LIST, _labels, "distinct labels of its claims"),
    "disputed": Field(Type.LIST, _disputed, "its claim keys other agents hold otherwise"),
    "risk.score": Field(Type.NUM, operator.attrgetter("ctx.risk"), "riskiest claim's score"),
    **{
        f"risk.components.{name}": Field(Type.NUM, _component(name), f"max {name} component")
        for name in ("ungrounded", "contradiction", "reach", "depth", "hub", "reputation")
    },
    "lineage.depth": Field(Type.NUM, _lineage_depth, "deepest claim's hops from its root"),
    "lineage.sources": Field(Type.NUM, _sources, "fewest independent sources of a claim"),
    "lineage.origin_agents": Field(Type.LIST, _origin_agents, "agents its claims started from"),
    "lineage.origin_kinds": Field(
        Type.LIST, _origin_kinds, "kinds of the messages its claims started from"
    ),
    "conversation.r": Field(Type.NUM, _conversation_r, "latest cascade early warning R"),
    "sender.role": Field(Type.ANY, _dig(operator.attrgetter("env.meta"), ["role"]), "meta.role"),
    "sender.model_family": Field(
        Type.ANY,
        _dig(operator.attrgetter("env.meta"), ["model_family"]),
        "meta.model_family",
    ),
    "sender.hub": Field(Type.BOOL, lambda f: bool(f.ctx.notes.get("hub")), "observed or role hub"),
    "sender.reputation": Field(Type.NUM, _reputation, "1 - share of its claims found Red"),
    "sender.blocklisted": Field(
        Type.BOOL, lambda f: f.env.sender in f.ctx.state.blocklist, "on the blocklist"
    ),
    "sender.accusations": Field(
        Type.NUM,
        lambda f: len(f.ctx.state.accusers.get(f.env.sender, ())),
        "distinct accusers against it (ostracon.byzantine)",
    ),
    "sender.rate": Field(Type.NUM, lambda f: f.rate, "its messages in the rate window"),
    "verdict": Field(
        Type.STR, operator.attrgetter("ctx.verdict"), "verdict of the stages before rules"
    ),
}

_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_TEMPLATE_EXTRA = {"rule", "claims"}


# --------------------------------------------------------------------------------------------
# Compiled rules


Exemption = tuple[str, tuple[Callable[[Any], Any], ...], frozenset[tuple[Any, ...]]]


@dataclass
class Rule:
    name: str
    condition: Condition
    actions: Actions
    priority: int = 0
    description: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    exceptions: tuple[
        tuple[str, tuple[Callable[[Any], Any], ...], frozenset[tuple[Any, ...]]], ...
    ] = ()
    where: str = ""  # file:line, for messages
    verdict: Verdict | None = None
    reason: str = ""
    exempt_fields: frozenset[str] = frozenset()  # the fields its exceptions read

    def exempt(self, facts: Facts) -> str | None:
        """The name of the exception that exempts this match, if any."""
        for name, getters, values in self.exceptions:
            got = []
            for g in getters:  # (a loop: a generator makes a function per call)
                got.append(g(facts))
            if tuple(got) in values:
                return name
        return None


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)  # by priority, highest first, then name
    macros: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    compiler: Compiler | None = None  # what compiled the conditions (ostracon.codegen reads it)

    @property
    def enabled(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled]


def _verdict_of(actions: Actions) -> tuple[Verdict | None, str]:
    """The most severe verdict among a rule's verdict actions, with its reason text."""
    found: list[tuple[Verdict, str]] = []
    if actions.deliver:
        found.append((Verdict.DELIVER, ""))
    if actions.tag:
        found.append((Verdict.DELIVER_TAGGED, ""))
    if actions.hold is not None:
        found.append((Verdict.HOLD, actions.hold.reason))
    if actions.quarantine is not None:
        found.append((Verdict.QUARANTINE, actions.quarantine.reason))
    if actions.block is not None:
        found.append((Verdict.BLOCK, actions.block.reason))
    if not found:
        return None, ""
    return max(found, key=lambda vr: vr[0].severity)


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml"))
        else:
            out.append(p)
    return out


@dataclass
class _Pending:
    item: Item
    file: str
    root: yaml.Node
    index: int

    def line(self, *parts: str | int) -> int:
        return _locate(self.root, [self.index, *parts])

    def error(
        self, field: str, problem: str, *parts: str | int, col: int | None = None
    ) -> RuleError:
        line = self.line(*parts)
        if col is not None:  # a column inside the condition text -> a place in the file
            line, col = _place(self._node(*parts), line, col)
        return RuleError(self.file, line, field, problem, col)

    def _node(self, *parts: str | int) -> yaml.Node | None:
        node: yaml.Node | None = self.root
        for part in (self.index, *parts):
            if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            elif isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == part), None)
            else:
                node = None
        return node


def _place(node: yaml.Node | None, line: int, col: int) -> tuple[int, int]:
    """File line and column of the ``col``-th character of a scalar's text (1-based)."""
    if not isinstance(node, yaml.ScalarNode) or node.style in (">",):
        return line, col  # folded text: columns cannot be mapped back; keep the text's
    mark = node.start_mark
    if node.style == "|":  # literal block: the text starts on the next line, indented
        before = node.value[: col - 1]
        row = before.count("\n")
        indent = _indent(node)
        return mark.line + 2 + row, indent + len(before) - (before.rfind("\n") + 1) + 1
    if "\n" in node.value:
        return line, col
    quoted = 1 if node.style in ('"', "'") else 0
    return mark.line + 1, mark.column + quoted + col


def _indent(node: yaml.ScalarNode) -> int:
    """Indentation of a literal block scalar's first text line."""
    buf = node.start_mark.buffer
    if buf is None:
        return 0
    nl = buf.find("\n", node.start_mark.index)
    text = buf[nl + 1 :] if nl >= 0 else ""
    return len(text) - len(text.lstrip(" "))


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Load, merge, type-check and compile rule files (directories: their ``*.yaml``)."""
    rules: dict[str, _Pending] = {}
    merged: dict[str, Item] = {}
    macros: dict[str, tuple[str, _Pending]] = {}
    lists: dict[str, list[Any]] = {}
    files = _files(paths)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(str(path), None, "", f"cannot read: {exc}") from None
        try:
            decoded = decode_yaml(text, str(path), list[Item])
        except ConfigError as exc:  # one error type for every rule-file problem
            raise RuleError(exc.file, exc.line, exc.field, exc.problem) from None
        if decoded is None:
            continue
        items, root = decoded
        for i, item in enumerate(items):
            p = _Pending(item, str(path), root, i)
            heads = [
                k
                for k, v in (
                    ("rule", item.rule),
                    ("macro", item.macro),
                    ("list", item.list_),
                    ("requires", item.requires),
                )
                if v
            ]
            if len(heads) != 1:
                raise p.error(
                    f"[{i}]",
                    "each item needs exactly one of rule, macro, list, requires"
                    + (f" (has {', '.join(heads)})" if heads else ""),
                )
            head = heads[0]
            if head == "requires":
                assert item.requires is not None
                if _version(item.requires) > _version(__version__):
                    raise p.error(
                        "requires",
                        f"needs ostracon >= {item.requires}; this is {__version__}",
                        "requires",
                    )
            elif head == "list":
                name = item.list_
                assert name is not None
                if item.items is None:
                    raise p.error(f"list {name}", "a list needs items", "list")
                lists[name] = [*lists.get(name, []), *item.items] if item.append else [*item.items]
            elif head == "macro":
                assert item.macro is not None
                if not item.condition:
                    raise p.error(f"macro {item.macro}", "a macro needs a condition", "macro")
                macros[item.macro] = (item.condition, p)
            else:
                _merge_rule(p, rules, merged)
    compiler = Compiler(SCHEMA, {k: v[0] for k, v in macros.items()}, lists)
    for name, (text, p) in macros.items():  # errors inside macros point at the macro
        try:
            compiler.compile(text)
        except ConditionError as exc:
            raise p.error(
                f"macro {name}.condition", _problem(exc), "condition", col=exc.col
            ) from None
    compiled = [_compile(name, merged[name], rules[name], compiler) for name in rules]
    compiled.sort(key=lambda r: (-r.priority, r.name))
    return RuleSet(
        compiled, {k: v[0] for k, v in macros.items()}, lists, [str(f) for f in files], compiler
    )


def _problem(exc: ConditionError) -> str:
    where = f" (in macro {exc.macro})" if exc.macro else ""
    hint = f"; hint: {exc.hint}" if exc.hint else ""
    return f"{exc.message}{where}{hint}"


_FIELDS = ("description", "condition", "actions", "priority", "tags", "exceptions")


def _merge_rule(p: _Pending, rules: dict[str, _Pending], merged: dict[str, Item]) -> None:
    item = p.item
    name = item.rule
    assert name is not None
    if name not in rules:
        if item.override:
            raise p.error(
                f"rule {name}", "override: true, but no earlier rule has this name", "override"
            )
        if not item.condition:
            raise p.error(f"rule {name}", "a rule needs a condition", "rule")
        if item.actions is None:
            raise p.error(f"rule {name}", "a rule needs actions", "rule")
        rules[name], merged[name] = p, item
        return
    first = rules[name]
    only_enabled = item.enabled is not None and all(getattr(item, f) is None for f in _FIELDS)
    if only_enabled:
        merged[name] = msgspec.structs.replace(merged[name], enabled=item.enabled)
        return
    if not item.override:
        raise p.error(
            f"rule {name}",
            f"already defined at {first.file}:{first.line()}; add override: true to replace "
            "its fields, or give only enabled: false to switch it off",
            "rule",
        )
    changes = {
        f: getattr(item, f)
        for f in (
            "description",
            "condition",
            "actions",
            "priority",
            "tags",
            "enabled",
            "exceptions",
        )
        if getattr(item, f) is not None
    }
    merged[name] = msgspec.structs.replace(merged[name], **changes)
    rules[name] = p if "condition" in changes else rules[name]


def _compile(name: str, item: Item, p: _Pending, compiler: Compiler) -> Rule:
    assert item.condition is not None and item.actions is not None
    try:
        cond = compiler.compile(item.condition)
    except ConditionError as exc:
        raise p.error(f"rule {name}.condition", _problem(exc), "condition", col=exc.col) from None
    actions = item.actions
    verdict, reason = _verdict_of(actions)
    if (
        verdict is None
        and actions.alert is None
        and actions.accuse is None
        and actions.rate_limit is None
    ):
        raise p.error(
            f"rule {name}.actions",
            "no action: give a verdict, alert, accuse or rate_limit",
            "actions",
        )
    for label, template in (
        ("alert.summary", actions.alert.summary if actions.alert else ""),
        ("block.feedback", actions.block.feedback if actions.block else ""),
    ):
        for m in _TEMPLATE.finditer(template):
            ref = m.group(1)
            if ref not in _TEMPLATE_EXTRA and ref not in SCHEMA and not ref.startswith("meta."):
                raise p.error(
                    f"rule {name}.actions.{label}",
                    f"unknown placeholder {{{ref}}}; use a field name, {{rule}} or {{claims}}",
                    "actions",
                )
    exceptions = []
    for n, spec in enumerate(item.exceptions or ()):
        getters = []
        for fname in spec.fields:
            fdef = SCHEMA.get(fname)
            if fdef is None and not fname.startswith("meta."):
                raise p.error(
                    f"rule {name}.exceptions[{n}].fields", f"unknown field {fname}", "exceptions", n
                )
            if fdef is not None and fdef.type not in (Type.STR, Type.NUM, Type.BOOL, Type.ANY):
                raise p.error(
                    f"rule {name}.exceptions[{n}].fields",
                    f"{fname} is not a single value",
                    "exceptions",
                    n,
                )
            getters.append(fdef.get if fdef is not None else _meta_getter(fname[5:]))
        for values in spec.values:
            if len(values) != len(spec.fields):
                raise p.error(
                    f"rule {name}.exceptions[{n}].values",
                    f"{values} has {len(values)} values for {len(spec.fields)} fields",
                    "exceptions",
                    n,
                )
        exceptions.append((spec.name, tuple(getters), frozenset(tuple(v) for v in spec.values)))
    return Rule(
        name=name,
        condition=cond,
        actions=actions,
        priority=item.priority or 0,
        description=item.description or "",
        tags=tuple(item.tags or ()),
        enabled=item.enabled if item.enabled is not None else True,
        exceptions=tuple(exceptions),
        where=f"{p.file}:{p.line()}",
        verdict=verdict,
        reason=reason,
        exempt_fields=frozenset(f for spec in item.exceptions or () for f in spec.fields),
    )


def _meta_getter(key: str) -> Callable[[Facts], Any]:
    def get(f: Facts) -> Any:
        return f.env.meta.get(key) if f.env.meta else None

    return get


# --------------------------------------------------------------------------------------------
# The stage


def render(template: str, facts: Facts, rule: str) -> str:
    """Fill ``{field}`` placeholders (checked at load); never evaluates anything."""
    pieces = _pieces(template)
    if len(pieces) == 1:
        return pieces[0][0]
    out = []
    for text, ref in pieces:
        out.append(text)
        if ref:
            out.append(_fill(ref, facts, rule))
    return "".join(out)


@lru_cache(maxsize=1024)
def _pieces(template: str) -> tuple[tuple[str, str], ...]:
    """(text, placeholder) pairs of a template, the last one with no placeholder: parsed
    once per template (re.sub with a callback per message cost more than the rest of an
    alert)."""
    out, pos = [], 0
    for m in _TEMPLATE.finditer(template):
        out.append((template[pos : m.start()], m.group(1)))
        pos = m.end()
    out.append((template[pos:], ""))
    return tuple(out)


def _claims_text(facts: Facts) -> str:
    """``{claims}``: the claims that are not Green (once per message: every hold alert of a
    message says the same)."""
    text = facts._claims
    if text is None:
        green = Label.GREEN
        parts = []
        for c in facts.ctx.claims:  # (a loop: a comprehension makes a function per call)
            if c.label is not green:
                parts.append(f"{c.key} = {c.value}")
        text = facts._claims = ", ".join(parts)
    return text


def _fill(ref: str, facts: Facts, rule: str) -> str:
    if ref == "rule":
        return rule
    if ref == "claims":
        return _claims_text(facts)
    if ref.startswith("meta."):
        value = facts.env.meta.get(ref[5:]) if facts.env.meta else None
    else:
        value = SCHEMA[ref].get(facts)
    return "" if value is None else str(value)


def _placeholder(ref: str) -> Callable[[Facts], Any]:
    """The getter of a template's ``{ref}`` (other than ``{rule}``)."""
    if ref == "claims":
        return _claims_text
    if ref.startswith("meta."):
        return _meta_getter(ref[5:])
    return SCHEMA[ref].get


def _renderer(template: str, rule: str) -> Callable[[Facts], str]:
    """``render(template, facts, rule)`` as one closure for one rule: placeholders resolved
    to their getters (and ``{rule}`` to the name) once, at swap time."""
    texts: list[str] = []
    getters: list[Callable[[Facts], Any]] = []
    buf = ""
    for text, ref in _pieces(template):
        buf += text
        if not ref:
            continue
        if ref == "rule":
            buf += rule
            continue
        texts.append(buf)
        buf = ""
        getters.append(_placeholder(ref))
    last = buf
    if not getters:
        return lambda f: last
    if len(getters) == 1:
        (t0,), (g0,) = texts, getters

        def fill1(f: Facts) -> str:
            v = g0(f)
            return t0 + ("" if v is None else str(v)) + last

        return fill1
    if len(getters) == 2:
        (t0, t1), (g0, g1) = texts, getters

        def fill2(f: Facts) -> str:
            v = g0(f)
            w = g1(f)
            return t0 + ("" if v is None else str(v)) + t1 + ("" if w is None else str(w)) + last

        return fill2
    pairs = tuple(zip(texts, getters, strict=True))

    def fill(f: Facts) -> str:
        out = []
        for text, get in pairs:
            out.append(text)
            v = get(f)
            out.append("" if v is None else str(v))
        out.append(last)
        return "".join(out)

    return fill


def _summary(template: str, rule: str) -> Callable[[Facts], str]:
    """An alert summary renderer: ``render(template, facts, rule)``, with the text around
    ``{rule}`` rendered once per message and shared by every rule with the same template (a
    message firing six hold rules renders their ``held {claims} from {sender}`` once; the
    default ``{rule} matched {kind} {id} from {sender}`` costs one concatenation a rule).
    Alerts are rendered before the winner is applied, so what they read cannot change
    between two rules of a message."""
    parts: list[str | Callable[[Facts], str]] = []
    for i, seg in enumerate(template.split("{rule}")):
        if i:
            parts.append(rule)
        pieces = _pieces(seg)
        parts.append(pieces[0][0] if len(pieces) == 1 else _shared_text(seg))
    merged: list[str | Callable[[Facts], str]] = []
    for part in parts:  # adjacent constants as one
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    if not merged:
        return lambda f: ""
    if len(merged) == 1:
        (one,) = merged
        return one if callable(one) else (lambda f: one)  # type: ignore[return-value]
    if len(merged) == 2:
        a, b = merged
        if isinstance(a, str) and callable(b):
            return lambda f: a + b(f)
        if callable(a) and isinstance(b, str):
            return lambda f: a(f) + b
    return lambda f: "".join([x if isinstance(x, str) else x(f) for x in merged])


def _shared_text(template: str) -> Callable[[Facts], str]:
    """``render(template, facts, "")`` (no ``{rule}`` in it), kept with the message's facts."""
    render = _renderer(template, "")

    def text(f: Facts) -> str:
        memo = f._texts
        if memo is None:
            memo = f._texts = {}
        v = memo.get(template)
        if v is None:
            v = memo[template] = render(f)
        return v

    return text


# What a fired rule proposes: the rule, its verdict (None: actions only) and the reason.
Proposal = tuple[Rule, Verdict | None, str]

_SEVERITY = {v: v.severity for v in Verdict}


class _Plan:
    """What ``RulesStage.run`` needs of one rule, computed once per rule set."""

    __slots__ = (
        "accuse",
        "alert",
        "effects",
        "exceptions",
        "fn",
        "rate",
        "rule",
        "stage",
        "static",
    )

    rule: Rule
    fn: Callable[[Any], Any]  # rule.condition.fn
    exceptions: bool  # exempt() has something to check
    stage: str  # "rule:<name>"
    effects: bool  # an alert or accusation
    # What it proposes when it fires (see _Outcome); None: a rate limit decides per message
    static: _Outcome | None
    # with a rate limit: (window_s, max, below the limit, at or over it)
    rate: tuple[float, int, _Outcome, _Outcome] | None
    alert: tuple[str, Severity, Callable[[Facts], str], str] | None  # kind, severity, summary, rule
    accuse: Callable[[Facts], str] | None  # the reason

    @classmethod
    def of(cls, rule: Rule) -> _Plan:
        p = cls()
        p.rule, p.fn, p.exceptions = rule, rule.condition.fn, bool(rule.exceptions)
        p.stage = f"rule:{rule.name}"
        a = rule.actions
        p.effects = a.alert is not None or a.accuse is not None
        p.alert = None
        if a.alert is not None:
            summary = _summary(a.alert.summary, rule.name)
            p.alert = a.alert.kind, a.alert.severity, summary, rule.name
        p.accuse = _renderer(a.accuse.reason, rule.name) if a.accuse is not None else None
        # A rule proposes what RulesStage.propose gives: the same every time without a rate
        # limit, one of two with one; the trail entries are frozen structs that every
        # decision can share.
        reason = rule.reason or rule.description or f"rule {rule.name}"
        below = _outcome(rule, p.stage, rule.verdict, reason)
        p.static, p.rate = below, None
        limit = a.rate_limit
        if limit is not None:
            over = below
            lv = Verdict(limit.then)
            if rule.verdict is None or lv.severity > rule.verdict.severity:
                why = f"rate limit: over {limit.max} in {limit.window_s:g}s"
                over = _outcome(rule, p.stage, lv, why)
            p.static, p.rate = None, (limit.window_s, limit.max, below, over)
        return p


# What a fired rule proposes, computed once: (the proposal, its trail entry, its rank for
# winner() -- (priority, severity) as one int, None without a verdict -- and what _apply
# does when it wins: the reason line, the verdict, the tags, the feedback, the quorum tag).
_Win = tuple[
    str,
    Verdict,
    dict[str, str] | None,
    Callable[[Facts], str] | None,
    tuple[str, HoldAction] | None,
]
_Outcome = tuple[Proposal, StageOutcome, int | None, _Win | None]


def _outcome(rule: Rule, stage: str, verdict: Verdict | None, reason: str) -> _Outcome:
    outcome = StageOutcome(stage, verdict or Verdict.DELIVER, reason)
    if verdict is None:
        return (rule, verdict, reason), outcome, None, None
    return (
        (rule, verdict, reason),
        outcome,
        rule.priority * 8 + verdict.severity,  # severity is 0..4: (priority, severity) order
        _winning(rule, verdict, reason),
    )


def _winning(rule: Rule, verdict: Verdict, reason: str) -> _Win:
    """What RulesStage._apply does when this proposal wins, computed once."""
    a = rule.actions
    tags = a.tag if verdict is Verdict.DELIVER_TAGGED or a.tag else None
    feedback = None
    if verdict is Verdict.BLOCK and a.block and a.block.feedback:
        feedback = _renderer(a.block.feedback, rule.name)
    quorum = None
    gate = a.hold
    if verdict is Verdict.HOLD and gate and (gate.validators or gate.quorum > 1):
        # a quorum gate: validators (and the byzantine layer) read it from the headers
        quorum = (f"{gate.quorum}/{','.join(gate.validators) or '*'}", gate)
    return f"rule {rule.name}: {reason}", verdict, tags, feedback, quorum


_INDEX_FIELDS = 6  # at most this many fields in an index key
_INDEX_SIZE = 4096  # keys kept; a full cache is cleared (or, if it missed more than it hit,
# the field with the most distinct values is dropped from the key)
# Classes whose equal values satisfy the same conditions (a value's class is part of the key
# unless the field is typed, so 1, 1.0 and True stay apart). Other values bypass the index.
_KEY_CLASSES = (int, float, str, enum.Enum)


class _Index:
    """Which rules a message's *key* leaves, found once per key (as Falco indexes its rules
    by event type): the generated function (ostracon.codegen) then evaluates only what the
    others have beyond the key.

    The key fields are those the most rules guard (``sender == "x"``, ``kind in [..]``, a
    bare bool field: :attr:`Condition.guards`), at most six, each guarded by two rules or
    more. A rule's conjuncts (:attr:`Condition.conjuncts`) that read only key fields --
    ``sender in watch_list``, ``startswith(sender, "ext-")``, a macro such as ``sender not
    in trusted`` -- and its exceptions, when they read only key fields, depend on nothing
    but the key's values: for each key seen they are evaluated once, on the first message
    with that key, and the mask of the rules they leave (flag i: ``plans[i]``; not false,
    not exempt) is kept with the key. Conditions are pure functions of the facts, so the
    outcome is that of evaluating every rule in full (``RulesStage(index=False)``, which
    the tests compare it with).

    The key cache holds :data:`_INDEX_SIZE` keys. When it is full it is cleared; if it
    missed more than it hit since it was last cleared, the field with the most distinct
    values is first dropped from the key (a field like a message id would make every
    message a miss). A key with a value that is not hashable, or not a str / number / bool
    / None / enum, bypasses the index: every rule is evaluated in full.
    """

    __slots__ = (
        "_cache",
        "_class_parts",
        "_entries",
        "_getters",
        "_key",
        "_lookups",
        "_text_parts",
        "_texts",
        "fields",
        "plans",
    )

    def __init__(
        self,
        plans: list[_Plan],
        fields: list[str],
        getters: dict[str, Any],
        texts: frozenset[str] = frozenset(),
    ) -> None:
        self.plans = tuple(plans)
        self._getters = getters
        self._texts = texts  # ANY fields guarded by strings only
        self._configure(fields)

    @classmethod
    def build(cls, plans: list[_Plan]) -> _Index | None:
        """An index on the fields guarded by the most rules, or None if no field is worth it."""
        counts: Counter[str] = Counter()
        getters: dict[str, Any] = {}
        others: set[str] = set()  # fields guarded by a value that is not a string
        for p in plans:
            cond = p.rule.condition
            for name in {g[0] for g in cond.guards}:
                get = cond.getters.get(name)
                if get is not None:
                    counts[name] += 1
                    getters.setdefault(name, get)
            others.update(n for n, values in cond.guards if not all(type(v) is str for v in values))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        fields = [name for name, n in ranked if n >= 2][:_INDEX_FIELDS]
        texts = frozenset(counts) - others
        return cls(plans, fields, getters, texts) if fields else None

    def _configure(self, fields: list[str]) -> None:
        self.fields = tuple(fields)
        texts, classes = [], []
        for i, name in enumerate(fields):
            found = _resolve(SCHEMA, name.split("."))
            if found is not None and found[0].type is not Type.ANY and not found[1]:
                continue  # a typed field's values have its type: equal ones agree
            if name in self._texts:
                # rules compare it with strings: its part is the value, and a key whose
                # value there is neither a string nor null is not cached (1 == True == 1.0
                # would meet in the cache; no string equals them)
                texts.append(i)
            else:  # the value with its class (see key_code)
                classes.append(i)
        self._text_parts = tuple(texts)
        self._class_parts = tuple(classes)
        self._key = self._key_function()
        # key -> the rules its values leave: a flag per rule (a tuple: the generated function
        # reads flag i with one specialised subscript, where a bit of a 100-bit int would
        # cost a big-int operation)
        self._cache: dict[tuple[Any, ...], tuple[bool, ...]] = {}
        self._lookups = 0
        keyed = frozenset(fields)
        entries = []  # per rule: (its conjuncts on key fields, exceptions decided by the key)
        for p in self.plans:
            cond = p.rule.condition
            tests = tuple(fn for names, fn in cond.conjuncts if names <= keyed)
            entries.append((tests, bool(p.rule.exceptions) and p.rule.exempt_fields <= keyed))
        self._entries = tuple(entries)

    def key_code(self) -> tuple[list[tuple[str, Callable[[Any], Any]]], ast.expr]:
        """The key as the generated function computes it: ``(local, getter)`` reads and the
        tuple expression over those locals -- the same values as ``_key``."""
        reads = [(f"r_key{i}", self._getters[name]) for i, name in enumerate(self.fields)]
        parts: list[ast.expr] = []
        for i, (local, _) in enumerate(reads):
            v: ast.expr = _name(local)
            # an ANY field's part: the value, with its class unless it is a str, a bool or
            # None (equal values of different classes may not satisfy the same conditions:
            # True == 1, but ``meta.n == 1`` is false for true)
            if i in self._class_parts:
                cls = ast.Attribute(v, "__class__", ast.Load())
                plain = ast.BoolOp(
                    ast.Or(),
                    [
                        ast.Compare(cls, [ast.Is()], [_name("str")]),
                        ast.Compare(cls, [ast.Is()], [_name("bool")]),
                        ast.Compare(v, [ast.Is()], [ast.Constant(None)]),
                    ],
                )
                v = ast.IfExp(plain, v, ast.Tuple([cls, v], ast.Load()))
            parts.append(v)
        return reads, ast.Tuple(parts, ast.Load())

    def _key_function(self) -> Callable[[Facts], tuple[Any, ...]]:
        """:meth:`key_code` as a function of its own, for :meth:`mask` (the generated
        function computes the key inline): one definition of the key for both."""
        reads, key = self.key_code()
        ns: dict[str, Any] = {}
        body: list[ast.stmt] = []
        for i, (local, get) in enumerate(reads):
            ns[f"r_get{i}"] = get
            body.append(_set(local, ast.Call(_name(f"r_get{i}"), [_name("f")], [])))
        args = ast.arguments([], [ast.arg("f")], None, [], [], None, [])
        fn = ast.FunctionDef("key", args, [*body, ast.Return(key)], [], None, None)
        module = ast.fix_missing_locations(ast.Module([fn], []))
        exec(compile(module, "<ostracon index key>", "exec"), ns)
        return ns["key"]  # type: ignore[no-any-return]

    def mask(self, facts: Facts) -> tuple[bool, ...] | None:
        """The rules this message's key leaves (flag i: ``plans[i]``), or None when the key
        cannot be used (evaluate every rule in full)."""
        key = self._key(facts)
        self._lookups += 1
        try:
            hit = self._cache.get(key)
        except TypeError:  # an unhashable value (a list in meta): no index for it
            return None
        return hit if hit is not None else self._fill(key, facts)

    def decides(self, i: int) -> bool:
        """Whether the key can rule rule ``i`` out (a conjunct or exception on key fields):
        if not, its flag is always true."""
        tests, known = self._entries[i]
        return bool(tests) or known

    def known(self, i: int) -> bool:
        """Whether the key decides rule ``i``'s exceptions (its flag is false when exempt)."""
        return self._entries[i][1]

    def _fill(self, key: tuple[Any, ...], facts: Facts) -> tuple[bool, ...] | None:
        for i in self._text_parts:
            if key[i] is not None and not isinstance(key[i], str):
                return None
        for i in self._class_parts:
            v = key[i]
            if v.__class__ is tuple and not issubclass(v[0], _KEY_CLASSES):
                return None  # equality of such values says nothing about conditions
        flags = []
        for i, (tests, known) in enumerate(self._entries):
            for test in tests:
                if not test(facts):
                    flags.append(False)
                    break
            else:
                flags.append(not known or self.plans[i].rule.exempt(facts) is None)
        mask = tuple(flags)
        cache = self._cache
        if len(cache) >= _INDEX_SIZE:
            misses = len(cache)
            if self._lookups - misses < misses and len(self.fields) > 1:
                # mostly misses: drop the field with the most distinct values from the key
                distinct = [len({k[i] for k in cache}) for i in range(len(self.fields))]
                drop = distinct.index(max(distinct))
                self._configure([f for i, f in enumerate(self.fields) if i != drop])
                return None  # this key was computed on the old fields: evaluate all rules
            cache.clear()
            self._lookups = 0
        cache[key] = mask
        return mask


def _name(n: str) -> ast.Name:
    return ast.Name(n, ast.Load())


def _set(n: str, value: ast.expr) -> ast.Assign:
    return ast.Assign([ast.Name(n, ast.Store())], value)


def _attr(n: str, *attrs: str) -> ast.expr:
    out: ast.expr = _name(n)
    for a in attrs:
        out = ast.Attribute(out, a, ast.Load())
    return out


def _do(fn: ast.expr, *args: ast.expr) -> ast.Expr:
    return ast.Expr(ast.Call(fn, list(args), []))


def _firing(
    stage: RulesStage, p: _Plan, bit: int, names: dict[str, Any], summaries: dict[str, str]
) -> list[ast.stmt]:
    """What the generated function does when rule ``p`` fires: RulesStage._fire's loop body
    written out for this rule, its constants bound (``names``: the function's globals). Its
    locals come from the prologue (RulesStage._generate): ``r_rules``/``r_trail``/
    ``r_alerts`` (the context's lists' append), ``r_best``/``r_rank`` (the winner so far),
    ``r_agents``/``r_evidence`` (the lists every alert of the message shares) and one per
    alert summary that does not name the rule (rendered once per message)."""
    out: list[ast.stmt] = [_do(_name("r_rules"), ast.Constant(p.stage))]
    if p.static is not None:
        out += _proposes(p.static, str(bit), names)
    else:  # a rate limit: what it proposes depends on the sender's rate (_rate_outcome)
        assert p.rate is not None
        window, most, below, over = p.rate
        names["r_count"] = stage._count
        seen = _attr("r_ctx", "state", "rates", "get")
        under = ast.BoolOp(
            ast.Or(),
            [
                ast.Compare(_name("r_seen"), [ast.Is()], [ast.Constant(None)]),
                ast.Compare(
                    ast.Call(_name("len"), [_name("r_seen")], []), [ast.Lt()], [ast.Constant(most)]
                ),
                ast.Compare(
                    ast.Call(_name("r_count"), [_name("r_ctx"), ast.Constant(window)], []),
                    [ast.Lt()],
                    [ast.Constant(most)],
                ),
            ],
        )
        out += [
            _set("r_seen", ast.Call(seen, [_attr("r_env", "sender")], [])),
            ast.If(
                under,
                _proposes(below, f"{bit}_below", names),
                _proposes(over, f"{bit}_over", names),
            ),
        ]
    if p.alert is not None:
        kind, severity, _, rule = p.alert
        names[f"r_sev{bit}"] = severity
        # the summary as _summary renders it: the text around {rule} does not depend on the
        # rule, so each piece is rendered once per message, for every rule that has it
        assert p.rule.actions.alert is not None
        parts: list[ast.expr] = []
        for i, seg in enumerate(p.rule.actions.alert.summary.split("{rule}")):
            if i:
                parts.append(ast.Constant(rule))
            if len(_pieces(seg)) == 1:
                parts.append(ast.Constant(_pieces(seg)[0][0]))
                continue
            local = summaries.get(seg)
            if local is None:
                local = summaries[seg] = f"r_text{len(summaries)}"
            is_none = ast.Compare(_name(local), [ast.Is()], [ast.Constant(None)])
            out.append(ast.If(is_none, _render_code(seg, local, names), []))
            parts.append(_name(local))
        parts = [x for x in parts if not (isinstance(x, ast.Constant) and x.value == "")]
        text: ast.expr = parts[0] if parts else ast.Constant("")
        for x in parts[1:]:
            text = ast.BinOp(text, ast.Add(), x)
        fields = [
            ast.Constant(kind),
            _name(f"r_sev{bit}"),
            text,
            _attr("r_env", "conversation"),
            _name("r_agents"),  # (the message's alerts share these two lists: see _generate)
            _name("r_evidence"),
            ast.List([ast.Constant(rule)], ast.Load()),
        ]
        out.append(_do(_name("r_alerts"), ast.Call(_name("r_Alert"), fields, [])))
    if p.accuse is not None:
        names[f"r_accuse{bit}"] = functools.partial(stage._accuse, plan=p)
        out.append(_do(_name(f"r_accuse{bit}"), _name("r_ctx"), _name("f")))
    return out


def _proposes(outcome: _Outcome, tag: str, names: dict[str, Any]) -> list[ast.stmt]:
    """RulesStage._fire's record of a fired rule's outcome (its trail entry; the winner so
    far, by rank), written out for one outcome bound as ``r_out<tag>``/``r_win<tag>``."""
    _, entry, rank, win = outcome
    names[f"r_out{tag}"] = entry
    out: list[ast.stmt] = [_do(_name("r_trail"), _name(f"r_out{tag}"))]
    if rank is not None:  # winner(): the highest (priority, severity), the first of equals
        names[f"r_win{tag}"] = win
        better = ast.Compare(ast.Constant(rank), [ast.Gt()], [_name("r_rank")])
        keep: list[ast.stmt] = [
            _set("r_best", _name(f"r_win{tag}")),
            _set("r_rank", ast.Constant(rank)),
        ]
        out.append(ast.If(better, keep, []))
    return out


def _render_code(template: str, local: str, names: dict[str, Any]) -> list[ast.stmt]:
    """``local = _renderer(template, "")(f)`` written out: placeholders read by attribute
    (``{sender}``: ``f.env.sender``) or by their getter, joined by one f-string."""
    out: list[ast.stmt] = []
    values: list[ast.expr] = []
    for i, (text, ref) in enumerate(_pieces(template)):
        if text:
            values.append(ast.Constant(text))
        if not ref or ref == "rule":  # (no {rule} here: the caller split on it)
            continue
        get = _placeholder(ref)
        value = attribute_read(get, _name("f"))
        if value is None:
            names[f"{local}_get{i}"] = get
            value = ast.Call(_name(f"{local}_get{i}"), [_name("f")], [])
        v = f"{local}_v{i}"
        out.append(_set(v, value))
        shown = ast.IfExp(
            ast.Compare(_name(v), [ast.Is()], [ast.Constant(None)]), ast.Constant(""), _name(v)
        )
        values.append(ast.FormattedValue(shown, ord("s"), None))
    joined: ast.expr = ast.Constant("")
    if len(values) == 1 and isinstance(values[0], ast.Constant):
        joined = values[0]
    elif values:
        joined = ast.JoinedStr(values)
    return [*out, _set(local, joined)]


class RulesStage(Stage):
    """Evaluates the rule set on every message; see the module docstring for conflicts."""

    name = "rules"

    def __init__(self, ruleset: RuleSet, *, index: bool = True) -> None:
        # index=False evaluates every rule's closures in full on every message: the
        # reference the generated function and its index are tested against (the same
        # decisions), and a way to rule them out
        self.indexed = index
        self.swap(ruleset)

    def swap(self, ruleset: RuleSet) -> None:
        """Replace the rule set (hot reload). Called between messages, so each message sees
        one set; rate-limit memory is kept (it is keyed by sender, not by rule)."""
        self.ruleset = ruleset
        self.rules = ruleset.enabled
        self.rate_rules = [r for r in self.rules if r.actions.rate_limit is not None]
        self.window = max(
            (r.actions.rate_limit.window_s for r in self.rate_rules if r.actions.rate_limit),
            default=0.0,
        )
        self.depth = 1 + max(
            (r.actions.rate_limit.max for r in self.rate_rules if r.actions.rate_limit), default=0
        )
        plan = [_Plan.of(r) for r in self.rules]
        generated = self.indexed and ruleset.compiler is not None
        self._plan, self._index = plan, (_Index.build(plan) if generated else None)
        self._program: Callable[..., _Win | None] | None = None
        self._program_fields: tuple[str, ...] = ()
        if generated:
            self._generate()

    def _generate(self) -> None:
        """The rule set as one generated function (ostracon.codegen) taking the index's
        mask: the mask decides the conjuncts and exceptions that read only key fields."""
        compiler = self.ruleset.compiler
        assert compiler is not None
        index = self._index
        names: dict[str, Any] = {"r_Alert": Alert}
        summaries: dict[str, str] = {}  # template -> the local holding it for the message
        entries = []
        for bit, p in enumerate(self._plan):
            known = index is not None and index.known(bit)
            exempt = p.rule.exempt if p.rule.exceptions and not known else None
            then = _firing(self, p, bit, names, summaries)
            slot = bit if index is not None and index.decides(bit) else None
            entries.append(Entry(p.rule.condition, p, exempt, slot, then))
        keyed = frozenset(index.fields) if index is not None else frozenset()
        ctx = ast.Attribute(_name("f"), "ctx", ast.Load())
        # first of all (before any field is read): what the context holds before this stage
        # adds to it, for _recover
        preamble: list[ast.stmt] = [
            _set("r_ctx", ctx),
            _set(
                "r_marks",
                ast.Tuple(
                    [
                        ast.Call(_name("len"), [_attr("r_ctx", a)], [])
                        for a in ("rules", "trail", "alerts", "accusations")
                    ],
                    ast.Load(),
                ),
            ),
        ]
        prologue: list[ast.stmt] = [
            _set("r_env", ast.Attribute(_name("f"), "env", ast.Load())),
            *(_set(f"r_{a}", _attr("r_ctx", a, "append")) for a in ("rules", "trail", "alerts")),
            _set("r_best", ast.Constant(None)),
            _set("r_rank", ast.Constant(float("-inf"))),
            *(_set(local, ast.Constant(None)) for local in summaries.values()),
        ]
        if any(p.alert is not None for p in self._plan):
            # [sender] and [id], once a message for all its alerts (nothing changes an
            # alert's lists in place: alerts are frozen, and stamping them copies the struct)
            prologue += [
                _set("r_agents", ast.List([_attr("r_env", "sender")], ast.Load())),
                _set("r_evidence", ast.List([_attr("r_env", "id")], ast.Load())),
            ]
        names["r_recover"] = self._recover
        recover = ast.Call(_name("r_recover"), [_name("f"), _name("r_marks")], [])
        reads: list[tuple[str, Callable[[Any], Any]]] = []
        if index is not None:  # the key's mask, found here rather than by a call per message
            reads, key = index.key_code()
            names.update(r_ix=index, r_cache_get=index._cache.get, r_fill=index._fill)
            miss = [
                _set("mask", ast.Call(_name("r_fill"), [_name("r_key"), _name("f")], [])),
                ast.If(
                    ast.Compare(_name("mask"), [ast.Is()], [ast.Constant(None)]),
                    [ast.Return(recover)],  # a key the index cannot use: the closures
                    [],
                ),
            ]
            prologue += [
                _set("r_key", key),
                ast.AugAssign(
                    ast.Attribute(_name("r_ix"), "_lookups", ast.Store()),
                    ast.Add(),
                    ast.Constant(1),
                ),
                _set("mask", ast.Call(_name("r_cache_get"), [_name("r_key")], [])),
                ast.If(ast.Compare(_name("mask"), [ast.Is()], [ast.Constant(None)]), miss, []),
            ]
        try:
            self._program = program(
                compiler,
                entries,
                keyed,
                prologue=prologue,
                result=_name("r_best"),
                fallback=recover,
                names=names,
                reads=reads,
                mask_param=False,
                preamble=preamble,
            )
        except RecursionError:  # a condition too long to compile as code: the closures
            self._program, self._index = None, None
        self._program_fields = index.fields if index is not None else ()

    def _recover(self, facts: Facts, marks: tuple[int, int, int, int]) -> _Win | None:
        """The generated function raised (a value its getter does not promise): undo what it
        recorded and decide with the closures, which say false there."""
        ctx = facts.ctx
        del ctx.rules[marks[0] :], ctx.trail[marks[1] :]
        del ctx.alerts[marks[2] :], ctx.accusations[marks[3] :]
        return self._closures(ctx, facts)

    def _closures(self, ctx: Context, facts: Facts) -> _Win | None:
        """Every rule's closures in full: one call per rule that does not fire, nothing
        allocated for it; exempt() only for a true condition."""
        fired = [
            p
            for p in self._plan
            if p.fn(facts) and (not p.exceptions or p.rule.exempt(facts) is None)
        ]
        return self._fire(ctx, facts, fired) if fired else None

    def _rate_outcome(self, ctx: Context, p: _Plan) -> _Outcome:
        """What a rule with a rate limit proposes for this message."""
        assert p.rate is not None
        window, most, below, over = p.rate
        # (fewer messages in the window than the limit: no need to count them)
        seen = ctx.state.rates.get(ctx.envelope.sender)
        if seen is None or len(seen) < most:
            return below
        return over if self._count(ctx, window) >= most else below

    def facts(self, ctx: Context) -> Facts:
        """What the rules see of this message (the rate window is counted only when used)."""
        if not self.rate_rules:
            return Facts(ctx)
        return Facts(ctx, 0, None, self)

    def candidates(self, facts: Facts) -> list[Rule]:
        """The rules whose conditions are evaluated beyond the key for this message (see
        :class:`_Index`): the others cannot fire on it."""
        mask = self._index.mask(facts) if self._index is not None else None
        return [p.rule for i, p in enumerate(self._plan) if mask is None or mask[i]]

    def run(self, ctx: Context) -> None:
        facts = Facts(ctx, 0, None, self) if self.rate_rules else Facts(ctx)  # (= self.facts)
        program, index = self._program, self._index
        if program is not None and index is not None and index.fields is not self._program_fields:
            self._generate()  # the index dropped a key field: regenerate for the new key
            program = self._program
        if program is None:
            best = self._closures(ctx, facts)
        else:
            # the generated function finds the key's mask, evaluates, records what fires
            # (see _firing) and gives the winner
            best = program(facts)
        if best is not None:
            self._apply(ctx, facts, best)

    def _fire(self, ctx: Context, facts: Facts, fired: list[_Plan]) -> _Win | None:
        """Record the rules that fired (in order) and their alerts and accusations; the
        winning proposal. (The generated function does the same inline: _firing.)"""
        rules, trail, add_alert = ctx.rules, ctx.trail, ctx.alerts.append
        best: _Win | None = None
        best_rank: int | None = None
        for p in fired:
            static = p.static if p.static is not None else self._rate_outcome(ctx, p)
            _, outcome, rank, win = static
            rules.append(p.stage)
            trail.append(outcome)
            # winner(): the highest (priority, severity), the first of equals
            if rank is not None and (best_rank is None or rank > best_rank):
                best, best_rank = win, rank
            if p.effects:  # an alert (positional: the fields in Alert's order) or accusation
                alert = p.alert
                if alert is not None:
                    env = ctx.envelope
                    kind, severity, summary, name = alert
                    add_alert(
                        Alert(
                            kind,
                            severity,
                            summary(facts),
                            env.conversation,
                            [env.sender],
                            [env.id],
                            [name],
                        )
                    )
                if p.accuse is not None:
                    self._accuse(ctx, facts, p)
        return best

    def _apply(self, ctx: Context, facts: Facts, win: _Win) -> None:
        """The winning proposal's effects on the message."""
        line, verdict, tags, feedback, quorum = win
        ctx.reasons.append(line)
        if _SEVERITY[verdict] > _SEVERITY[ctx.verdict]:
            ctx.verdict = verdict
        if tags is not None:
            ctx.tags.update(tags)
        if feedback is not None:
            ctx.feedback = feedback(facts)
        if quorum is not None:
            ctx.tags["quorum"] = quorum[0]
            ctx.notes["quorum"] = quorum[1]  # the gate's parameters, for ostracon.quorum

    def propose(self, ctx: Context, rule: Rule) -> Proposal:
        """What a fired rule proposes: its verdict (escalated by its rate limit) and reason."""
        verdict, reason = rule.verdict, rule.reason
        limit = rule.actions.rate_limit
        if limit is not None and self._count(ctx, limit.window_s) >= limit.max:
            lv = Verdict(limit.then)
            if verdict is None or lv.severity > verdict.severity:
                verdict, reason = lv, f"rate limit: over {limit.max} in {limit.window_s:g}s"
        return rule, verdict, reason or (rule.description or f"rule {rule.name}")

    @staticmethod
    def winner(proposals: Iterable[Proposal]) -> Proposal | None:
        """The proposal that decides: the highest priority, then the more severe verdict,
        then the first in evaluation order (by name). Rules proposing no verdict never win."""
        best: Proposal | None = None
        rank: tuple[int, int] | None = None
        for proposal in proposals:
            rule, verdict, _ = proposal
            if verdict is not None and (rank is None or (rule.priority, verdict.severity) > rank):
                best, rank = proposal, (rule.priority, verdict.severity)
        return best

    def _count(self, ctx: Context, window: float) -> int:
        """The sender's earlier messages less than ``window`` seconds (message time) ago."""
        seen = ctx.state.rates.get(ctx.envelope.sender)
        if not seen:
            return 0
        now = ctx.envelope.ts or 0.0
        # seen is sorted (observe keeps it so), and now - t does not grow with t: those with
        # now - t < window are a suffix, found by bisection on that very comparison
        lo, hi = 0, len(seen)
        while lo < hi:
            mid = (lo + hi) // 2
            if now - seen[mid] < window:
                hi = mid
            else:
                lo = mid + 1
        return len(seen) - lo

    def _accuse(self, ctx: Context, facts: Facts, plan: _Plan) -> None:
        env = ctx.envelope
        assert plan.accuse is not None
        ctx.accusations.append(
            Accusation(
                accuser=plan.stage,
                accused=env.sender,
                reason=plan.accuse(facts) or plan.rule.description,
                evidence=[env.id],
            )
        )

    def observe(self, ctx: Context, decision: Decision) -> None:
        if not self.rate_rules:
            return
        env = ctx.envelope
        seen = ctx.state.rates.get(env.sender)
        if seen is None or (seen.maxlen or 0) < self.depth:
            # Bounded even for messages without ts (which all count as "now"); regrown when a
            # reloaded rule set raises a limit, or the count could never reach it.
            seen = ctx.state.rates[env.sender] = deque(seen or (), maxlen=self.depth)
        now = env.ts or 0.0
        if not seen or now >= seen[-1]:
            seen.append(now)
        else:  # an earlier time than the latest: kept sorted for _count's bisection
            if len(seen) == seen.maxlen:
                seen.popleft()  # (the earliest time goes, as append would drop it)
            bisect.insort(seen, now)
        while seen and now - seen[0] >= self.window:
            seen.popleft()


# --------------------------------------------------------------------------------------------
# Explanation (``ostracon rules explain``)


@dataclass
class RuleTrace:
    """How one rule saw one message."""

    rule: Rule
    value: bool  # the condition's value
    operands: list[tuple[str, object]]  # Condition.explain: each top-level operand, then all
    values: dict[str, object]  # Condition.values: the fields it read
    exempted_by: str | None  # the exception whose values matched, if any
    fired: bool  # enabled, reached, condition true and not exempt
    verdict: Verdict | None = None  # what it proposed, when it fired
    reason: str = ""
    winner: bool = False  # its proposal decided the rules' verdict


@dataclass
class Explanation:
    decision: Decision  # what the core decides (its state is not advanced)
    before: Verdict  # the verdict of the stages before the rules
    stopped_by: str | None  # a stage that stopped the chain before the rules (none ran)
    rate: int  # the sender's messages in the rate window (sender.rate)
    rules: list[RuleTrace]  # every rule, disabled ones too, in evaluation order


def explain(core: Core, env: Envelope) -> Explanation:
    """Explain how ``core``'s rules treat ``env`` without advancing the core's state: run the
    stages before the rules stage (pure, like ``decide``), then evaluate every rule on the
    facts they leave, with the rules stage's own proposal and conflict logic."""
    at = next((i for i, s in enumerate(core.stages) if isinstance(s, RulesStage)), None)
    if at is None:
        raise ValueError("no rules stage: rules.paths is empty")
    stage = core.stages[at]
    assert isinstance(stage, RulesStage)
    ctx = Context(env, core.state)
    stopped_by = None
    for s in core.stages[:at]:
        s.run(ctx)
        if ctx.stopped:
            stopped_by = s.name
            break
    before = ctx.verdict
    facts = stage.facts(ctx)
    traces = []
    for rule in stage.ruleset.rules:
        value = bool(rule.condition.fn(facts))
        exempted_by = rule.exempt(facts)
        fired = rule.enabled and stopped_by is None and value and exempted_by is None
        traces.append(
            RuleTrace(
                rule,
                value,
                rule.condition.explain(facts),
                rule.condition.values(facts),
                exempted_by,
                fired,
            )
        )
    proposals = {}
    for t in traces:
        if t.fired:
            proposal = stage.propose(ctx, t.rule)
            _, t.verdict, t.reason = proposal
            proposals[t.rule.name] = proposal
    chosen = stage.winner(proposals.values())
    for t in traces:
        t.winner = chosen is not None and t.rule.name == chosen[0].name
    decision = decide(env, core.state, core.stages)
    return Explanation(decision, before, stopped_by, facts.rate, traces)
