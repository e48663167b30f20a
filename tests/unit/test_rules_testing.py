"""`ostracon rules test` and `ostracon rules explain`: the runner on passing, failing and
malformed test files, the explanation of one message, and every shipped pack's own cases
(this is how CI proves the packs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ostracon.cli import app
from ostracon.config import BlocklistConfig, Config, ContainmentConfig, RulesConfig
from ostracon.decision import Verdict
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.pipeline import build_core
from ostracon.rules import explain

PACKS = Path(__file__).resolve().parents[2] / "rules"
SHIPPED = ("default", "low-intervention", "balanced", "strict", "testing-consensus")
runner = CliRunner()

RULES = """
- list: trusted
  items: [lead]
- rule: hold-rumours
  description: Rumours wait for a quorum.
  condition: claims.any(c, c.key == "competitor funding") and not (sender.role == "auditor")
  actions:
    hold: {reason: rumour, quorum: 2}
    alert: {kind: rumour, summary: "{sender} spreads {claims}"}
  priority: 20
  exceptions:
    - name: trusted-lead
      fields: [sender]
      values: [[lead]]
- rule: tag-chat
  description: Chat is tagged.
  condition: kind == "chat"
  actions: {tag: {chat: "yes"}}
- rule: block-eve
  description: Eve is blocked.
  condition: sender == "eve"
  actions: {block: {reason: eve, feedback: "{sender}: no"}}
  priority: 50
- rule: never
  description: Never runs.
  condition: "true"
  actions: {quarantine: {}}
  enabled: false
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rules_test(*paths: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["rules", "test", *map(str, paths)])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return write(tmp_path / "r.yaml", RULES)


# --------------------------------------------------------------------------------------------
# The shipped packs


def test_every_shipped_pack_has_cases_and_they_all_pass() -> None:
    for pack in SHIPPED:
        assert (PACKS / "tests" / f"{pack}.yaml").is_file(), pack
    code, out = rules_test(PACKS / "tests")
    lines = out.strip().splitlines()
    assert code == 0, out
    assert not [line for line in lines if line.startswith("FAIL")]
    passed = [line for line in lines if line.startswith("PASS")]
    for pack in SHIPPED:  # several meaningful cases each
        assert sum(f"/{pack}.yaml:" in line for line in passed) >= 5, pack
    assert lines[-1] == f"{len(passed)} passed, 0 failed"


def test_rules_validate_does_not_read_test_files_in_subdirectories(
    tmp_path: Path, rules: Path
) -> None:
    write(tmp_path / "tests" / "r.yaml", "rules: [../r.yaml]\ncases: []\n")  # not a rule file
    result = runner.invoke(app, ["rules", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 1 file(s), 4 rule(s) (3 enabled)")


# --------------------------------------------------------------------------------------------
# Passing and failing cases


def test_passing_cases_print_pass_lines_and_exit_0(tmp_path: Path, rules: Path) -> None:
    t = write(
        tmp_path / "tests" / "t.yaml",
        """rules: [../r.yaml]
config:
  containment: {policy: low-intervention}
cases:
  - name: a rumour is held
    message: {id: m-1, sender: bob, claims: [{key: competitor funding, value: 50M USD}]}
    expect:
      verdict: hold
      rules: [hold-rumours, tag-chat]
      not_rules: [block-eve, never]
      alerts: [rumour]
      tags: {quorum: 2/*}
  - name: the lead is exempt
    message: {id: m-1, sender: lead, claims: [{key: competitor funding, value: 50M USD}]}
    expect: {not_rules: [hold-rumours], tags: {chat: "yes"}}
  - name: history is decided first, in the same conversation
    history:
      - {id: m-1, sender: finance-tool, kind: tool_result, claims: [{key: q3 revenue, value: 8.1M}]}
    message: {id: m-2, sender: bob, claims: [{key: q3 revenue, value: 9M}]}
    expect: {verdict: block, alerts: [red-claim], feedback_contains: contradicts}
  - name: priority 50 beats the hold
    message: {id: m-1, sender: eve, claims: [{key: competitor funding, value: 50M USD}]}
    expect: {verdict: block, rules: [block-eve, hold-rumours], feedback_contains: "eve: no"}
""",
    )
    code, out = rules_test(t)
    assert code == 0, out
    assert out.splitlines() == [
        f"PASS {t}:5 a rumour is held",
        f"PASS {t}:13 the lead is exempt",
        f"PASS {t}:16 history is decided first, in the same conversation",
        f"PASS {t}:21 priority 50 beats the hold",
        "4 passed, 0 failed",
    ]


def test_a_failing_case_says_what_differed_and_exits_1(tmp_path: Path, rules: Path) -> None:
    t = write(
        tmp_path / "t.yaml",
        """rules: [r.yaml]
cases:
  - name: passes
    message: {id: m-1, sender: bob}
    expect: {verdict: deliver-tagged}
  - name: wrong on every count
    message: {id: m-1, sender: bob}
    expect:
      verdict: hold
      rules: [hold-rumours]
      not_rules: [tag-chat]
      alerts: [rumour]
      tags: {chat: "no", missing: "x"}
      feedback_contains: nope
""",
    )
    code, out = rules_test(t)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"PASS {t}:3 passes"
    assert lines[1] == (
        f"FAIL {t}:6 wrong on every count: expected verdict hold, got deliver-tagged; "
        "expected rule hold-rumours to fire; expected rule tag-chat not to fire; "
        "expected alert rumour (alerts: none); expected tag chat=no, got chat=yes; "
        "expected tag missing=x, missing; expected feedback containing 'nope', got '' "
        "(fired: rule:tag-chat)"
    )
    assert lines[-1] == "1 passed, 1 failed"


def test_cases_do_not_share_state(tmp_path: Path, rules: Path) -> None:
    t = write(
        tmp_path / "t.yaml",
        """rules: [r.yaml]
cases:
  - name: a tool grounds revenue
    message: {id: m-1, sender: tool, kind: tool_result, claims: [{key: q3 revenue, value: 8.1M}]}
    expect: {verdict: deliver}
  - name: a fresh core has not seen the tool
    message: {id: m-2, sender: bob, claims: [{key: q3 revenue, value: 9M}]}
    expect: {verdict: deliver-tagged}
""",
    )
    code, out = rules_test(t)
    assert code == 0, out  # not Red: the second case's core never saw the tool result


def test_directories_are_searched_recursively_and_bad_files_do_not_stop_the_others(
    tmp_path: Path, rules: Path
) -> None:
    good = (
        "rules: [../r.yaml]\ncases:\n"
        "  - {name: ok, message: {id: m, sender: b}, expect: {verdict: deliver-tagged}}\n"
    )
    write(tmp_path / "d" / "a.yaml", good)
    write(tmp_path / "d" / "sub" / "b.yml", good.replace("../", "../../"))
    write(tmp_path / "d" / "c.yaml", "rules: [../r.yaml]\ncases: []\n")
    write(tmp_path / "d" / "notes.txt", "not a test")
    code, out = rules_test(tmp_path / "d")
    assert code == 2
    assert f"PASS {tmp_path / 'd' / 'a.yaml'}:3 ok" in out
    assert f"PASS {tmp_path / 'd' / 'sub' / 'b.yml'}:3 ok" in out
    assert f"{tmp_path / 'd' / 'c.yaml'}:2: cases: no cases" in out
    assert "2 passed, 0 failed, 1 unusable file(s)" in out


def test_missing_paths_and_empty_directories_exit_2(tmp_path: Path) -> None:
    code, out = rules_test(tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml: no such file or directory" in out
    (tmp_path / "empty").mkdir()
    code, out = rules_test(tmp_path / "empty")
    assert code == 2 and "no test files" in out


# --------------------------------------------------------------------------------------------
# Malformed test files: positioned errors, exit 2, no traceback

CASE = "  - name: c\n    message: {id: m-1, sender: bob}\n    expect: {verdict: hold}\n"


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("rules: [r.yaml]\ncases: [\n", ":3:", "invalid YAML"),
        ("", "", "empty test file"),
        ("rules: [r.yaml]\ncases:\n" + CASE + "extra: 1\n", ":6: extra:", "unknown field"),
        ("cases:\n" + CASE, ":1:", "required field `rules`"),
        ("rules: []\ncases:\n" + CASE, ":1: rules:", "no rule files"),
        ("rules: [nope.yaml]\ncases:\n" + CASE, ":1: rules[0]:", "no such file"),
        (
            "rules: [r.yaml]\ncases:\n  - name: c\n    message: {id: m-1, sender: bob}\n"
            "    expect: {verdict: hodl}\n",
            ":5: cases[0].expect.verdict:",
            "Invalid enum value 'hodl'",
        ),
        (
            "rules: [r.yaml]\ncases:\n  - name: c\n    message: {id: m-1, sender: bob}\n"
            "    expect: {rules: [hold-rumors]}\n",
            ":5: cases[0].expect.rules[0]:",
            "unknown rule 'hold-rumors'; the rules are: block-eve, hold-rumours, never, tag-chat",
        ),
        (
            "rules: [r.yaml]\ncases:\n  - name: c\n    message: {id: m-1, sender: bob}\n"
            "    expect: {}\n",
            ":5: cases[0].expect:",
            "expects nothing",
        ),
        (
            "rules: [r.yaml]\ncases:\n  - name: c\n    message: {id: m-1, sender: bob}\n",
            ":3: cases[0].expect:",
            "required field `expect`",
        ),
        (
            "rules: [r.yaml]\ncases:\n  - name: c\n    message:\n      id: m-1\n"
            "      sender: bob\n      claims: [{value: 3}]\n    expect: {verdict: hold}\n",
            ":7: cases[0].message.claims[0].key:",
            "required field `key`",
        ),
        (
            "rules: [r.yaml]\ncases:\n  - name: c\n    history:\n      - {id: h, sender: a}\n"
            "      - {id: h, sender: a, kind: gossip}\n"
            "    message: {id: m-1, sender: bob}\n    expect: {verdict: hold}\n",
            ":6: cases[0].history[1].kind:",
            "Invalid enum value 'gossip'",
        ),
        (
            "rules: [r.yaml]\nconfig:\n  containment: {policy: lax}\ncases:\n" + CASE,
            ":3: config.containment.policy:",
            "Invalid enum value 'lax'",
        ),
        (
            "rules: [r.yaml]\nconfig:\n  rules: {paths: [x.yaml]}\ncases:\n" + CASE,
            ":3: config.rules:",
            "top-level rules: list",
        ),
    ],
)
def test_malformed_test_files_give_positioned_errors(
    tmp_path: Path, rules: Path, text: str, where: str, problem: str
) -> None:
    t = write(tmp_path / "t.yaml", text)
    code, out = rules_test(t)
    assert code == 2, out
    assert f"error: {t}{where}" in out, out
    assert problem in out, out
    assert "0 passed, 0 failed, 1 unusable file(s)" in out


def test_a_broken_rule_file_is_reported_where_it_breaks(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "- rule: r\n  condition: risk.scor > 1\n  actions: {}\n")
    t = write(tmp_path / "t.yaml", "rules: [bad.yaml]\ncases:\n" + CASE)
    code, out = rules_test(t)
    assert code == 2
    assert f"{bad}:2:14: rule r.condition:" in out and "risk.score" in out


# --------------------------------------------------------------------------------------------
# explain


def explain_cli(tmp_path: Path, rules: Path, message: str, *extra: str) -> tuple[int, str]:
    msg = write(tmp_path / "message.yaml", message)
    result = runner.invoke(
        app,
        ["rules", "explain", "--rules", str(rules), *extra, str(msg)],
        env={"COLUMNS": "200"},
    )
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_explain_shows_every_rule_its_operands_values_and_the_winner(
    tmp_path: Path, rules: Path
) -> None:
    history = write(
        tmp_path / "history.jsonl",
        '{"id": "h-1", "sender": "finance-tool", "kind": "tool_result", '
        '"claims": [{"key": "q3 revenue", "value": "8.1M"}]}\n\n'
        '{"id": "h-2", "sender": "bob", "content": "hello"}\n',
    )
    code, out = explain_cli(
        tmp_path,
        rules,
        "id: m-3\nsender: bob\nmeta: {role: analyst}\n"
        "claims: [{key: competitor funding, value: 50M USD}]\n",
        "--history",
        str(history),
    )
    assert code == 0, out
    assert "message m-3 from bob: verdict hold (before the rules: deliver-tagged" in out
    assert "rule hold-rumours: rumour" in out
    lines = out.splitlines()
    table = [line for line in lines if any(n in line for n in ("hold-rumours  ", "tag-chat  "))]
    # evaluation order: priority, then name; the winner is starred
    order = [line.split()[1] if line.split()[0] == "★" else line.split()[0] for line in table]
    assert order[:2] == ["hold-rumours", "tag-chat"]
    assert table[0].split()[0] == "★"
    assert "★ hold-rumours" in out  # its detail table's title
    # per-operand breakdown and the fields read
    assert any('not (sender.role == "auditor")' in line and "true" in line for line in lines)
    assert any("sender.role" in line and '"analyst"' in line for line in lines)
    assert "competitor funding = 50000000 usd (yellow" in out
    assert "fired: proposes hold: rumour" in out
    assert "not fired: disabled" in out  # the disabled rule is listed too
    assert "not fired: condition false" in out  # block-eve


def test_explain_names_the_exception_that_exempted_a_rule(tmp_path: Path, rules: Path) -> None:
    code, out = explain_cli(
        tmp_path, rules, "{id: m-1, sender: lead, claims: [{key: competitor funding, value: 1}]}"
    )
    assert code == 0, out
    assert "not fired: exempt by exception trusted-lead" in out
    assert "trusted-lead" in next(line for line in out.splitlines() if "hold-rumours  " in line)


def test_explain_reads_rules_from_the_config_and_reports_bad_input(
    tmp_path: Path, rules: Path
) -> None:
    cfg = write(tmp_path / "ostracon.yaml", f"rules:\n  paths: [{rules}]\n")
    msg = write(tmp_path / "m.json", '{"id": "m-1", "sender": "eve"}')
    result = runner.invoke(app, ["rules", "explain", "-c", str(cfg), str(msg)])
    assert result.exit_code == 0 and "verdict block" in result.output

    result = runner.invoke(app, ["rules", "explain", str(msg)])
    assert result.exit_code == 2 and "no rule files" in result.output

    bad = write(tmp_path / "bad.yaml", "id: m-1\nsender: eve\nkind: gossip\n")
    code, out = explain_cli(tmp_path, rules, "x: 1\n")
    assert code == 2 and "message.yaml:1: id: Object missing required field `id`" in out
    result = runner.invoke(app, ["rules", "explain", "-r", str(rules), str(bad)])
    assert result.exit_code == 2 and f"{bad}:3: kind: Invalid enum value 'gossip'" in result.output

    jsonl = write(tmp_path / "h.jsonl", '{"id": "a", "sender": "b"}\n{"id": "a", "sender": 3}\n')
    result = runner.invoke(
        app, ["rules", "explain", "-r", str(rules), "--history", str(jsonl), str(msg)]
    )
    assert result.exit_code == 2 and f"{jsonl}:2: sender: Expected `str`" in result.output
    assert "Traceback" not in result.output


def test_explain_does_not_advance_the_state_and_matches_the_decision(rules: Path) -> None:
    cfg = Config(
        containment=ContainmentConfig(policy="low-intervention"),
        rules=RulesConfig(paths=[str(rules)]),
    )
    core = build_core(cfg)
    env = Envelope("m-1", "c", "eve", Kind.CHAT, "", claims=[Claim("competitor funding", 1)])
    ex = explain(core, env)
    assert core.state.genealogy.lineage("c") is None and not core.state.conversations
    assert ex.before is Verdict.DELIVER_TAGGED
    assert [t.rule.name for t in ex.rules] == ["block-eve", "hold-rumours", "never", "tag-chat"]
    winners = [t.rule.name for t in ex.rules if t.winner]
    assert winners == ["block-eve"]
    fired = {t.rule.name: t.verdict for t in ex.rules if t.fired}
    assert fired == {
        "block-eve": Verdict.BLOCK,
        "hold-rumours": Verdict.HOLD,
        "tag-chat": Verdict.DELIVER_TAGGED,
    }
    assert ex.decision == core.decide(env)  # the same decision the core then makes


def test_explain_when_the_blocklist_stops_the_chain(rules: Path) -> None:
    cfg = Config(
        blocklist=BlocklistConfig(agents={"bob": "spam"}), rules=RulesConfig(paths=[str(rules)])
    )
    ex = explain(build_core(cfg), Envelope("m-1", "c", "bob", Kind.CHAT, ""))
    assert ex.stopped_by == "blocklist" and ex.decision.verdict is Verdict.BLOCK
    assert not any(t.fired for t in ex.rules)
    assert any(t.value for t in ex.rules)  # conditions are still shown
