"""``ostracon replay``: every input shape, the attribution ranking, the outputs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import networkx as nx
import pytest
from typer.testing import CliRunner

from ostracon.cli import app
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.replay import (
    WEIGHTS,
    ReplayInputError,
    chat_envelopes,
    load_transcript,
    replay,
    replay_file,
    write_outputs,
)

DATA = Path(__file__).parent.parent / "data" / "replay"
runner = CliRunner()

# fixture, shape, agent and step that must rank first, a claim's surface text in the content
CASES = [
    ("autogen_groupchat.json", "chat-object", "analyst", 4, "Q3 revenue was $12M"),
    ("late_tool_chat.json", "chat-list", "scout", 2, "the primary region is eu-west-1"),
    ("history_export.json", "chat-object", "sre_agent", 3, "payments replicas count is 5"),
    ("envelopes.jsonl", "jsonl", "researcher", 1, "launch date is March 5, 2025"),
]


def copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copy(DATA / name, dst)
    return dst


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ shapes and attribution


@pytest.mark.parametrize(("name", "shape", "agent", "step", "_text"), CASES)
def test_first_false_claim_ranks_first(
    name: str, shape: str, agent: str, step: int, _text: str
) -> None:
    rep = replay_file(DATA / name)
    assert rep.shape == shape
    top = rep.candidates[0]
    assert (top.agent, top.step) == (agent, step), [(c.agent, c.step) for c in rep.candidates]
    assert top.components["contradicted"] == 1.0 and top.components["ungrounded"] == 1.0
    # The evidence chain: the origin, then the two agents that repeated it, in order.
    chain = [(e["step"], e["agent"], e["relation"]) for e in top.evidence]
    assert (step, agent, "origin") in chain
    repeats = [e for e in top.evidence if e["relation"] in ("derives", "restates")]
    assert len({e["agent"] for e in repeats}) == 2
    assert [e["step"] for e in top.evidence] == sorted(e["step"] for e in top.evidence)
    assert all(e["step"] > step for e in repeats)
    assert any(e["relation"] == "contradicted-by" for e in top.evidence)
    # Score = the documented weighted sum of the exposed components.
    assert top.score == pytest.approx(
        sum(WEIGHTS[k] * v for k, v in top.components.items()), abs=2e-3
    )


def test_group_chat_ranks_contradicted_origin_above_unverified_spread() -> None:
    rep = replay_file(DATA / "autogen_groupchat.json")
    assert [(c.agent, c.step) for c in rep.candidates] == [("analyst", 4), ("writer", 5)]
    first, second = rep.candidates
    assert first.score > second.score
    assert first.claims[0]["key"] == "q3 revenue" and first.claims[0]["value"] == "12000000 usd"
    assert "query_finance" in first.reason and "writer, critic" in first.reason
    assert second.claims[0]["value"] == "thursday" and second.components["contradicted"] == 0
    verdicts = {s.envelope.sender: s.decision.verdict.value for s in rep.steps if s.index >= 4}
    assert verdicts["analyst"] == verdicts["writer"] == "block"


def test_restatement_after_conviction_is_blamed_on_the_first_sender() -> None:
    """scout's claim is convicted by the tool; writer and editor repeat it afterwards.

    The repeats still descend from scout's convicted claim (writer could read it), so the
    blame stays with scout.
    """
    rep = replay_file(DATA / "late_tool_chat.json")
    assert len(rep.candidates) == 1
    top = rep.candidates[0]
    relations = {e["agent"]: e["relation"] for e in top.evidence}
    assert relations == {
        "scout": "origin",
        "inventory": "contradicted-by",
        "writer": "derives",
        "editor": "derives",
    }
    assert top.claims[0]["convicted"] is True


def test_independent_statements_are_not_folded_together() -> None:
    """An agent that could not read the first statement is its own source."""

    def env(i: int, sender: str, kind: Kind = Kind.CHAT, **kw: Any) -> Envelope:
        return Envelope(id=f"m{i}", conversation="c", sender=sender, kind=kind, content="", **kw)

    wrong, right = Claim("region", "eu-west-1"), Claim("region", "us-east-1")
    rep = replay(
        [
            env(0, "a", claims=[wrong], recipients=["b"]),
            env(1, "b", claims=[wrong], parents=["m0"], recipients=["a"]),
            env(2, "c", claims=[wrong]),  # never saw a's or b's private exchange
            env(3, "d", claims=[wrong], parents=["m2"]),
            env(4, "tool", Kind.TOOL_RESULT, claims=[right]),
        ]
    )
    ranked = [(c.agent, c.step) for c in rep.candidates]
    assert ranked == [("a", 0), ("c", 2)]
    assert {e["agent"] for e in rep.candidates[1].evidence} == {"c", "d", "tool"}


def test_nothing_suspect_gives_no_candidates() -> None:
    rep = replay(
        [
            Envelope("t", "c", "tool", Kind.TOOL_RESULT, "", claims=[Claim("x", 1)]),
            Envelope("a", "c", "agent", Kind.CHAT, "", claims=[Claim("x", 1)], parents=["t"]),
            Envelope("b", "c", "lone", Kind.CHAT, "", claims=[Claim("y", 2)]),
        ]
    )
    assert rep.candidates == []


# ------------------------------------------------------------------ chat mapping


def test_chat_messages_become_envelopes() -> None:
    items = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "human", "name": "", "content": "also hi"},
        {"role": "assistant", "name": "coder", "content": None, "tool_calls": []},
        {"role": "tool", "content": [{"type": "text", "text": "a"}, "b", {"type": "image"}]},
        {"role": "function", "name": "search", "content": "found"},
        {"name": "critic", "content": "ok"},
    ]
    envs = chat_envelopes(items, "conv")
    assert [e.id for e in envs] == [f"step-{i}" for i in range(7)]
    assert [e.sender for e in envs] == [
        "system",
        "user",
        "human",
        "coder",
        "tool",
        "search",
        "critic",
    ]
    assert [e.kind for e in envs] == [
        Kind.SYSTEM,
        Kind.HUMAN,
        Kind.HUMAN,
        Kind.CHAT,
        Kind.TOOL_RESULT,
        Kind.TOOL_RESULT,
        Kind.CHAT,
    ]
    assert envs[0].parents == [] and all(
        e.parents == [f"step-{e_i}"] for e_i, e in enumerate(envs[1:])
    )
    assert envs[3].content == "" and envs[4].content == "a\nb"
    assert all(e.conversation == "conv" and e.recipients == [] for e in envs)
    assert "role" not in envs[1].meta  # a chat role must not read as a hub role


def test_conversation_is_the_file_stem_and_jsonl_keeps_its_own() -> None:
    chat = load_transcript(DATA / "autogen_groupchat.json")
    assert {e.conversation for e in chat.envelopes} == {"autogen_groupchat"}
    jsonl = load_transcript(DATA / "envelopes.jsonl")
    assert {e.conversation for e in jsonl.envelopes} == {"launch-review"}
    assert [e.id for e in jsonl.envelopes] == [f"m-{i}" for i in range(1, 7)]  # blank line


def test_duplicate_envelopes_are_skipped_like_the_sidecar_does(tmp_path: Path) -> None:
    lines = (DATA / "envelopes.jsonl").read_text().splitlines()
    path = write(tmp_path, "dup.jsonl", "\n".join([*lines, lines[1]]) + "\n")
    rep = replay_file(path)
    assert len(rep.steps) == 6 and rep.duplicates == 1
    assert any("skipped" in w for w in rep.warnings)


# ------------------------------------------------------------------ outputs


@pytest.mark.parametrize(("name", "shape", "agent", "step", "text"), CASES)
def test_outputs_exist_and_parse(
    name: str, shape: str, agent: str, step: int, text: str, tmp_path: Path
) -> None:
    rep = replay_file(DATA / name)
    paths = write_outputs(rep, tmp_path / "out")
    doc = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    assert len(doc["messages"]) == len(rep.steps)
    assert all("verdict" in m["decision"] for m in doc["messages"])
    kinds = {e["kind"] for e in doc["edges"]}
    assert {"asserts", "derives", "answers", "contradicts"} <= kinds
    nodes = {n["id"]: n for n in doc["nodes"]}
    origin = next(n for n in nodes.values() if n["type"] == "claim" and n["step"] == step)
    assert origin["sender"] == agent and origin["label"] in ("red", "yellow")
    assert doc["candidates"][0]["agent"] == agent

    g = nx.read_graphml(paths["graphml"])
    assert g.number_of_nodes() == len(nodes) and g.number_of_edges() == len(doc["edges"])
    claim = g.nodes[origin["id"]]
    assert claim["type"] == "claim" and claim["grounded"] is False
    assert isinstance(claim["depth"], int) and isinstance(claim["origins"], str)
    assert {d["kind"] for _, _, d in g.edges(data=True)} == kinds

    page = Path(paths["html"]).read_text(encoding="utf-8")
    assert text in page
    assert "http://" not in page and "https://" not in page
    assert "<script src" not in page and "<link" not in page
    assert 'class="claim red' in page and "<svg" in page
    assert agent in page


def test_outputs_are_deterministic(tmp_path: Path) -> None:
    a = write_outputs(replay_file(DATA / "autogen_groupchat.json"), tmp_path / "a")
    b = write_outputs(replay_file(DATA / "autogen_groupchat.json"), tmp_path / "b")
    for kind in ("json", "graphml", "html"):
        assert Path(a[kind]).read_bytes() == Path(b[kind]).read_bytes(), kind


def test_json_decisions_round_trip_to_structs(tmp_path: Path) -> None:
    from ostracon.decision import Decision

    paths = write_outputs(replay_file(DATA / "envelopes.jsonl"), tmp_path)
    doc = json.loads(Path(paths["json"]).read_text())
    decisions = [msgspec.convert(m["decision"], Decision) for m in doc["messages"]]
    assert [d.verdict.value for d in decisions][3:5] == ["deliver", "block"]


# ------------------------------------------------------------------ command line


@pytest.mark.parametrize(("name", "shape", "agent", "step", "_text"), CASES)
def test_cli_json(name: str, shape: str, agent: str, step: int, _text: str, tmp_path: Path) -> None:
    src = copy(name, tmp_path)
    result = runner.invoke(app, ["replay", str(src), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"messages", "decisions", "candidates", "outputs"}
    assert out["messages"] == len(load_transcript(src).envelopes)
    assert sum(out["decisions"].values()) == out["messages"]
    top = out["candidates"][0]
    assert (top["agent"], top["step"]) == (agent, step)
    assert {"agent", "step", "score", "claims", "reason", "evidence"} <= set(top)
    default_dir = tmp_path / f"{src.stem}.replay"
    assert out["outputs"] == {
        "json": str(default_dir / "genealogy.json"),
        "graphml": str(default_dir / "genealogy.graphml"),
        "html": str(default_dir / "genealogy.html"),
    }
    assert all(Path(p).is_file() for p in out["outputs"].values())


def test_cli_text_with_out(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["replay", str(DATA / "autogen_groupchat.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Root-cause candidates" in text and "analyst" in text
    assert "Evidence chain of #1 (analyst, step 4)" in text
    assert "genealogy.html" in text
    assert (out / "genealogy.json").is_file() and (out / "genealogy.graphml").is_file()
    assert not (DATA / "autogen_groupchat.replay").exists()


def test_cli_long_replay_keeps_stdout_pure_json(tmp_path: Path) -> None:
    items: list[dict[str, Any]] = [{"role": "tool", "name": "db", "content": "latency: 120 ms"}]
    for i in range(1, 260):
        items.append({"role": "assistant", "name": f"agent{i % 7}", "content": f"note {i}"})
    items[10] = {"role": "assistant", "name": "guesser", "content": "The latency is 900 ms."}
    items[11] = {"role": "assistant", "name": "echo", "content": "Latency is 900 ms indeed."}
    items[12] = {"role": "assistant", "name": "parrot", "content": "So latency is 900 ms."}
    src = write(tmp_path, "long.json", json.dumps(items))
    result = runner.invoke(app, ["replay", str(src), "-f", "json", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["messages"] == 260
    assert (out["candidates"][0]["agent"], out["candidates"][0]["step"]) == ("guesser", 10)


def test_cli_help_lists_replay() -> None:
    assert "replay" in runner.invoke(app, ["--help"]).output
    sub = runner.invoke(app, ["replay", "--help"])
    assert sub.exit_code == 0
    for option in ("--format", "--out", "--config"):
        assert option in sub.output


def test_cli_rejects_unknown_format() -> None:
    result = runner.invoke(app, ["replay", str(DATA / "envelopes.jsonl"), "--format", "xml"])
    assert result.exit_code == 2


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = write(tmp_path, "bad.yaml", "containment:\n  polcy: strict\n")
    src = copy("envelopes.jsonl", tmp_path)
    result = runner.invoke(app, ["replay", str(src), "--config", str(cfg)])
    assert result.exit_code == 2
    assert "bad.yaml:2: containment.polcy" in result.output


def test_cli_config_is_used(tmp_path: Path) -> None:
    cfg = write(tmp_path, "off.yaml", "containment:\n  enabled: false\n")
    src = copy("envelopes.jsonl", tmp_path)
    result = runner.invoke(app, ["replay", str(src), "-c", str(cfg), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["candidates"] == []


# ------------------------------------------------------------------ malformed input

GOOD = (DATA / "envelopes.jsonl").read_text().splitlines()[0]

BAD = [
    # name, content, what the error must say
    ("bad.jsonl", f"{GOOD}\n\n{{not json\n", ["bad.jsonl:3:", "invalid-json"]),
    (
        "bad.jsonl",
        GOOD + '\n{"id": "m-2", "conversation": "c", "kind": "chat", "content": ""}\n',
        ["bad.jsonl:2:", "schema", "sender"],
    ),
    (
        "bad.jsonl",
        GOOD + '\n{"id": "m-2", "conversation": "c", "sender": "a", "kind": "gossip", '
        '"content": ""}\n',
        ["bad.jsonl:2:", "unknown-kind"],
    ),
    (
        "bad.json",
        '[\n  {"role": "user", "content": "hi"},\n  "just a string"\n]\n',
        ["bad.json:3:", "[1]", "must be an object"],
    ),
    (
        "bad.json",
        '{"messages": [\n {"role": "user", "content": "hi"},\n {"role": "assistant", '
        '"content": 42}\n]}',
        ["bad.json:3:", "messages[1]", "'content'"],
    ),
    (
        "bad.json",
        '{"history": [{"content": "who am I"}]}',
        ["bad.json:1:", "history[0]", "'name' or a 'role'"],
    ),
    ("bad.json", '{"messages": "nope"}', ["bad.json", "'messages' must be a list"]),
    ("bad.json", '{\n  "messages": [\n    {"role": "user",\n  ]\n}\n', ["bad.json:4:", "JSON"]),
    ("bad.json", '{"foo": 1}', ["bad.json:1:", "no 'messages' or 'history'"]),
    ("bad.txt", "hello there\n", ["bad.txt:1:", "not a transcript"]),
    ("bad.json", "  \n", ["bad.json", "empty"]),
    ("bad.json", b'[{"role": "user", "content": "caf\xe9"}]', ["bad.json:1:", "UTF-8"]),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD)
def test_malformed_input_exits_2_naming_file_and_line(
    name: str, content: str | bytes, expected: list[str], tmp_path: Path
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(ReplayInputError) as info:
        load_transcript(path)
    message = str(info.value)
    for part in expected:
        assert part in message, message
    result = runner.invoke(app, ["replay", str(path), "--format", "json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.output
    flat = " ".join(result.stderr.split())
    assert name in flat and expected[-1] in flat, flat
    assert not (tmp_path / f"{path.stem}.replay").exists()


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "nope.jsonl" in result.stderr and "cannot read" in result.stderr


def test_empty_chat_list_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", str(write(tmp_path, "empty.json", "[]"))])
    assert result.exit_code == 2
    assert "no messages" in result.stderr


def test_hostile_text_stays_inert_and_exports_stay_valid(tmp_path: Path) -> None:
    """Markup, control characters and lone surrogates in a transcript break no output."""
    items = [
        {"role": "tool", "name": "db", "content": "The owner is alice."},
        {"role": "assistant", "name": "<b>x</b>", "content": "The owner is <script>mallory."},
        {"role": "assistant", "name": "y\u0001", "content": "Owner: mallory\u0000 \ud800"},
    ]
    src = write(tmp_path, "odd.json", json.dumps(items))
    result = runner.invoke(app, ["replay", str(src), "-f", "json", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    json.loads((tmp_path / "o" / "genealogy.json").read_text(encoding="utf-8"))
    g = nx.read_graphml(out["outputs"]["graphml"])
    assert g.nodes["m:step-2"]["sender"] == "y\ufffd"
    page = (tmp_path / "o" / "genealogy.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_several_user_names_warn_that_they_were_taken_as_humans(tmp_path: Path) -> None:
    """AutoGen's receiving-side view labels other agents 'user': say what that means."""
    items = [
        {"role": "user", "name": "analyst", "content": "Q3 revenue was $12M."},
        {"role": "user", "name": "writer", "content": "Q3 revenue was $12M indeed."},
    ]
    src = write(tmp_path, "view.json", json.dumps({"messages": items}))
    rep = replay_file(src)
    assert any("user/human role (analyst, writer)" in w for w in rep.warnings)
    result = runner.invoke(app, ["replay", str(src), "-f", "json", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0
    assert "human-grounded" in " ".join(result.stderr.split())
    doc = json.loads((tmp_path / "o" / "genealogy.json").read_text())
    assert any("analyst, writer" in w for w in doc["warnings"])
    assert not any("role" in w for w in replay_file(DATA / "autogen_groupchat.json").warnings)


def test_progress_bar_only_on_long_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ostracon import replay as replay_module

    items = [{"role": "assistant", "name": f"a{i % 3}", "content": f"n {i}"} for i in range(201)]
    with_bar: list[bool] = []
    original = replay_module.replay

    def spy(*args: Any, **kwargs: Any) -> Any:
        with_bar.append(args[2] is not None)  # the progress callback
        return original(*args, **kwargs)

    monkeypatch.setattr(replay_module, "replay", spy)
    for n in (201, 200):
        src = write(tmp_path, f"chat{n}.json", json.dumps(items[:n]))
        result = runner.invoke(app, ["replay", str(src), "-f", "json", "-o", str(tmp_path / "o")])
        assert result.exit_code == 0
        assert json.loads(result.stdout)["messages"] == n  # the bar never reaches stdout
    assert with_bar == [True, False]
