"""``ostracon replay FILE --rules CANDIDATE``: the same transcript under the current and the
candidate rules, and what would change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ostracon.cli import app
from ostracon.config import Config, RulesConfig
from ostracon.envelope import Envelope, Kind
from ostracon.replay import decide_all, replay, rule_paths, what_if, with_rules

DATA = Path(__file__).parent.parent / "data" / "replay"
runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # rich wraps tables to the terminal width

HOLD_GPT = """
- rule: hold-gpt-unverified
  description: Unverified claims from gpt agents wait for a check.
  condition: sender.model_family == "gpt" and claims.any(c, c.label == "yellow")
  actions: {hold: {reason: "gpt, unverified"}}
  priority: 20
"""
ALERT_LAUNCH = """
- rule: alert-launch
  condition: claims.any(c, c.key == "launch")
  actions: {alert: {severity: info}}
"""
NEVER = """
- rule: never
  condition: sender == "nobody-at-all"
  actions: {block: {}}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def transcript(tmp_path: Path) -> Path:
    """envelopes.jsonl: m-2 (researcher) and m-6 (qa) are gpt agents with unverified
    claims, delivered tagged under the default config; m-5 is blocked (Red)."""
    dst = tmp_path / "envelopes.jsonl"
    shutil.copy(DATA / "envelopes.jsonl", dst)
    return dst


def invoke_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["replay", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_text_lists_the_changed_messages_and_the_totals(tmp_path: Path) -> None:
    src = transcript(tmp_path)
    write(tmp_path, "candidate/hold.yaml", HOLD_GPT)
    result = runner.invoke(
        app, ["replay", str(src), "--rules", str(tmp_path / "candidate")], env=WIDE
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Root-cause candidates" in text  # the normal report is still there
    what = text[text.index("What if:") :]
    assert "instead of the current (none)" in what
    assert "2 message(s) would change" in what
    rows = [line.split() for line in what.splitlines() if line.strip().startswith(("1 ", "5 "))]
    assert rows == [
        ["1", "m-2", "researcher", "deliver-tagged", "->", "hold", "-", "hold-gpt-unverified"],
        ["5", "m-6", "qa", "deliver-tagged", "->", "hold", "-", "hold-gpt-unverified"],
    ]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in what.splitlines()]
    totals = {row[0]: row[1:] for row in cells if len(row) == 4}
    assert totals["hold"] == ["0", "2", "+2"]
    assert totals["deliver-tagged"] == ["3", "1", "-2"] and totals["block"] == ["1", "1", "0"]


def test_json_has_a_what_if_object_and_the_outputs_stay_those_of_the_current_rules(
    tmp_path: Path,
) -> None:
    src = transcript(tmp_path)
    cand = write(tmp_path, "hold.yaml", HOLD_GPT)
    plain = invoke_json(str(src), "-o", str(tmp_path / "plain"))
    out = invoke_json(str(src), "-o", str(tmp_path / "whatif"), "-r", str(cand))
    assert "what_if" not in plain
    assert {k: v for k, v in out.items() if k not in ("what_if", "outputs")} == {
        k: v for k, v in plain.items() if k != "outputs"
    }
    for kind in ("json", "graphml", "html"):
        assert Path(out["outputs"][kind]).read_bytes() == Path(plain["outputs"][kind]).read_bytes()
    w = out["what_if"]
    assert w["current"] == {"rules": [], "decisions": plain["decisions"]}
    assert w["candidate"]["rules"] == [str(cand)]
    assert sum(w["candidate"]["decisions"].values()) == out["messages"]
    assert w["changed"] == 2
    assert w["changes"] == [
        {
            "step": step,
            "id": mid,
            "conversation": "launch-review",
            "sender": sender,
            "verdict": {"current": "deliver-tagged", "candidate": "hold"},
            "rules": {"current": [], "candidate": ["hold-gpt-unverified"]},
        }
        for step, mid, sender in ((1, "m-2", "researcher"), (5, "m-6", "qa"))
    ]
    assert w["totals"]["hold"] == {"current": 0, "candidate": 2, "change": 2}
    assert w["totals"]["deliver-tagged"]["change"] == -2
    assert w["totals"]["deliver"]["change"] == 0 and w["totals"]["block"]["change"] == 0


def test_candidate_replaces_the_configs_rules_and_fired_rule_changes_count(
    tmp_path: Path,
) -> None:
    src = transcript(tmp_path)
    current = write(tmp_path, "current.yaml", ALERT_LAUNCH)
    cfg = write(tmp_path, "ostracon.yaml", f"rules:\n  paths: [{current}]\n")
    cand = write(tmp_path, "hold.yaml", HOLD_GPT)
    w = invoke_json(str(src), "-c", str(cfg), "-r", str(cand), "-o", str(tmp_path / "o"))["what_if"]
    assert w["current"]["rules"] == [str(current)] and w["candidate"]["rules"] == [str(cand)]
    by_id = {c["id"]: c for c in w["changes"]}
    # The launch-date messages: the alert rule no longer fires, the verdict stays.
    for mid in ("m-3", "m-4", "m-5"):
        assert by_id[mid]["rules"] == {"current": ["alert-launch"], "candidate": []}
        assert by_id[mid]["verdict"]["current"] == by_id[mid]["verdict"]["candidate"]
    assert by_id["m-2"]["rules"] == {
        "current": ["alert-launch"],
        "candidate": ["hold-gpt-unverified"],
    }
    assert by_id["m-2"]["verdict"] == {"current": "deliver-tagged", "candidate": "hold"}
    assert "m-1" not in by_id


def test_a_candidate_rate_limit_changes_later_messages(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "id": f"m-{i}",
                "conversation": "c",
                "sender": "bot",
                "kind": "chat",
                "content": "ok",
                "ts": 100.0 + i,
            }
        )
        for i in range(5)
    ]
    src = write(tmp_path, "chatty.jsonl", "\n".join(lines) + "\n")
    cand = write(
        tmp_path,
        "rate.yaml",
        """
- rule: chatty
  condition: kind == "chat"
  actions: {rate_limit: {max: 2, window_s: 60, then: hold}}
""",
    )
    w = invoke_json(str(src), "-r", str(cand), "-o", str(tmp_path / "o"))["what_if"]
    assert [c["verdict"]["candidate"] for c in w["changes"]] == ["deliver"] * 2 + ["hold"] * 3
    assert all(c["rules"] == {"current": [], "candidate": ["chatty"]} for c in w["changes"])
    assert w["totals"]["hold"] == {"current": 0, "candidate": 3, "change": 3}


def test_nothing_changes(tmp_path: Path) -> None:
    src = transcript(tmp_path)
    cand = write(tmp_path, "never.yaml", NEVER)
    result = runner.invoke(app, ["replay", str(src), "-r", str(cand)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "No message would be decided differently." in result.stdout
    assert invoke_json(str(src), "-r", str(cand))["what_if"]["changed"] == 0


def test_rules_repeat_or_take_a_comma_separated_list(tmp_path: Path) -> None:
    src = transcript(tmp_path)
    a = write(tmp_path, "a.yaml", HOLD_GPT)
    b = write(tmp_path, "b.yaml", ALERT_LAUNCH)
    repeated = invoke_json(str(src), "-r", str(a), "--rules", str(b))["what_if"]
    listed = invoke_json(str(src), "--rules", f"{a},{b}")["what_if"]
    assert repeated == listed
    assert repeated["candidate"]["rules"] == [str(a), str(b)]
    assert {r for c in repeated["changes"] for r in c["rules"]["candidate"]} == {
        "hold-gpt-unverified",
        "alert-launch",
    }


def test_rule_paths_never_split_an_existing_path(tmp_path: Path) -> None:
    odd = write(tmp_path, "a,b.yaml", NEVER)
    assert rule_paths([str(odd)]) == [str(odd)]
    assert rule_paths(["x.yaml, y/", Path("z.yaml")]) == ["x.yaml", "y/", "z.yaml"]


@pytest.mark.parametrize(
    ("files", "arg", "expected"),
    [
        (
            {
                "bad/x.yaml": '- rule: oops\n  condition: claims.any(c, c.lable == "red")\n'
                "  actions: {hold: {}}\n"
            },
            "bad",
            "x.yaml:2:",
        ),
        ({}, "missing.yaml", "missing.yaml: cannot read"),
        ({"empty/notes.txt": "not a rule file"}, "empty", "no rule files"),
        (
            {"dup/a.yaml": NEVER, "dup/b.yaml": NEVER},
            "dup",
            "b.yaml:2: rule never: already defined at",
        ),
    ],
)
def test_bad_candidate_rules_exit_2_with_a_positioned_error(
    tmp_path: Path, files: dict[str, str], arg: str, expected: str
) -> None:
    src = transcript(tmp_path)
    for name, text in files.items():
        write(tmp_path, name, text)
    out = tmp_path / "o"
    result = runner.invoke(app, ["replay", str(src), "-r", str(tmp_path / arg), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    flat = " ".join(result.stderr.split())
    assert expected in flat and "Traceback" not in flat
    assert not out.exists()  # nothing was replayed


def test_bad_current_rules_exit_2_too(tmp_path: Path) -> None:
    src = transcript(tmp_path)
    bad = write(tmp_path, "bad.yaml", "- rule: x\n  condition: sender ==\n  actions: {hold: {}}\n")
    cfg = write(tmp_path, "ostracon.yaml", f"rules:\n  paths: [{bad}]\n")
    for extra in ([], ["-r", str(write(tmp_path, "ok.yaml", NEVER))]):
        result = runner.invoke(app, ["replay", str(src), "-c", str(cfg), *extra])
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)
        assert "bad.yaml:2:" in " ".join(result.stderr.split())


def test_help_documents_rules() -> None:
    result = runner.invoke(app, ["replay", "--help"], env=WIDE)
    assert result.exit_code == 0 and "--rules" in result.output


def test_what_if_function_compares_step_by_step(tmp_path: Path) -> None:
    cand = write(tmp_path, "hold.yaml", HOLD_GPT)
    envs = [
        Envelope(id="a", conversation="c", sender="x", kind=Kind.CHAT, content="hi"),
        Envelope(
            id="b",
            conversation="c",
            sender="y",
            kind=Kind.CHAT,
            content="The launch date is May 1, 2025.",
            meta={"model_family": "gpt"},
        ),
    ]
    rep = replay(envs)
    steps, core, dup = decide_all(envs, with_rules(Config(), [cand]))
    assert dup == 0 and core.state.genealogy is not rep.genealogy
    diff = what_if(rep.steps, steps, [], [str(cand)])
    assert [(c.step, c.message, c.candidate.value) for c in diff.changes] == [(1, "b", "hold")]
    assert diff.to_dict()["changed"] == 1
    with pytest.raises(ValueError, match="differ in length"):
        what_if(rep.steps, steps[:1])
    kept = with_rules(Config(rules=RulesConfig(paths=["x.yaml"])), [cand])
    assert kept.rules.paths == [str(cand)] and kept.containment == Config().containment


def test_long_what_if_keeps_stdout_pure_json(tmp_path: Path) -> None:
    # 150 messages, replayed twice: over the progress-bar threshold (on stderr).
    items = [{"role": "assistant", "name": f"a{i % 5}", "content": f"note {i}"} for i in range(150)]
    src = write(tmp_path, "long.json", json.dumps(items))
    cand = write(tmp_path, "never.yaml", NEVER)
    out = invoke_json(str(src), "-r", str(cand), "-o", str(tmp_path / "o"))
    assert out["messages"] == 150 and out["what_if"]["changed"] == 0
