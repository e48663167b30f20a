"""Rule tests and explanations: ``ostracon rules test`` and ``ostracon rules explain``.

``rules test PATH...`` runs YAML test files (a file, or a directory: its ``*.yaml``,
recursively), like ``opa test``. A test file::

    rules: [../balanced.yaml]          # rule files/dirs, relative to this test file, in order
    config:                            # optional: ostracon.yaml overrides (not rules.paths)
      containment: {policy: low-intervention}
    cases:
      - name: a hub's unverified claim is held
        history:                       # optional: messages decided (and observed) first
          - {id: m-1, sender: finance-tool, kind: tool_result,
             claims: [{key: q3 revenue, value: 8.1M USD}]}
        message: {id: m-2, sender: lead, meta: {role: summarizer},
                  claims: [{key: office count, value: 7}]}
        expect:                        # at least one of:
          verdict: hold                # the final verdict
          rules: [hold-unverified-from-hubs]   # rules that fired (no "rule:" prefix)
          not_rules: [tag-unverified]  # rules that did not fire
          alerts: [contained-claim]    # alert kinds present
          tags: {unverified: "true"}   # tags present with these values
          feedback_contains: "..."     # a substring of the sender feedback

Messages are envelopes (every field of :class:`ostracon.envelope.Envelope`) whose
``conversation`` defaults to ``"test"``, ``kind`` to ``"chat"`` and ``content`` to ``""``.
Each case runs on a fresh core (``build_core`` with the file's config and rules), so cases
never share state. Rule names in ``rules``/``not_rules`` must exist in the loaded rules (a
typo would otherwise pass ``not_rules`` silently).

Output is one ``PASS file:line name`` or ``FAIL file:line name: what differed (fired: ...)``
line per case, then ``N passed, M failed``. Exit 0 when all pass, 1 when a case fails, 2 when
a test or rule file is unusable (``file:line: field: problem``; the other files still run).

``rules explain`` uses :func:`ostracon.rules.explain` and prints it with rich tables; the
envelope loaders here serve both commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .config import (
    _FIELD_RE,
    _PATH_RE,
    Config,
    ConfigError,
    RulesConfig,
    _locate,
    _split_path,
    decode_yaml,
)
from .decision import ClaimReport, Decision, Verdict
from .envelope import Envelope
from .pipeline import build_core
from .rules import Explanation, load_rules

# Envelope fields a test message may leave out.
DEFAULTS: dict[str, Any] = {"conversation": "test", "kind": "chat", "content": ""}


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Expect(_Strict, frozen=True):
    verdict: Verdict | None = None
    rules: list[str] = []
    not_rules: list[str] = []
    alerts: list[str] = []
    tags: dict[str, str] = {}
    feedback_contains: str | None = None


class CaseSpec(_Strict, frozen=True):
    name: str
    message: dict[str, Any]
    expect: Expect
    history: list[dict[str, Any]] = []


class SuiteSpec(_Strict, frozen=True):
    rules: list[str]
    cases: list[CaseSpec]
    config: Config = Config()


@dataclass
class Case:
    name: str
    line: int
    history: list[Envelope]
    message: Envelope
    expect: Expect


@dataclass
class Suite:
    file: str
    config: Config  # rules.paths set to the test file's rules, resolved
    cases: list[Case]


@dataclass
class Result:
    file: str
    line: int
    name: str
    problems: list[str]  # empty: passed
    decision: Decision

    @property
    def passed(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.passed:
            return f"PASS {self.file}:{self.line} {self.name}"
        problems = "; ".join(self.problems)
        fired = ", ".join(self.decision.rules) or "nothing"
        return f"FAIL {self.file}:{self.line} {self.name}: {problems} (fired: {fired})"


# --------------------------------------------------------------------------------------------
# Envelopes


def to_envelope(data: dict[str, Any], file: str, root: yaml.Node, at: list[str | int]) -> Envelope:
    """``data`` (with :data:`DEFAULTS`) as an envelope; errors name the line and the field."""
    try:
        return msgspec.convert({**DEFAULTS, **data}, Envelope)
    except msgspec.ValidationError as exc:
        message = str(exc)
        m = _PATH_RE.search(message)
        parts: list[str | int] = [*at, *(_split_path(m.group("path")) if m else [])]
        problem = message[: m.start()] if m else message
        f = _FIELD_RE.search(problem)
        if f:
            parts.append(f.group("field"))
        field = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in parts)
        raise ConfigError(file, _locate(root, parts), field.replace(".[", "["), problem) from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, "", f"cannot read: {exc}") from None


def load_envelope(path: Path) -> Envelope:
    """One envelope from a JSON or YAML file."""
    file = str(path)
    decoded = decode_yaml(_read(path), file, dict[str, Any])
    if decoded is None:
        raise ConfigError(file, None, "", "empty: expected one envelope")
    return to_envelope(decoded[0], file, decoded[1], [])


def load_history(path: Path) -> list[Envelope]:
    """Envelopes from JSONL (one per line) or a YAML/JSON list."""
    file, text = str(path), _read(path)
    if path.suffix == ".jsonl" or text.lstrip().startswith("{"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(file, n, "", f"invalid JSON: {exc.msg}") from None
            if not isinstance(data, dict):
                raise ConfigError(file, n, "", "expected one JSON object (an envelope) a line")
            root = yaml.compose("{}")  # positions: the line itself
            try:
                out.append(to_envelope(data, file, root, []))
            except ConfigError as exc:
                raise ConfigError(file, n, exc.field, exc.problem) from None
        return out
    decoded = decode_yaml(text, file, list[dict[str, Any]])
    if decoded is None:
        return []
    items, root = decoded
    return [to_envelope(item, file, root, [i]) for i, item in enumerate(items)]


# --------------------------------------------------------------------------------------------
# Loading test files


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Test files: the files given, and the ``*.yaml``/``*.yml`` under directories (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError(str(p), None, "", "no such file or directory")
    return out


def load_suite(path: Path) -> Suite:
    """Parse and check a test file: envelopes, rule paths, rule names (positioned errors)."""
    file = str(path)
    decoded = decode_yaml(_read(path), file, SuiteSpec)
    if decoded is None:
        raise ConfigError(file, None, "", "empty test file: expected rules and cases")
    spec, root = decoded
    if spec.config.rules.paths:
        raise ConfigError(
            file,
            _locate(root, ["config", "rules"]),
            "config.rules",
            "give rule files in the top-level rules: list, not config.rules.paths",
        )
    if not spec.rules:
        raise ConfigError(file, _locate(root, ["rules"]), "rules", "no rule files")
    rule_paths = []
    for i, rel in enumerate(spec.rules):
        p = Path(os.path.normpath(path.parent / rel))
        if not p.exists():
            raise ConfigError(file, _locate(root, ["rules", i]), f"rules[{i}]", f"no such file {p}")
        rule_paths.append(str(p))
    names = {r.name for r in load_rules(rule_paths).rules}  # rule file errors surface here
    if not spec.cases:
        raise ConfigError(file, _locate(root, ["cases"]), "cases", "no cases")
    cases = []
    for i, c in enumerate(spec.cases):
        where: list[str | int] = ["cases", i]
        e = c.expect
        if e == Expect():
            raise ConfigError(
                file,
                _locate(root, [*where, "expect"]),
                f"cases[{i}].expect",
                "expects nothing: give verdict, rules, not_rules, alerts, tags or "
                "feedback_contains",
            )
        for key in ("rules", "not_rules"):
            for j, name in enumerate(getattr(e, key)):
                if name not in names:
                    raise ConfigError(
                        file,
                        _locate(root, [*where, "expect", key, j]),
                        f"cases[{i}].expect.{key}[{j}]",
                        f"unknown rule {name!r}; the rules are: {', '.join(sorted(names))}",
                    )
        history = [
            to_envelope(h, file, root, [*where, "history", n]) for n, h in enumerate(c.history)
        ]
        message = to_envelope(c.message, file, root, [*where, "message"])
        cases.append(Case(c.name, _locate(root, where), history, message, e))
    config = msgspec.structs.replace(spec.config, rules=RulesConfig(paths=rule_paths))
    return Suite(file, config, cases)


# --------------------------------------------------------------------------------------------
# Running


def check(expect: Expect, decision: Decision) -> list[str]:
    """What differs between the expectation and the decision (empty: it passes)."""
    problems = []
    if expect.verdict is not None and decision.verdict is not expect.verdict:
        problems.append(f"expected verdict {expect.verdict}, got {decision.verdict}")
    fired = set(decision.rules)
    problems += [f"expected rule {n} to fire" for n in expect.rules if f"rule:{n}" not in fired]
    problems += [f"expected rule {n} not to fire" for n in expect.not_rules if f"rule:{n}" in fired]
    kinds = [a.kind for a in decision.alerts]
    for kind in expect.alerts:
        if kind not in kinds:
            problems.append(f"expected alert {kind} (alerts: {', '.join(kinds) or 'none'})")
    for key, value in expect.tags.items():
        got = decision.tags.get(key)
        if got != value:
            has = "missing" if got is None else f"got {key}={got}"
            problems.append(f"expected tag {key}={value}, {has}")
    if expect.feedback_contains is not None and expect.feedback_contains not in decision.feedback:
        problems.append(
            f"expected feedback containing {expect.feedback_contains!r}, got {decision.feedback!r}"
        )
    return problems


def run_suite(suite: Suite) -> list[Result]:
    """Every case on a fresh core: history decided and observed, then the message decided."""
    results = []
    for case in suite.cases:
        core = build_core(suite.config)
        for env in case.history:
            core.decide(env)
        decision = core.decide(case.message)
        problems = check(case.expect, decision)
        results.append(Result(suite.file, case.line, case.name, problems, decision))
    return results


def main(
    paths: Sequence[str | Path], out: Callable[[str], None], err: Callable[[str], None]
) -> int:
    """``rules test``: print a line per case and a summary; 0 all pass, 1 failures, 2 errors."""
    try:
        files = discover(paths)
    except ConfigError as exc:
        err(str(exc))
        return 2
    if not files:
        err(f"no test files (*.yaml) under {', '.join(map(str, paths))}")
        return 2
    passed = failed = errors = 0
    for path in files:
        try:
            suite = load_suite(path)
        except ConfigError as exc:  # RuleError too: a broken rule file named by the test file
            err(str(exc))
            errors += 1
            continue
        for result in run_suite(suite):
            out(str(result))
            passed += result.passed
            failed += not result.passed
    summary = f"{passed} passed, {failed} failed"
    out(summary + (f", {errors} unusable file(s)" if errors else ""))
    return 2 if errors else 1 if failed else 0


# --------------------------------------------------------------------------------------------
# Explain output


def _show(value: object, limit: int = 80) -> str:
    """A value as JSON-like text (true, null, "text"), shortened to ``limit`` characters;
    claims as ``key = value (label, risk r)``, the parts rules read most."""
    if isinstance(value, list) and value and all(isinstance(v, ClaimReport) for v in value):
        text = "; ".join(f"{c.key} = {c.value} ({c.label}, risk {c.risk:g})" for c in value)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_explanation(ex: Explanation, console: Console) -> None:
    """The final verdict, a table of every rule in evaluation order, then each rule's
    operands and the field values it read. The winning rule is marked with ★."""
    d = ex.decision
    console.print(
        f"message [bold]{escape(d.message_id)}[/bold] from {escape(d.sender)}: "
        f"verdict [bold]{d.verdict}[/bold] (before the rules: {ex.before}; "
        f"sender.rate {ex.rate})",
        highlight=False,
    )
    if d.reasons:
        console.print(Text("reasons: " + "; ".join(d.reasons)), highlight=False)
    if ex.stopped_by:
        console.print(f"stage {ex.stopped_by} stopped the chain: no rule ran", highlight=False)
    table = Table(
        title="rules in evaluation order (★ decides)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("", min_width=1, no_wrap=True)
    table.add_column("rule", no_wrap=True)
    for col in ("prio", "on", "value", "exempt", "fired"):
        table.add_column(col, no_wrap=True)
    for t in ex.rules:
        r = t.rule
        fired = str(t.verdict or "actions only") if t.fired else "no"
        table.add_row(
            "★" if t.winner else "",
            Text(r.name),
            str(r.priority),
            "yes" if r.enabled else "no",
            Text(_show(t.value)),
            Text(t.exempted_by or "-"),
            Text(fired),
        )
    console.print(table)
    for t in ex.rules:
        if t.fired:
            outcome = f"fired: proposes {t.verdict or 'no verdict (actions only)'}: {t.reason}"
        elif not t.rule.enabled:
            outcome = "not fired: disabled"
        elif ex.stopped_by:
            outcome = f"not fired: stage {ex.stopped_by} stopped the chain"
        elif t.value:
            outcome = f"not fired: exempt by exception {t.exempted_by}"
        else:
            outcome = "not fired: condition false"
        detail = Table(
            title=f"{'★ ' if t.winner else ''}{escape(t.rule.name)} ({escape(t.rule.where)})",
            title_justify="left",
        )
        detail.add_column("operand / field")
        detail.add_column("value")
        for src, value in t.operands:
            detail.add_row(Text(src), Text(_show(value)))
        if t.values:
            detail.add_section()
            for name, value in sorted(t.values.items()):
                detail.add_row(Text(name), Text(_show(value)))
        console.print(detail)
        console.print(Text(outcome))
