"""The rule condition language: parsing, typing, compiled semantics, errors, explain, safety.

Every condition these tests compile and call runs twice: as its closures and as the one
function ``ostracon.codegen.program`` builds from its syntax tree; the two must agree (see
``compile_condition`` below)."""

from __future__ import annotations

import ast
import builtins
import inspect
import itertools
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from ostracon import conditions
from ostracon.codegen import Entry, program
from ostracon.conditions import (
    Compiler,
    Condition,
    ConditionError,
    Field,
    Type,
)


class _Both(Condition):
    """A compiled condition whose calls also run the generated function and compare."""

    __slots__ = ("_program",)

    def __call__(self, facts: Any) -> bool:
        out = self.fn(facts)
        generated = bool(self._program(facts))
        assert generated is out, f"{self.text!r}: closures {out!r}, generated code {generated!r}"
        return out


def compile_condition(
    text: str,
    schema: Any,
    macros: Any = MappingProxyType({}),
    lists: Any = MappingProxyType({}),
) -> Condition:
    """conditions.compile_condition, checked against ostracon.codegen on every call."""
    compiler = Compiler(schema, macros, lists)
    cond = compiler.compile(text)
    both = _Both.__new__(_Both)
    for name in Condition.__slots__:
        setattr(both, name, getattr(cond, name))
    both._program = program(compiler, [Entry(cond, True)])
    return both


def _key(name: str) -> Callable[[Any], Any]:
    return lambda d: d.get(name)


CLAIM = {
    "label": Field(Type.STR, _key("label")),
    "reach": Field(Type.NUM, _key("reach")),
    "depth": Field(Type.NUM, _key("depth")),
    "risk": Field(Type.NUM, _key("risk")),
    "key": Field(Type.STR, _key("key")),
    "grounded": Field(Type.BOOL, _key("grounded")),
    "tags": Field(Type.LIST, _key("tags")),
    "sources": Field(Type.RECORDS, _key("sources"), record={"kind": Field(Type.STR, _key("kind"))}),
    "meta.*": Field(Type.ANY, _key("meta")),
}

SCHEMA = {
    "sender": Field(Type.STR, _key("sender"), "the sending agent"),
    "kind": Field(Type.STR, _key("kind")),
    "content": Field(Type.STR, _key("content")),
    "recipients": Field(Type.LIST, _key("recipients")),
    "hub": Field(Type.BOOL, _key("hub")),
    "risk.score": Field(Type.NUM, _key("score")),
    "lineage.depth": Field(Type.NUM, _key("depth")),
    "sender.reputation": Field(Type.NUM, _key("reputation")),
    "meta.*": Field(Type.ANY, _key("meta")),
    "extra": Field(Type.ANY, _key("extra")),
    "claims": Field(Type.RECORDS, _key("claims"), record=CLAIM),
}


def facts(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sender": "alice",
        "kind": "chat",
        "content": "the api key is hunter2",
        "recipients": ["bob", "carol"],
        "hub": True,
        "score": 0.7,
        "depth": 2,
        "reputation": 0.9,
        "meta": {"role": "summarizer", "n": 3, "flag": True, "tags": ["x", "y"], "t": {"x": 1}},
        "extra": {"k": "v"},
        "claims": [
            {"label": "yellow", "reach": 3, "risk": 0.8, "key": "q3", "grounded": False},
            {"label": "green", "reach": 1, "risk": 0.1, "key": "q4", "grounded": True},
        ],
    }
    base.update(over)
    return base


def ev(text: str, f: dict[str, Any] | None = None, **kw: Any) -> bool:
    cond = compile_condition(text, SCHEMA, **kw)
    out = cond(facts() if f is None else f)
    assert out is True or out is False, f"{text!r} returned {out!r}"
    return out


def err(text: str, **kw: Any) -> ConditionError:
    with pytest.raises(ConditionError) as info:
        compile_condition(text, SCHEMA, **kw)
    return info.value


# -- literals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'content == "the api key is hunter2"',
        "content == 'the api key is hunter2'",
        r'"say \"hi\"" == "say \"hi\""',
        r"'it\'s' == " + '"it\'s"',
        r'"a\\b" == "a\\b"',
        "3 == 3.0",
        "1e3 == 1000",
        "-2 < 0",
        ".5 == 0.5",
        "true == true",
        "false != true",
        "meta.absent == null",
        'sender in ["alice", "bob",]',
        "2 in [1, 2, 3.5]",
    ],
)
def test_literals(text: str) -> None:
    assert ev(text)


def test_unicode_inside_strings() -> None:
    assert ev('sender == "caf\u00e9 \u2603"', facts(sender="caf\u00e9 \u2603"))


def test_escapes_decode() -> None:
    assert ev(r'content == "a\"b\\c\nd\te"', facts(content='a"b\\c\nd\te'))
    # an unknown escape keeps its backslash, so regexes read naturally
    assert ev(r'content == "\d"', facts(content="\\d"))


# -- fields ------------------------------------------------------------------------------------


def test_field_paths() -> None:
    assert ev('sender == "alice"')
    assert ev("risk.score == 0.7")
    assert ev("sender.reputation > 0.5")  # an exact dotted key beats the "sender" prefix
    assert ev('meta.role == "summarizer"')
    assert ev("meta.t.x == 1")  # nested lookup under a wildcard
    assert ev('extra.k == "v"')  # an exact ANY field followed by more path
    assert not ev("meta.t.y == 1")
    assert ev("meta.t.y == null")


def test_wildcard_missing_and_odd_mappings() -> None:
    assert ev("meta.role == null", facts(meta=None))
    assert ev("meta.a.b == null", facts(meta={"a": "not a mapping"}))
    assert ev('meta.role == "x"', facts(meta=MappingProxyType({"role": "x"})))
    assert not ev('meta.role == "x"', facts(meta=["role"]))
    assert not ev("meta.t.x == 1", facts(meta={"t": None}))


def test_broken_mapping_reads_as_missing() -> None:
    from collections.abc import Mapping

    class Broken(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("boom")

        def __iter__(self) -> Any:
            return iter(())

        def __len__(self) -> int:
            return 0

    assert ev("meta.role == null", facts(meta=Broken()))
    assert not ev('meta.role == "x"', facts(meta=Broken()))


def test_fields_property() -> None:
    c = compile_condition(
        'kind == "chat" and meta.role == "x" or claims.any(c, c.label == "red")', SCHEMA
    )
    assert c.fields == frozenset({"kind", "meta.role", "claims", "claims.label"})
    assert isinstance(c, Condition)
    assert c.text.startswith("kind")


# -- comparisons -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('sender == "alice"', True),
        ('sender != "alice"', False),
        ('sender < "b"', True),
        ('sender <= "alice"', True),
        ('sender > "alice"', False),
        ('sender >= "alicf"', False),
        ("risk.score == 0.7", True),
        ("risk.score != 0.7", False),
        ("risk.score < 1", True),
        ("risk.score <= 0.7", True),
        ("risk.score > 0.7", False),
        ("risk.score >= 0.5", True),
        ("lineage.depth == 2", True),
        ("hub == true", True),
        ("hub != true", False),
        ("hub == false", False),
        ("hub != false", True),
        ("0.5 <= risk.score", True),  # a constant on the left is flipped
        ("1 < risk.score", False),
        ('"alice" == sender', True),
        ("null == meta.absent", True),
        ("lineage.depth < risk.score", False),  # field against field
        ("risk.score > sender.reputation", False),
        ("sender == sender", True),
        ("meta.n == lineage.depth", False),  # ANY against a field, checked at run time
        ("meta.n > lineage.depth", True),
        ("1 == 1", True),
        ('"a" < "b"', True),
    ],
)
def test_comparison_operators(text: str, want: bool) -> None:
    assert ev(text) is want


@pytest.mark.parametrize(
    "text",
    [
        'sender == "x"',
        'sender != "x"',
        'sender < "x"',
        'sender >= "a"',
        "risk.score != 1",
        "risk.score < 1",
        "risk.score <= 1",
        "risk.score > 0",
        "risk.score >= 0",
        "hub != true",
        "hub != false",
        "hub == false",
        'sender in ["x"]',
        'sender not in ["x"]',
        "sender not in recipients",
        "sender in recipients",
        'sender matches "."',
        'meta.absent != "x"',
        "meta.absent != 3",
        "meta.absent >= 0",
        "meta.absent < 1",
        "meta.absent < meta.absent2",
        "meta.absent == meta.absent2",  # two missing values are not equal
        "meta.absent != meta.absent2",
        "meta.absent not in [1]",
        'startswith(sender, "")',
        'contains(sender, "")',
        "len(sender) >= 0",
        'lower(sender) != "x"',
    ],
)
def test_missing_values_are_false(text: str) -> None:
    missing = facts(sender=None, score=None, hub=None, recipients=None)
    assert ev(text, missing) is False


def test_null_comparisons() -> None:
    missing = facts(sender=None)
    assert ev("sender == null", missing)
    assert not ev("sender != null", missing)
    assert not ev("sender == null")
    assert ev("sender != null")
    assert ev("meta.absent == null")
    assert not ev("meta.absent != null")
    assert ev("lower(sender) == null", missing)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("meta.v >= 3", "x"),
        ("meta.v < 3", "x"),
        ('meta.v >= "a"', 5),
        ('meta.v < "z"', 5),
        ("meta.v == 1", True),  # a bool is not a number here
        ("meta.v == 0", False),
        ("meta.v >= 0.5", True),
        ("meta.v < 2", False),
        ("meta.v in [1, 2]", True),
        ("meta.v in [0]", False),
        ('meta.v in ["a"]', {"a": 1}),  # unhashable
        ('meta.v in ["a"]', ["a"]),
        ('meta.v not in ["a"]', 5),  # a mismatch, not "true because absent"
        ('meta.v not in ["a"]', True),
        ("meta.v not in [1]", "x"),
        ('meta.v != "a"', 5),
        ("meta.v != 1", "x"),
        ("meta.v != 1", True),
        ("meta.v != true", "x"),
        ("meta.v == true", 1),
        ('meta.v matches "a"', 5),
        ('lower(meta.v) == "a"', 5),
        ('startswith(meta.v, "a")', 5),
        ('contains(meta.v, "a")', 5),
        ("len(meta.v) == 1", 5),
        ("meta.v == meta.w", 1),  # w is "1"
        ("meta.v < meta.w", 0),
        ("sender in meta.v", "alice"),  # a string is not a list
        ("meta.v", 1),  # only exactly true is true
        ("meta.v", "true"),
        ("meta.v.any(x, x == 1)", "1"),
    ],
)
def test_any_mismatch_is_false(text: str, value: Any) -> None:
    f = facts(meta={"v": value, "w": "1"})
    assert ev(text, f) is False
    deep = text.replace("meta.v", "meta.d.v").replace("meta.w", "meta.d.w")
    assert ev(deep, facts(meta={"d": {"v": value, "w": "1"}})) is False


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("meta.v >= 3", 3),
        ("meta.v >= 3", 3.5),
        ("meta.v == 1", 1),
        ("meta.v == 1", 1.0),
        ("meta.v in [1, 2]", 2),
        ('meta.v in ["a"]', "a"),
        ('meta.v not in ["a"]', "b"),
        ('meta.v != "a"', "b"),
        ("meta.v != 1", 2),
        ("meta.v != true", False),
        ("meta.v == true", True),
        ("meta.v", True),
        ('meta.v < "b"', "a"),
        ("meta.v == meta.v", "z"),
        ("sender in meta.v", ["alice"]),
        ("sender not in meta.v", ["bob"]),
    ],
)
def test_any_match_at_run_time(text: str, value: Any) -> None:
    assert ev(text, facts(meta={"v": value})) is True
    # the same through a two-key path (not inlined) and through a quantifier variable
    deep = text.replace("meta.v", "meta.d.v")
    assert ev(deep, facts(meta={"d": {"v": value}})) is True
    quant = "meta.l.any(x, " + text.replace("meta.v", "x") + ")"
    assert ev(quant, facts(meta={"l": [value]})) is True


def test_in_and_not_in() -> None:
    assert ev('sender in ["alice", "bob"]')
    assert not ev('sender not in ["alice", "bob"]')
    assert ev('sender not in ["x"]')
    assert ev('"bob" in recipients')
    assert not ev('"dave" in recipients')
    assert ev('"dave" not in recipients')
    assert ev("lineage.depth in [1, 2]")
    assert ev("lineage.depth in [2.0]")
    assert not ev("sender in []")
    assert ev('"x" in meta.tags')
    assert not ev('"x" in meta.absent')
    assert not ev('"x" not in meta.absent')
    assert not ev('"x" in recipients', facts(recipients=None))
    assert not ev('"x" not in recipients', facts(recipients=None))
    # a constant in an ANY value: only a list (or set) holds things; null is in nothing
    odd = facts(meta={"s": "xyz", "t": ("x",), "d": {"x": 1}, "n": 3, "l": [[1], "x"]})
    assert not ev('"x" in meta.s', odd) and not ev('"x" not in meta.s', odd)
    assert ev('"x" in meta.t', odd) and not ev('"x" in meta.d', odd)
    assert not ev('"x" in meta.n', odd) and ev('"x" in meta.l', odd)
    assert ev('"y" not in meta.l', odd)


def test_named_lists() -> None:
    lists = {"trusted": ["alice", "bob"], "levels": [1, 2]}
    assert ev("sender in trusted", lists=lists)
    assert not ev("sender not in trusted", lists=lists)
    assert ev("sender not in trusted", facts(sender="eve"), lists=lists)
    assert ev("lineage.depth in levels", lists=lists)
    assert ev("len(trusted) == 2", lists=lists)
    assert ev("claims.any(c, c.reach in levels)", lists=lists)
    e = err("sender in levels", lists=lists)
    assert "no str items" in e.message
    e = err("trusted == 1", lists=lists)
    assert "list" in e.message
    e = err("sender in nope", lists=lists)
    assert e.col == 11 and "did you mean" not in e.hint
    e = err("sender in trustd", lists=lists)
    assert e.hint == "did you mean 'trusted'?"
    e = err("sender in bad", lists={"bad": ["a", True]})
    assert e.col == 11 and "bad" in e.message


def test_matches() -> None:
    assert ev('sender matches "^al"')
    assert ev('sender matches "ic"')  # search, not fullmatch
    assert not ev('sender matches "^ic"')
    assert ev(r'content matches "hunter\d"')
    assert ev(r'content matches "hunter\\d"')
    assert ev('meta.role matches "sum+ar"')
    assert not ev('meta.n matches "3"')
    assert ev('not (sender matches "bob")')


# -- functions ---------------------------------------------------------------------------------


def test_functions() -> None:
    f = facts(sender="Alice-Bot")
    assert ev('lower(sender) == "alice-bot"', f)
    assert ev('upper(sender) == "ALICE-BOT"', f)
    assert ev('lower("ABC") == "abc"')
    assert ev("len(sender) == 9", f)
    assert ev("len(recipients) == 2")
    assert ev("len(claims) == 2")
    assert ev("len(meta.tags) == 2")
    assert ev("len(claims) == 0", facts(claims=[]))
    assert not ev("len(claims) >= 0", facts(claims=None))
    assert ev('startswith(sender, "Ali")', f)
    assert ev('endswith(sender, "Bot")', f)
    assert ev('startswith(sender, ["x", "Ali"])', f)
    assert ev('endswith(sender, ["x", "-Bot"])', f)
    assert not ev('startswith(sender, ["x", "y"])', f)
    assert ev("startswith(sender, meta.p)", facts(sender="ab", meta={"p": "a"}))
    assert ev("startswith(sender, meta.p)", facts(sender="ab", meta={"p": ["x", "a"]}))
    assert not ev("startswith(sender, meta.p)", facts(sender="ab", meta={"p": 1}))
    assert not ev("endswith(sender, meta.p)", facts(sender="ab", meta={"p": [1]}))
    assert ev('contains(content, "api key")')
    assert not ev('contains(content, "password")')
    assert ev('contains(recipients, "bob")')
    assert not ev('contains(recipients, "dave")')
    assert ev('contains(meta.tags, "x")')
    assert ev('contains(meta.role, "mm")')
    assert not ev("contains(meta.role, meta.n)")
    assert ev("contains(content, sender)", facts(content="hi alice"))
    assert not ev('contains(meta.absent, "x")')
    assert ev('contains(lower(content), "api")')


# -- boolean logic -----------------------------------------------------------------------------


@pytest.mark.parametrize("a", [True, False])
@pytest.mark.parametrize("b", [True, False])
@pytest.mark.parametrize("c", [True, False])
def test_and_or_not_truth_tables(a: bool, b: bool, c: bool) -> None:
    f = facts(meta={"a": a, "b": b, "c": c})
    assert ev("meta.a and meta.b", f) is (a and b)
    assert ev("meta.a or meta.b", f) is (a or b)
    assert ev("not meta.a", f) is (not a)
    assert ev("meta.a or meta.b and meta.c", f) is (a or (b and c))  # and binds tighter
    assert ev("(meta.a or meta.b) and meta.c", f) is ((a or b) and c)
    assert ev("not meta.a and meta.b", f) is ((not a) and b)  # not binds tighter than and
    assert ev("not (meta.a and meta.b)", f) is (not (a and b))
    assert ev("meta.a == true and not meta.b == true", f) is (a and not b)  # not (b == true)
    assert ev("not not meta.a", f) is a


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("true_at", [None, 0, 1, -1])
def test_nary_and_or(n: int, true_at: int | None) -> None:
    vals = [False] * n
    if true_at is not None:
        vals[true_at] = True
    f = facts(meta={f"v{i}": v for i, v in enumerate(vals)})
    # mix the shapes that get fused (== / in / bool field) and plain closures
    shapes = ["meta.v{} == true", "meta.v{}", "meta.v{} in [1] or meta.v{} == true"]
    ops = [shapes[i % 2].format(i) for i in range(n)]
    assert ev(" or ".join(ops), f) is any(vals)
    assert ev(" and ".join(ops), f) is all(vals)
    assert ev(" and ".join(f"not ({o})" for o in ops), f) is not any(vals)


# operand -> the facts that make it false (every operand is true on facts())
OPERANDS = {
    "kind": ('kind == "chat"', {"kind": "x"}),
    "kind_in": ('kind in ["chat", "y"]', {"kind": "x"}),
    "sender_in": ('sender in ["alice"]', {"sender": "x"}),
    "hub": ("hub", {"hub": None}),
    "score": ("risk.score > 0.5", {"score": 0.1}),
    "depth": ("lineage.depth == 2", {"depth": 0}),
    "role": ('meta.role == "summarizer"', {"meta": {}}),
}


@pytest.mark.parametrize(
    "names",
    [
        ["kind", "sender_in"],
        ["kind", "hub"],
        ["hub", "kind"],
        ["hub", "sender_in"],
        ["hub", "score"],
        ["score", "kind_in"],
        ["score", "hub"],
        ["kind_in", "score"],
        ["role", "score"],
        ["kind", "sender_in", "depth"],
        ["score", "sender_in", "depth"],
        ["hub", "kind", "depth", "score"],
    ],
)
def test_fused_and_or_shapes(names: list[str]) -> None:
    texts = [OPERANDS[n][0] for n in names]
    both = compile_condition(" and ".join(texts), SCHEMA)
    either = compile_condition(" or ".join(texts), SCHEMA)
    for truth in itertools.product([True, False], repeat=len(names)):
        f = facts()
        for name, is_true in zip(names, truth, strict=True):
            if not is_true:
                f.update(OPERANDS[name][1])
        assert both(f) is all(truth), (texts, truth)
        assert either(f) is any(truth), (texts, truth)


def _evaluate(schema: Any, text: str, f: Any, generated: bool) -> bool:
    """``text`` over ``f`` by its closures alone, or by the generated function alone."""
    compiler = Compiler(schema)
    cond = compiler.compile(text)
    if generated:
        return bool(program(compiler, [Entry(cond, True)])(f))
    return cond.fn(f)


@pytest.mark.parametrize("generated", [False, True], ids=["closures", "generated"])
def test_short_circuit(generated: bool) -> None:
    calls: list[str] = []

    def spy(name: str) -> Field:
        def get(f: dict[str, Any]) -> Any:
            calls.append(name)
            return f.get(name)

        return Field(Type.STR, get)

    schema = {"a": spy("a"), "b": spy("b"), "c": spy("c")}
    f = {"a": "1", "b": "2", "c": "3"}

    def run(text: str) -> bool:
        return _evaluate(schema, text, f, generated)

    assert not run('a == "x" and b == "2"')
    assert calls == ["a"]
    calls.clear()
    assert run('a == "1" or b == "x"')
    assert calls == ["a"]
    calls.clear()
    assert run('a == "x" or b == "x" or c == "3"')
    assert calls == ["a", "b", "c"]
    calls.clear()
    assert not run('a == "x" and (b == "2" or c == "3")')
    assert calls == ["a"]
    calls.clear()
    assert run('a == "1" and a != "x" and (a == "1" or b == "x")')
    # generated code reads a field once per call, however often the condition uses it
    assert calls == (["a"] if generated else ["a", "a", "a"])


def test_negated_membership_and_nested_same_op() -> None:
    assert ev('not (sender in ["x"])')
    assert ev('not (sender in ["x"])', facts(sender=None))  # not (false)
    assert not ev('not (sender == "alice")')
    assert ev('(hub and kind == "chat") and (sender == "alice" and lineage.depth == 2)')
    assert ev('(kind == "x" or hub) or (sender == "x")')
    assert ev("meta.n == lineage.depth or meta.absent == lineage.depth or true")
    assert not ev("meta.n == meta.absent")


def test_constant_folding_and_literals_in_boolean_position() -> None:
    assert ev("true")
    assert not ev("false")
    assert ev("not false")
    assert ev("true and hub")
    assert ev('"a" in ["a"]')
    assert ev('"b" not in ["a"]')


# -- quantifiers -------------------------------------------------------------------------------


def test_quantifiers() -> None:
    assert ev('claims.any(c, c.label == "yellow" and c.reach >= 3)')
    assert not ev('claims.any(c, c.label == "red")')
    assert ev('claims.any(c, c.label in ["red", "green"])')
    assert ev('claims.all(c, c.label in ["yellow", "green"])')
    assert not ev('claims.all(c, c.label == "yellow")')
    assert ev("claims.all(c, c.reach >= 1)")
    assert ev("claims.any(c, c.grounded)")
    assert not ev("claims.all(c, c.grounded)")
    assert ev("claims.any(c, not c.grounded)")
    assert ev("claims.count(c, c.reach >= 1) == 2")
    assert ev('claims.count(c, c.label == "yellow") == 1')
    assert ev("claims.count(c, c.grounded) == 1")
    assert ev("claims.count(c, c.risk > 0.5 and not c.grounded) >= 1")
    assert ev('claims.any(c, c.meta.src == "tool")', facts(claims=[{"meta": {"src": "tool"}}]))
    assert ev('claims.any(c, "x" in c.tags)', facts(claims=[{"tags": ["x"]}]))
    assert not ev("claims.any(c, c.reach > 5 and c.reach < 9)")
    assert ev("claims.all(c, c.reach > 0 and c.reach < 9)")
    assert not ev("claims.all(c, c.reach > 1 and c.reach < 9)")
    assert ev("claims.count(c, c.reach > 0 and c.reach < 3) == 1")
    assert not ev("claims.any(c, c.grounded)", facts(claims=[{"grounded": False}, {}]))
    assert ev("claims.all(c, not c.grounded)", facts(claims=[{"grounded": False}, {}]))
    assert ev("claims.count(c, c.grounded) == 0", facts(claims=[{"grounded": "yes"}]))
    assert ev('claims.all(c, c.label != "red")')  # != is not a member test
    assert not ev('claims.all(c, c.label in ["yellow"])')
    assert ev('claims.any(c, not (c.label in ["yellow"]))')


@pytest.mark.parametrize("body", ['c.label == "x"', "c.grounded", "c.reach > 0 and c.risk > 0"])
@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("k", [-1, 0, 1, 1.5, 2, 3, 1e999])
@pytest.mark.parametrize("hits", [0, 1, 2, 3])
def test_count_comparisons(body: str, op: str, k: float, hits: int) -> None:
    items = [{"label": "x", "grounded": True, "reach": 1, "risk": 1}] * hits
    items += [{"label": "y", "grounded": False, "reach": 0, "risk": 0}] * 2
    want = {"==": hits == k, "!=": hits != k, "<": hits < k, "<=": hits <= k}
    want.update({">": hits > k, ">=": hits >= k})
    lit = "1e999" if k == 1e999 else str(k)
    text = f"claims.count(c, {body}) {op} {lit}"
    assert ev(text, facts(claims=items)) is want[op], text
    assert ev(text, facts(claims=None)) is False
    listed = f"meta.l.count(x, x == 1) {op} {lit}"
    assert ev(listed, facts(meta={"l": [1] * hits + [2]})) is want[op]
    assert ev(listed, facts(meta={"l": "11"})) is False


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("value", ["", "ab", [], [1, 2], {"a": 1}, None, 5, True])
def test_len_comparisons(op: str, value: Any) -> None:
    text = f"len(meta.v) {op} 2"
    got = ev(text, facts(meta={"v": value}))
    if isinstance(value, (str, list, dict)):
        n = len(value)
        want = {"==": n == 2, "!=": n != 2, "<": n < 2, "<=": n <= 2, ">": n > 2, ">=": n >= 2}
        assert got is want[op]
    else:
        assert got is False


def test_quantifier_outer_fields_and_nesting() -> None:
    assert ev('claims.any(c, c.label == "yellow" and sender == "alice")')
    assert not ev('claims.any(c, c.label == "yellow" and sender == "bob")')
    assert ev("claims.any(c, c.reach > lineage.depth)")
    assert ev("claims.any(c, claims.any(d, d.reach > c.reach))")
    assert not ev("claims.all(c, claims.any(d, d.reach > c.reach))")
    assert ev("claims.count(c, claims.all(d, d.reach <= c.reach)) == 1")
    two = facts(claims=[{"sources": [{"kind": "tool"}, {"kind": "human"}]}, {"sources": []}])
    assert ev('claims.any(c, c.sources.any(s, s.kind == "human"))', two)
    assert ev('claims.count(c, c.sources.all(s, s.kind != "agent")) == 2', two)
    assert ev('claims.any(c, c.sources.any(s, s.kind == "tool" and sender == "alice"))', two)
    assert ev('claims.any(c, c.sources.any(s, s.kind == "tool" and len(c.sources) == 2))', two)
    # a variable shadows a field of the same name
    assert ev('claims.any(sender, sender.label == "green")')


def test_quantifier_empty_and_missing() -> None:
    empty, missing = facts(claims=[]), facts(claims=None)
    for body in ['c.label == "x"', "c.grounded", "c.reach > 0 and c.reach < 9", "sender == c.key"]:
        assert not ev(f"claims.any(c, {body})", empty)
        assert ev(f"claims.all(c, {body})", empty)  # vacuous truth
        assert ev(f"claims.count(c, {body}) == 0", empty)
        assert not ev(f"claims.any(c, {body})", missing)
        assert not ev(f"claims.all(c, {body})", missing)
        assert not ev(f"claims.count(c, {body}) >= 0", missing)


def test_quantifier_over_plain_lists() -> None:
    assert ev('recipients.any(r, r == "bob")')
    assert ev('recipients.all(r, startswith(r, "b") or r == "carol")')
    assert ev('recipients.count(r, r != "bob") == 1')
    assert ev("meta.tags.any(t, t == sender)", facts(meta={"tags": ["alice"]}))
    assert not ev('meta.tags.any(t, t == "x")', facts(meta={"tags": "x"}))  # not a list
    assert ev('meta.items.any(i, i.k == "v")', facts(meta={"items": [{"k": "v"}]}))


# -- macros ------------------------------------------------------------------------------------

MACROS = {
    "is_hub": 'hub or meta.role in ["planner", "summarizer"]',
    "risky": "risk.score >= 0.6 or lineage.depth > 3",
    "hub_risk": "is_hub and risky",
    "has_yellow": 'claims.any(c, c.label == "yellow")',
    "flag": "meta.flag",
}


def test_macros() -> None:
    assert ev("is_hub", macros=MACROS)
    assert ev("hub_risk", macros=MACROS)
    assert not ev("hub_risk", facts(score=0.1), macros=MACROS)
    assert ev('has_yellow and kind == "chat"', macros=MACROS)
    assert ev("not has_yellow or flag", macros=MACROS)
    assert ev("claims.any(c, c.reach > 2 and is_hub)", macros=MACROS)  # macro inside a body
    assert ev('claims.any(c, c.label == "yellow" and flag)', macros=MACROS)
    c = compile_condition("hub_risk", SCHEMA, MACROS)
    assert {"hub", "meta.role", "risk.score", "lineage.depth"} <= c.fields


def test_macros_compile_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = conditions._Parser.__init__

    def counting(self: Any, text: str) -> None:
        parsed.append(text)
        real(self, text)

    monkeypatch.setattr(conditions._Parser, "__init__", counting)
    comp = Compiler(SCHEMA, MACROS)
    for _ in range(3):
        comp.compile("hub_risk and is_hub")
    assert parsed.count(MACROS["is_hub"]) == 1
    assert parsed.count(MACROS["hub_risk"]) == 1


def test_macro_cycles() -> None:
    e = err("a", macros={"a": "a"})
    assert "cycle" in e.message and "a -> a" in e.message and e.macro == "a"
    e = err("hub and a", macros={"a": "hub and b", "b": "kind == 'x' or a"})
    assert "a -> b -> a" in e.message
    assert e.macro == "b" and e.col == 16  # the column of "a" inside macro b


def test_macro_chains() -> None:
    chain = {f"m{i}": f"m{i + 1}" for i in range(40)} | {"m40": "hub"}
    assert ev("m0", macros=chain)
    deep = {f"m{i}": f"m{i + 1}" for i in range(300)} | {"m300": "hub"}
    e = err("m0", macros=deep)
    assert "nested more than" in e.message


def test_macro_errors_name_the_macro() -> None:
    e = err("m", macros={"m": "sender == 1"})
    assert e.macro == "m" and e.col == 8 and "in macro 'm'" in e.message
    e = err("m", macros={"m": "sender"})
    assert e.macro == "m" and "true/false" in e.message
    comp = Compiler(SCHEMA, {"ok": "hub", "broken": "nope == 1"})
    comp.compile("ok")  # an unused broken macro does not break other rules...
    with pytest.raises(ConditionError) as info:
        comp.check_macros()  # ...but can be found at load
    assert info.value.macro == "broken"
    e = err("is_hub(1)", macros=MACROS)
    assert "not a function" in e.hint


# -- errors: column and hint -------------------------------------------------------------------


def test_error_format() -> None:
    e = ConditionError("boom", 3, "try this")
    assert str(e) == "col 3: boom (hint: try this)"
    assert str(ConditionError("boom", 1)) == "col 1: boom"


@pytest.mark.parametrize(
    ("text", "col", "message", "hint"),
    [
        # unknown names
        ('sendr == "a"', 1, "unknown field 'sendr'", "did you mean 'sender'?"),
        ('kind == "a" and risk.scor > 1', 17, "unknown field 'risk.scor'", "'risk.score'"),
        ("zzzzz", 1, "unknown field 'zzzzz'", "known names: "),
        ('claims.any(c, c.lable == "x")', 15, "unknown field 'c.lable'", "'c.label'"),
        ("meta == 1", 1, "meta needs a key", "meta.role"),
        ("claims.label == 1", 1, "claims is a list of records", "claims.any"),
        # type errors
        ("sender == 3", 8, "cannot compare str with num", 'quote the number: "3"'),
        ('risk.score > "3"', 12, "cannot compare num with str", "remove the quotes"),
        ('risk.score > "x"', 12, "cannot compare num with str", "same type"),
        ("hub > false", 5, "cannot order booleans", "use == or !="),
        ("sender < null", 8, "cannot order null", "== null"),
        ('recipients == ["a"]', 12, "cannot compare a list", "in / not in"),
        ("claims != 1", 8, "list of records", "claims.any"),
        ('sender in "abc"', 11, "must be a list", "contains(x, sub)"),
        ("hub in [1]", 1, "left side of 'in'", ""),
        ('lineage.depth in ["a"]', 15, "no num items", "remove the quotes"),
        ('risk.score matches "1"', 1, "'matches' needs a string", ""),
        ("sender matches sender", 16, "must be a string literal", "e.g."),
        ('sender matches "(ab"', 16, "invalid regex", "check the pattern"),
        ('kind == "x" or content matches "[z-a]"', 32, "invalid regex", ""),
        ("lower(risk.score) == 1", 7, "lower() needs a str", ""),
        ("len(hub) == 1", 5, "len() needs a", ""),
        ("startswith(sender, 1)", 20, "startswith() needs a", ""),
        ('startswith(sender, ["a", 1])', 20, "alternatives must be strings", ""),
        ("contains(sender, 1)", 18, "never a substring", "quote it"),
        ('contains(claims, "x")', 10, "contains() needs a", ""),
        ("risk.score", 1, "must be true/false", "compare it"),
        ("lower(sender) and hub", 1, "expected a true/false condition", ""),
        ("not sender", 5, "expected a true/false condition", ""),
        ('sender.any(c, c == "x")', 1, "needs a list", "quantifiers work on list"),
        ("claims.any(c, c)", 15, "c is a record", "c.label"),
        ("claims.any(c, c.reach)", 15, "expected a true/false condition", ""),
        ("len(claims)", 1, "must be true/false", ""),
        # functions
        ("lowr(sender) == 'a'", 1, "unknown function 'lowr'", "did you mean 'lower'?"),
        ("frobnicate(sender)", 1, "unknown function", "known: lower"),
        ("sender(1)", 1, "unknown function", "not a function"),
        ("hub and lower(sender, 1) == 'a'", 9, "lower() takes 1 argument, got 2", "lower(sender)"),
        ("startswith(sender)", 1, "startswith() takes 2 arguments, got 1", ""),
        ("len() == 1", 1, "len() takes 1 argument, got 0", ""),
        ("claims.anny(c, true)", 8, "unknown quantifier 'anny'", "did you mean 'any'?"),
        ("claims.foo(c, true)", 8, "unknown quantifier 'foo'", "any, all or count"),
        ("claims.any(1, true)", 12, "expected a variable name", "claims.any(c, "),
        ("claims.any(c true)", 14, "expected ','", ""),
        ('recipients.any(r, rr == "x")', 19, "unknown field 'rr'", "did you mean 'r'?"),
        ("claims.any(c, c.sources.any(s, s.kid == 'x'))", 32, "unknown field", "'s.kind'"),
        # bad tokens
        ("sender @ 1", 8, "unexpected character '@'", "remove it"),
        ('sender = "a"', 8, "unexpected character '='", "use =="),
        ("hub && hub", 5, "unexpected '&&'", "use and"),
        ("hub || hub", 5, "unexpected '||'", "use or"),
        ("!hub", 1, "unexpected character '!'", "use not"),
        ("hub & hub", 5, "unexpected character '&'", "use and"),
        ("3abc == 1", 1, "bad number", ""),
        ("sender == \u00b2", 11, "unexpected character", ""),
        ("caf\u00e9 == 1", 4, "unexpected character", ""),
        ("\u0663 == 1", 1, "unexpected character", ""),
        ("meta.0 == 1", 6, "cannot start with a digit", ""),
        ("meta. role == 1", 5, "no spaces allowed", ""),
        ("meta.== 1", 6, "expected a name after '.'", ""),
        ("- 1 < risk.score", 1, "'-' must be followed by a number", ""),
        # structure
        ("", 1, "empty condition", "e.g."),
        ("   ", 1, "empty condition", ""),
        ("(hub and kind == 'x'", 1, "unclosed '('", "add ')'"),
        ("hub and (kind == 'x' or (hub)", 9, "unclosed '('", "add ')'"),
        ("(hub kind)", 6, "expected ')'", "'(' opened at col 1"),
        ("hub)", 4, "unmatched ')'", ""),
        ("lower(sender == 'a'", 6, "unclosed '('", ""),
        ("hub and (", 9, "unclosed '('", ""),
        ("lower(", 6, "unclosed '('", ""),
        ("lower(sender,", 6, "unclosed '('", ""),
        ("claims.any(c", 11, "unclosed '('", ""),
        ("claims.any(c,", 11, "unclosed '('", ""),
        ('sender in ["a",', 11, "unclosed '['", ""),
        ("sender == )", 11, "expected a value, got ')'", ""),
        ("claims.any(c, c.grounded", 11, "unclosed '('", ""),
        ('sender in ["a", "b"', 11, "unclosed '['", "add ']'"),
        ('sender in ["a" "b"]', 16, "expected ']'", ""),
        ("sender in [hub]", 12, "list items must be", ""),
        ("sender in [true]", 12, "list items must be", ""),
        ('sender == "abc', 11, "unclosed string", 'add a closing "'),
        ("sender == 'abc", 11, "unclosed string", "add a closing '"),
        ("sender ==", 10, "ends too early", ""),
        ("hub and", 8, "ends too early", ""),
        ("and hub", 1, "keyword 'and'", "both sides"),
        ("in [1]", 1, "keyword 'in'", "on its left"),
        ("hub hub", 5, "unexpected 'hub'", "'and' / 'or'"),
        ("hub not hub", 5, "unexpected 'not'", "'and not"),
        ("risk.score == 1 == 1", 17, "cannot be chained", "'and'"),
        ("1 < risk.score < 2", 16, "cannot be chained", ""),
        ("hub == not hub", 8, "'not' cannot be an operand", "(not ...)"),
    ],
)
def test_errors(text: str, col: int, message: str, hint: str) -> None:
    e = err(text, macros={"m": "hub"})
    assert e.col == col, str(e)
    assert message in e.message, str(e)
    assert hint in e.hint, str(e)
    assert str(e).startswith(f"col {col}: ")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert ev("(" * 30 + "hub" + ")" * 30)
    assert ev("not " * 30 + "hub")
    e = err("(" * 500 + "hub" + ")" * 500)
    assert "nested" in e.message
    e = err("not " * 500 + "hub")
    assert "nested" in e.message
    # long flat chains are not nesting
    assert ev(" and ".join(["hub"] * 500))
    assert ev(" or ".join(['sender == "x"'] * 500 + ["hub"]))


def test_error_column_counts_into_multiline_text() -> None:
    e = err('kind == "chat"\n  and sendr == "x"')
    assert e.col == 22 and "sendr" in e.message


def test_parenthesised_comparisons_may_be_compared() -> None:
    assert ev("(risk.score > 0.5) == true")
    assert ev("(risk.score > 0.5) == (lineage.depth == 2)")


# -- explain / values --------------------------------------------------------------------------


def test_explain() -> None:
    c = compile_condition(
        'hub and (risk.score > 0.9 or kind == "chat") and sender == "bob"', SCHEMA
    )
    assert c.explain(facts()) == [
        ("hub", True),
        ('(risk.score > 0.9 or kind == "chat")', True),
        ('sender == "bob"', False),  # evaluated even though the whole is decided
        ('hub and (risk.score > 0.9 or kind == "chat") and sender == "bob"', False),
    ]
    c = compile_condition(" not (meta.flag) ", SCHEMA)
    assert c.explain(facts()) == [("(meta.flag)", True), ("not (meta.flag)", False)]
    c = compile_condition("risk.score >= 0.5", SCHEMA)
    assert c.explain(facts()) == [("risk.score >= 0.5", True)]
    c = compile_condition("is_hub or meta.v", SCHEMA, MACROS)
    assert c.explain(facts(meta={"v": 1})) == [
        ("is_hub", True),
        ("meta.v", False),
        ("is_hub or meta.v", True),
    ]


def test_values() -> None:
    c = compile_condition(
        'risk.score > 0.5 and meta.role == "x" and claims.any(c, c.reach > lineage.depth)',
        SCHEMA,
    )
    vals = c.values(facts())
    assert vals["risk.score"] == 0.7
    assert vals["meta.role"] == "summarizer"
    assert vals["lineage.depth"] == 2
    assert "claims" in vals


# -- robustness and safety ---------------------------------------------------------------------

WEIRD = [None, 0, 1, -1.5, True, False, "", "x", "3", [], [1, "a"], {}, {"k": 1}, (1,), 1e308]

ROBUST = [
    "meta.v == 1",
    "meta.v != 1",
    'meta.v == "x"',
    'meta.v != "x"',
    "meta.v >= 1",
    "meta.v < 1",
    'meta.v > "a"',
    'meta.v <= "a"',
    "meta.v == true",
    "meta.v != false",
    "meta.v == null",
    "meta.v in [0, 1]",
    'meta.v in ["x"]',
    'meta.v not in ["x", 1]',
    "meta.v not in [0]",
    "meta.v == meta.w",
    "meta.v < meta.w",
    'meta.v matches "x"',
    'lower(meta.v) == "x"',
    "len(meta.v) > 0",
    'startswith(meta.v, "x")',
    'endswith(meta.v, ["x"])',
    "startswith(meta.v, meta.w)",
    'contains(meta.v, "x")',
    "contains(meta.v, meta.w)",
    "meta.v in meta.w",
    "meta.v not in meta.w",
    "meta.v.k == 1",
    "meta.v.any(x, x == 1)",
    "meta.v.all(x, x.k == 1)",
    "meta.v.count(x, x) > 0",
    "meta.v and meta.w",
    "not meta.v or meta.w",
    # two keys deep: the generic (not inlined) paths
    "meta.v.k == 1",
    "meta.v.k == 0",
    'meta.v.k != "x"',
    "meta.v.k >= 1",
    'meta.v.k < "x"',
    "meta.v.k == true",
    "meta.v.k in [0, 1]",
    'meta.v.k in ["x"]',
    "meta.v.k not in [1]",
]


@pytest.mark.parametrize("text", ROBUST)
def test_any_values_never_raise(text: str) -> None:
    cond = compile_condition(text, SCHEMA)
    for v in WEIRD:
        for w in WEIRD[:8]:
            out = cond(facts(meta={"v": v, "w": w}))
            assert out is True or out is False
        assert cond(facts(meta=v)) in (True, False)


def test_typed_getters_returning_garbage_do_not_raise() -> None:
    f = facts(score="oops", sender=3, depth=None, recipients="abc", claims=None)
    for text in [
        "risk.score >= 0.5",
        "risk.score < 0.5",
        'sender >= "a"',
        "lineage.depth > 1",
        '"a" in recipients',
        'claims.any(c, c.label == "x")',
    ]:
        assert compile_condition(text, SCHEMA)(f) in (True, False)


def test_never_eval_exec_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*a: Any, **k: Any) -> Any:
        raise AssertionError("eval/exec/compile called")

    texts = [
        'kind == "chat" and sender in ["alice", "b"]',
        'meta.role == "summarizer" and risk.score >= 0.5',
        r'sender matches "^a\w+" or lower(content) matches "key"',
        'claims.count(c, c.label == "yellow" and c.reach >= 3) >= 1',
        'claims.any(c, c.label == "yellow" and sender == "alice")',
        "hub_risk and sender in trusted",
    ]
    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    comp = Compiler(SCHEMA, MACROS, {"trusted": ["alice"]})
    conds = [comp.compile(t) for t in texts]
    results = [c(facts()) for c in conds]
    explained = [c.explain(facts()) for c in conds]
    monkeypatch.undo()
    assert all(results) and len(explained) == len(texts)


def test_source_has_no_eval_exec_compile_calls() -> None:
    tree = ast.parse(inspect.getsource(conditions))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"eval", "exec", "compile", "__import__"}, node.func.id


def test_generated_code_is_built_from_ast_nodes_never_from_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an operator writes reaches the generated function only as constants: compile()
    gets an ast.Module, and no name in it comes from the condition's text."""
    from ostracon import codegen

    modules: list[ast.Module] = []
    real = builtins.compile

    def checking(source: Any, *args: Any, **kw: Any) -> Any:
        assert isinstance(source, ast.Module), type(source)
        modules.append(source)
        return real(source, *args, **kw)

    monkeypatch.setattr(codegen, "compile", checking, raising=False)
    comp = Compiler(SCHEMA)
    text = "sender == \"__import__('os').system('x')\" or content matches \"os.system\""
    generated = program(comp, [Entry(comp.compile(text), True)])
    (module,) = modules
    names = {n.id for n in ast.walk(module) if isinstance(n, ast.Name)}
    assert not names & {"__import__", "os", "system", "eval", "exec"}
    strings = {n.value for n in ast.walk(module) if isinstance(n, ast.Constant)}
    assert "__import__('os').system('x')" in strings  # the text, as a constant
    assert generated(facts()) == []


def test_compiled_condition_is_reusable_and_call_matches_fn() -> None:
    c = compile_condition('claims.any(c, c.label == "yellow" and sender == "alice")', SCHEMA)
    f1, f2 = facts(), facts(sender="bob")
    for _ in range(3):
        assert c(f1) is True and c.fn(f1) is True
        assert c(f2) is False
    assert repr(c).startswith("Condition(")


def test_type_enum_and_field_defaults() -> None:
    fld = Field(Type.STR, _key("x"))
    assert fld.doc == "" and fld.record is None
    assert {t.name for t in Type} >= {"STR", "NUM", "BOOL", "LIST", "RECORDS", "ANY"}


# -- differential fuzz: the inlined/fused closures agree with the plain ones -------------------


class _Gen:
    """Random well-typed conditions over SCHEMA (most compile; the rest must raise cleanly)."""

    def __init__(self, seed: int) -> None:
        import random

        self.r = random.Random(seed)

    def pick(self, *xs: str) -> str:
        return self.r.choice(xs)

    def str_(self, var: str | None) -> str:
        opts = ["sender", "kind", "meta.s", "meta.d.s", '"alice"', "lower(sender)"]
        if var:
            opts += [f"{var}.label", f"{var}.key", f"{var}.meta.s"]
        return self.pick(*opts)

    def num(self, var: str | None) -> str:
        opts = ["risk.score", "lineage.depth", "meta.n", "meta.d.n", "len(recipients)", "2"]
        opts += ["len(meta.s)", "0.5", "-1"]
        if var:
            opts += [f"{var}.reach", f"{var}.risk"]
        elif self.r.random() < 0.3:
            opts.append(f"claims.count(c, {self.boolean(1, 'c')})")
        return self.pick(*opts)

    def cmp(self, var: str | None) -> str:
        r = self.r.random()
        if r < 0.35:
            op = self.pick("==", "!=", "<", "<=", ">", ">=")
            lit = self.pick('"alice"', '"chat"', '"x"')
            return f"{self.str_(var)} {op} {lit}"
        if r < 0.65:
            op = self.pick("==", "!=", "<", "<=", ">", ">=")
            return f"{self.num(var)} {op} {self.pick('0', '1', '2', '0.5', '3', self.num(var))}"
        if r < 0.8:
            lst = self.pick('["alice", "bob"]', '["chat"]', "trusted", '["x", "y", "z", "chat"]')
            return f"{self.str_(var)} {self.pick('in', 'not in')} {lst}"
        if r < 0.9:
            return f"{self.num(var)} {self.pick('in', 'not in')} {self.pick('[1, 2]', '[0.5]')}"
        return self.pick("hub == true", "hub != false", "meta.b == true", "meta.s == null")

    def boolean(self, depth: int, var: str | None = None) -> str:
        r = self.r.random()
        if depth <= 0 or r < 0.3:
            return self.cmp(var)
        if r < 0.38:
            leaf = ["hub", "meta.b", "is_hub", "flag"]
            if var:
                leaf.append(f"{var}.grounded")
            return self.pick(*leaf)
        if r < 0.48:
            return f"not {self.pick('(' + self.boolean(depth - 1, var) + ')', 'hub')}"
        if r < 0.75:
            n = self.r.randint(2, 5)
            op = self.pick(" and ", " or ")
            return op.join(f"({self.boolean(depth - 1, var)})" for _ in range(n))
        if r < 0.9 and var is None:
            q = self.pick("any", "all", "count")
            body = self.boolean(depth - 1, "c")
            if q == "count":
                op, k = self.pick(">=", ">", "==", "<"), self.pick("0", "1", "2")
                return f"claims.count(c, {body}) {op} {k}"
            return f"claims.{q}(c, {body})"
        return self.pick(
            'startswith(sender, "al")',
            'contains(content, "key")',
            'sender matches "^a"',
            'contains(meta.l, "x")',
            "meta.l.any(x, x == 1)",
            'contains(lower(content), "key")',
            'startswith(upper(sender), "AL")',
            'endswith(lower(meta.s), ["e", "x"])',
            'lower(meta.s) matches "^a"',
        )


def _plain_compiler(monkeypatch: pytest.MonkeyPatch) -> Compiler:
    """A compiler with every inlining/fusion switched off: the reference semantics."""
    monkeypatch.setattr(conditions, "_spec", lambda c: None)
    monkeypatch.setattr(conditions, "_cmp_dig", lambda *a: None)
    monkeypatch.setattr(
        conditions,
        "_in_dig",
        lambda b, k, items: conditions._in_const(False, conditions._dig(b, [k]), Type.ANY, items),
    )
    monkeypatch.setattr(conditions, "_cmp_fused_num", lambda *a: None)
    monkeypatch.setattr(conditions, "_case_of", lambda c: None)
    real_var_path = conditions.Compiler._var_path

    def no_item_mode(self: Any, node: Any, var: Any, rest: Any) -> Any:
        if var.level is None:
            raise conditions._NeedsEnv
        return real_var_path(self, node, var, rest)

    monkeypatch.setattr(conditions.Compiler, "_var_path", no_item_mode)
    monkeypatch.setattr(conditions, "_order", lambda costs: list(range(len(costs))))
    return Compiler(SCHEMA, MACROS | {"flag": "meta.b"}, {"trusted": ["alice", "carol"]})


GARBAGE = [None, "alice", "chat", "x", 0, 1, 2, 0.5, True, False, ["x"], {"a": 1}, ""]
TYPED = {
    "str": [None, "alice", "chat", "x", ""],
    "num": [None, 0, 1, 2, 0.5, -1],
    "bool": [None, True, False],
}


def _random_facts(r: Any, in_contract: bool) -> dict[str, Any]:
    """Facts whose ANY values are anything; typed values are of their type or None when
    in_contract, else anything too (then only "never raises" is promised)."""

    def g(kind: str = "any") -> Any:
        return r.choice(TYPED[kind] if in_contract and kind in TYPED else GARBAGE)

    claims = [
        {
            "label": g("str"),
            "key": g("str"),
            "reach": g("num"),
            "risk": g("num"),
            "grounded": g("bool"),
            "meta": {"s": g()},
        }
        for _ in range(r.randint(0, 3))
    ]
    meta = {"s": g(), "n": g(), "b": g(), "l": r.choice([None, ["x", 1], "x"]), "d": {"s": g()}}
    return facts(
        sender=g("str"),
        kind=g("str"),
        hub=g("bool"),
        score=g("num"),
        depth=g("num"),
        recipients=r.choice([None, [], ["a", "b", "c"]] + ([] if in_contract else ["abc"])),
        meta=r.choice([meta, None, {}]),
        claims=r.choice([claims, claims, None, []]),
    )


@pytest.mark.parametrize("seed", range(4))
def test_fused_closures_agree_with_plain_ones(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    gen, r = _Gen(seed), random.Random(seed)
    texts = [gen.boolean(3) for _ in range(300)]
    fast = Compiler(SCHEMA, MACROS | {"flag": "meta.b"}, {"trusted": ["alice", "carol"]})
    compiled = []
    for t in texts:
        try:
            compiled.append((t, fast.compile(t)))
        except ConditionError:
            pass  # a random expression may be ill-typed (e.g. len(meta.s) in a count)
    assert len(compiled) > 200
    plain = _plain_compiler(monkeypatch)
    good = [_random_facts(r, True) for _ in range(40)]
    bad = [_random_facts(r, False) for _ in range(20)]
    # all of them as one generated function too: memos shared between conditions
    generated = program(fast, [Entry(c, i) for i, (_, c) in enumerate(compiled)])
    for t, c in compiled:
        ref = plain.compile(t)
        for f in good:
            got, want = c(f), ref(f)
            assert got is want, (t, f)
        for f in bad:  # out of contract: no exception, a bool
            assert c(f) in (True, False) and ref(f) in (True, False)
    for f in good:
        assert generated(f) == [i for i, (_, c) in enumerate(compiled) if c.fn(f)], f
    for f in bad:
        generated(f)  # out of contract: no exception


# -- structure for the rules index: guards, conjuncts, operand order, shared closures ---------


def _walk(node: Any) -> Any:
    """Every node of a syntax tree, depth first, operands in written order."""
    yield node
    for name in ("operands", "operand", "left", "right", "args", "coll", "body"):
        child = getattr(node, name, None)
        for c in child if isinstance(child, list) else [child] if child is not None else []:
            yield from _walk(c)


def test_guards_conjuncts_and_record_guards() -> None:
    comp = Compiler(SCHEMA, MACROS | {"mine": 'sender == "alice" and kind in trusted'}, TRUSTED)
    cond = comp.compile(
        '(kind == "chat" and "x" == meta.k) and sender in trusted and hub and mine'
        ' and not (sender == "bob") and claims.any(c, c.reach > 1 and c.label in ["red"])'
        ' and claims.count(c, c.grounded) >= 2 and 1 < claims.count(c, c.key == "q")'
        ' and claims.count(c, c.key == "z") >= 0 and risky'
    )
    assert cond.guards == (
        ("kind", frozenset(["chat"])),
        ("meta.k", frozenset(["x"])),
        ("sender", frozenset(["alice", "carol"])),
        ("hub", frozenset([True])),
        ("sender", frozenset(["alice"])),  # the macro's and, flattened
        ("kind", frozenset(["alice", "carol"])),
    )
    # what a quantifier's body requires of some record (ostracon.codegen skips the loop
    # when no record has it)
    quants = [n for n in _walk(cond.node) if isinstance(n, conditions._Quant)]
    assert [comp._quant_guard(q) for q in quants] == [
        ("claims", "label", frozenset(["red"])),
        ("claims", "grounded", frozenset([True])),
        ("claims", "key", frozenset(["q"])),
        ("claims", "key", frozenset(["z"])),
    ]
    assert len(cond.conjuncts) == 12  # risky is an or: one conjunct
    f = facts()
    assert cond(f) is conditions.conjoin([fn for _, fn in cond.conjuncts])(f)  # type: ignore[misc]
    # cheapest first: field tests, then the claims loops
    names = [fields for fields, _ in cond.conjuncts]
    assert names[0] == frozenset(["hub"]) and "claims" in names[-1]
    plain = compile_condition('kind == "chat"', SCHEMA)
    assert plain.conjuncts == ((frozenset(["kind"]), plain.fn),)
    assert conditions.conjoin([]) is None


TRUSTED = {"trusted": ["alice", "carol"]}


@pytest.mark.parametrize("generated", [False, True], ids=["closures", "generated"])
def test_operands_run_cheapest_first(generated: bool) -> None:
    calls: list[str] = []

    def spy(name: str, t: Type = Type.STR) -> Field:
        def get(f: dict[str, Any]) -> Any:
            calls.append(name)
            return f.get(name)

        return Field(t, get)

    schema = {
        "a": spy("a"),
        "b": spy("b"),
        "xs": Field(
            Type.RECORDS, spy("xs", Type.RECORDS).get, record={"v": Field(Type.NUM, _key("v"))}
        ),
    }
    f = {"a": "1", "b": "2", "xs": [{"v": 1}, {"v": 2}]}

    def run(text: str) -> bool:
        return _evaluate(schema, text, f, generated)

    assert not run('xs.any(x, x.v > 5) and b matches "^3" and a == "x"')
    assert calls == ["a"]  # the comparison first, the regex next, the loop last
    calls.clear()
    assert run('xs.any(x, x.v > 1) or a == "1"')
    assert calls == ["a"]


def test_equal_expressions_share_closures() -> None:
    comp = Compiler(SCHEMA, MACROS, TRUSTED)
    one = comp.compile('lower(meta.role) matches "^sum" and sender == "alice"')
    two = comp.compile('kind == "chat" and lower(meta.role) matches "^sum"')
    (shared,) = {fn for _, fn in one.conjuncts} & {fn for _, fn in two.conjuncts}
    assert shared(facts()) is True
    assert set(one.values(facts())) == {"meta.role", "sender"}
    assert set(two.values(facts())) == {"meta.role", "kind"}
    # same text in another scope or with other literals: not the same closure
    three = comp.compile('lower(meta.role) matches "^x" and meta.n == 3 and meta.n == 3.0')
    assert shared not in {fn for _, fn in three.conjuncts}
    assert len({fn for _, fn in three.conjuncts}) == 3


@pytest.mark.parametrize("seed", range(4))
def test_conjuncts_and_guards_agree_with_plain_closures(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    gen, r = _Gen(seed + 100), random.Random(seed)
    texts = [gen.boolean(3) for _ in range(300)]
    for _ in range(150):  # quantifiers whose body has a record guard
        g = gen.pick(
            'c.label == "alice"',
            'c.key in ["chat", "x"]',
            "c.grounded",
            '"x" == c.key',
            "c.key in trusted",
            'c.label == "chat"',
            "c.grounded == false",
        )
        body = f"{g} and ({gen.boolean(1, 'c')})" if r.random() < 0.7 else g
        if r.random() < 0.5:
            texts.append(f"claims.any(c, {body})")
        else:
            op, k = gen.pick(">=", ">", "==", "<"), gen.pick("0", "1", "2")
            texts.append(f"claims.count(c, {body}) {op} {k}")
    fast = Compiler(SCHEMA, MACROS | {"flag": "meta.b"}, {"trusted": ["alice", "carol"]})
    compiled = []
    for t in texts:
        try:
            compiled.append((t, fast.compile(t)))
        except ConditionError:
            pass
    assert len(compiled) > 300
    guarded = [
        any(fast._quant_guard(q) for q in _walk(c.node) if isinstance(q, conditions._Quant))
        for _, c in compiled
    ]
    assert sum(guarded) > 80
    generated = program(fast, [Entry(c, i) for i, (_, c) in enumerate(compiled)])
    plain = _plain_compiler(monkeypatch)
    good = [_random_facts(r, True) for _ in range(40)]
    for t, c in compiled:
        ref = plain.compile(t)
        parts = conditions.conjoin([fn for _, fn in c.conjuncts])
        assert parts is not None
        for f in good:
            want = ref(f)
            assert c(f) is want and parts(f) is want, (t, f)
            if want:  # guards are necessary conditions
                for name, values in c.guards:
                    assert c.getters[name](f) in values, (t, f)
    for f in good:  # the generated loops skip what their record guards rule out
        assert generated(f) == [i for i, (_, c) in enumerate(compiled) if c.fn(f)], f
