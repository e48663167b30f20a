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
"""

from __future__ import annotations

import operator
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from . import __version__
from .conditions import Compiler, Condition, ConditionError, Field, Schema, Type
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
        "_components",
        "_count",
        "_depth",
        "_disputed",
        "_labels",
        "_rate",
        "_reputation",
        "_sources",
        "ctx",
        "env",
    )

    def __init__(self, ctx: Context, rate: int = 0, count: Callable[[], int] | None = None) -> None:
        self.ctx = ctx
        self.env = ctx.envelope
        # The sender's messages in the recent window: ``rate``, or ``count()`` on first read
        # (counting scans the sender's window; most rule sets never read it).
        self._rate = rate if count is None else _UNSET
        self._count = count
        self._labels = self._depth = self._sources = _UNSET
        self._reputation = self._disputed = _UNSET
        self._components: dict[str, float] | None = None

    @property
    def rate(self) -> int:
        v = self._rate
        if v is _UNSET:
            assert self._count is not None
            v = self._rate = self._count()
        return v  # type: ignore[no-any-return]


def _record(ctx: Context) -> list[int] | None:
    return ctx.state.records.get(ctx.envelope.sender)


def _reputation(f: Facts) -> float:
    v = f._reputation
    if v is _UNSET:
        rec = _record(f.ctx)
        v = f._reputation = round(1.0 - rec[1] / (rec[0] + 1), 3) if rec else 1.0
    return v  # type: ignore[no-any-return]


def _lineage_depth(f: Facts) -> int:
    v = f._depth
    if v is _UNSET:
        v = f._depth = max((c.depth for c in f.ctx.claims), default=0)
    return v  # type: ignore[no-any-return]


def _sources(f: Facts) -> int | None:
    v = f._sources
    if v is _UNSET:
        claims = f.ctx.claims
        v = f._sources = min(c.support for c in claims) if claims else None
    return v  # type: ignore[no-any-return]


def _labels(f: Facts) -> list[str]:
    v = f._labels
    if v is _UNSET:
        v = f._labels = sorted({c.label.value for c in f.ctx.claims})
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
            v = memo[name] = max((c.components.get(name, 0.0) for c in f.ctx.claims), default=0.0)
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
    "id": Field(Type.STR, lambda f: f.env.id, "message id"),
    "sender": Field(Type.STR, lambda f: f.env.sender, "sending agent"),
    "kind": Field(Type.STR, lambda f: f.env.kind, "chat, tool_call, tool_result, ..."),
    "conversation": Field(Type.STR, lambda f: f.env.conversation, "conversation id"),
    "content": Field(Type.STR, lambda f: f.env.content, "message text"),
    "recipients": Field(Type.LIST, lambda f: f.env.recipients, "addressed agents"),
    "parents": Field(Type.LIST, lambda f: f.env.parents, "message ids it answers"),
    "meta.*": Field(Type.ANY, lambda f: f.env.meta, "the envelope's meta object"),
    "claims": Field(Type.RECORDS, lambda f: f.ctx.claims, "the message's claims", _CLAIM),
    "labels": Field(Type.LIST, _labels, "distinct labels of its claims"),
    "disputed": Field(Type.LIST, _disputed, "its claim keys other agents hold otherwise"),
    "risk.score": Field(Type.NUM, lambda f: f.ctx.risk, "riskiest claim's score"),
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
    "sender.role": Field(
        Type.ANY, lambda f: f.env.meta.get("role") if f.env.meta else None, "meta.role"
    ),
    "sender.model_family": Field(
        Type.ANY,
        lambda f: f.env.meta.get("model_family") if f.env.meta else None,
        "meta.model_family",
    ),
    "sender.hub": Field(Type.BOOL, lambda f: bool(f.ctx.notes.get("hub")), "observed or role hub"),
    "sender.reputation": Field(Type.NUM, _reputation, "1 - share of its claims found Red"),
    "sender.blocklisted": Field(
        Type.BOOL, lambda f: f.env.sender in f.ctx.state.blocklist, "on the blocklist"
    ),
    "sender.rate": Field(Type.NUM, lambda f: f.rate, "its messages in the rate window"),
    "verdict": Field(Type.STR, lambda f: f.ctx.verdict, "verdict of the stages before rules"),
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

    def exempt(self, facts: Facts) -> str | None:
        """The name of the exception that exempts this match, if any."""
        for name, getters, values in self.exceptions:
            if tuple(g(facts) for g in getters) in values:
                return name
        return None


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)  # by priority, highest first, then name
    macros: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

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
    return RuleSet(compiled, {k: v[0] for k, v in macros.items()}, lists, [str(f) for f in files])


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


def _fill(ref: str, facts: Facts, rule: str) -> str:
    if ref == "rule":
        return rule
    if ref == "claims":
        return ", ".join(
            f"{c.key} = {c.value}" for c in facts.ctx.claims if c.label is not Label.GREEN
        )
    if ref.startswith("meta."):
        value = facts.env.meta.get(ref[5:]) if facts.env.meta else None
    else:
        value = SCHEMA[ref].get(facts)
    return "" if value is None else str(value)


# What a fired rule proposes: the rule, its verdict (None: actions only) and the reason.
Proposal = tuple[Rule, Verdict | None, str]


class _Plan:
    """What ``RulesStage.run`` needs of one rule, computed once per rule set."""

    __slots__ = ("effects", "exceptions", "fn", "rule", "stage", "static")

    rule: Rule
    fn: Callable[[Any], Any]  # rule.condition.fn
    exceptions: bool  # exempt() has something to check
    stage: str  # "rule:<name>"
    effects: bool  # an alert or accusation: what _side_effects() does
    static: tuple[Proposal, StageOutcome] | None  # None: a rate limit decides per message

    @classmethod
    def of(cls, rule: Rule) -> _Plan:
        p = cls()
        p.rule, p.fn, p.exceptions = rule, rule.condition.fn, bool(rule.exceptions)
        p.stage = f"rule:{rule.name}"
        p.effects = rule.actions.alert is not None or rule.actions.accuse is not None
        # Without a rate limit a rule always proposes the same (as RulesStage.propose would);
        # its trail entry is a frozen struct that every decision can share.
        p.static = None
        if rule.actions.rate_limit is None:
            reason = rule.reason or rule.description or f"rule {rule.name}"
            outcome = StageOutcome(p.stage, rule.verdict or Verdict.DELIVER, reason)
            p.static = (rule, rule.verdict, reason), outcome
        return p


class RulesStage(Stage):
    """Evaluates the rule set on every message; see the module docstring for conflicts."""

    name = "rules"

    def __init__(self, ruleset: RuleSet) -> None:
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
        self._plan = [_Plan.of(r) for r in self.rules]

    def facts(self, ctx: Context) -> Facts:
        """What the rules see of this message (the rate window is counted only when used)."""
        if not self.rate_rules:
            return Facts(ctx)
        return Facts(ctx, count=partial(self._count, ctx, self.window))

    def run(self, ctx: Context) -> None:
        facts = self.facts(ctx)
        # Hot loop: one call per rule that does not fire, nothing allocated for it;
        # exempt() only for a true condition of a rule with exceptions.
        fired = [
            p
            for p in self._plan
            if p.fn(facts) and (not p.exceptions or p.rule.exempt(facts) is None)
        ]
        if not fired:
            return
        proposals = []
        for p in fired:
            if p.static is None:  # a rate limit: the verdict depends on the sender's rate
                proposal = self.propose(ctx, p.rule)
                outcome = StageOutcome(p.stage, proposal[1] or Verdict.DELIVER, proposal[2])
            else:
                proposal, outcome = p.static
            proposals.append(proposal)
            ctx.rules.append(p.stage)
            ctx.trail.append(outcome)
            if p.effects:
                self._side_effects(ctx, facts, p.rule)
        chosen = self.winner(proposals)
        if chosen is not None:
            rule, verdict, reason = chosen
            assert verdict is not None  # winner() only picks proposals with a verdict
            ctx.reasons.append(f"rule {rule.name}: {reason}")
            if verdict.severity > ctx.verdict.severity:
                ctx.verdict = verdict
            if verdict is Verdict.DELIVER_TAGGED or rule.actions.tag:
                ctx.tags.update(rule.actions.tag)
            if verdict is Verdict.BLOCK and rule.actions.block and rule.actions.block.feedback:
                ctx.feedback = render(rule.actions.block.feedback, facts, rule.name)
            gate = rule.actions.hold
            if verdict is Verdict.HOLD and gate and (gate.validators or gate.quorum > 1):
                # a quorum gate: validators (and the byzantine layer) read it from the headers
                ctx.tags["quorum"] = f"{gate.quorum}/{','.join(gate.validators) or '*'}"

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
        return sum(1 for t in seen if now - t < window)

    def _side_effects(self, ctx: Context, facts: Facts, rule: Rule) -> None:
        env = ctx.envelope
        a = rule.actions
        if a.alert is not None:
            ctx.alert(
                Alert(
                    kind=a.alert.kind,
                    severity=a.alert.severity,
                    summary=render(a.alert.summary, facts, rule.name),
                    conversation=env.conversation,
                    agents=[env.sender],
                    evidence=[env.id],
                    rules=[rule.name],
                )
            )
        if a.accuse is not None:
            ctx.accusations.append(
                Accusation(
                    accuser=f"rule:{rule.name}",
                    accused=env.sender,
                    reason=render(a.accuse.reason, facts, rule.name) or rule.description,
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
        seen.append(now)
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
