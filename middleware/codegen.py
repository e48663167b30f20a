"""Many compiled conditions as ONE Python function, built from their syntax trees with ``ast``.

:mod:`ostracon.conditions` compiles each condition into a tree of closures: one Python call
per operator, and a rule set is a few hundred small function objects. A rule set runs right
after the other stages of the core, whose code and data have pushed the closures out of the
CPU caches; measured on the rules benchmark, calls and first touches were most of its cost.
:func:`program` turns a whole rule set into one function whose body tests every condition
inline: field reads become locals read once per message, comparisons become bytecode, a
quantifier becomes a ``for`` loop, and a macro or loop that several rules use is computed
once per message.

Safety: nothing here parses text. The function is assembled from ``ast`` nodes of a fixed
shape; what operators wrote reaches it only as constants (strings, numbers, frozensets) or
as objects bound to generated names (getters, compiled regexes, closures); identifiers are
generated (``v0``, ``i1``, ..), never taken from rule text.

Semantics are those of the closures, by construction and by test (every case of
``tests/unit/test_conditions.py`` runs through both, and the rules benchmark compares their
decisions): missing values, ``ANY`` checked at run time, a bool never equal to a number,
unhashable values in ``in`` false, never raising. Shapes not written inline here -- a
comparison of two fields, a quantifier whose body reads outside its variable, a dig into
``meta.a.b`` -- call the node's compiled closure, so anything the language accepts runs.
"""

from __future__ import annotations

import ast
import itertools
import operator
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .conditions import (
    _C,
    _COLL,
    _SEQ,
    _SIZED,
    _TOP,
    Compiler,
    Condition,
    Type,
    _BoolOp,
    _Call,
    _Cmp,
    _dig,
    _get_slow,
    _is_num,
    _Lit,
    _NeedsEnv,
    _Node,
    _Not,
    _Path,
    _Quant,
    _record_schema,
    _resolve,
    _Scope,
    _shape,
    _Var,
)

__all__ = ["Entry", "attribute_read", "program"]

_UNSET = object()  # a local not computed yet for this message
_OPS = {"<": ast.Lt, "<=": ast.LtE, ">": ast.Gt, ">=": ast.GtE, "==": ast.Eq, "!=": ast.NotEq}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
Code = tuple[list[ast.stmt], ast.expr]  # statements to run first, then the expression


def _load(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


def _store(name: str) -> ast.Name:
    return ast.Name(name, ast.Store())


def _assign(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign([_store(name)], value)


def _call(fn: ast.expr, *args: ast.expr) -> ast.Call:
    return ast.Call(fn, list(args), [])


def _is(a: ast.expr, b: ast.expr, negate: bool = False) -> ast.Compare:
    return ast.Compare(a, [ast.IsNot() if negate else ast.Is()], [b])


def _and(*xs: ast.expr) -> ast.expr:
    return xs[0] if len(xs) == 1 else ast.BoolOp(ast.And(), list(xs))


def _or(*xs: ast.expr) -> ast.expr:
    return xs[0] if len(xs) == 1 else ast.BoolOp(ast.Or(), list(xs))


def _const(value: Any) -> ast.Constant:
    """A constant; compile() also takes tuples and frozensets of constants (typeshed not)."""
    return ast.Constant(value)


def _cls(v: ast.expr) -> ast.expr:
    return ast.Attribute(v, "__class__", ast.Load())


def _inline(get: Callable[[Any], Any]) -> bool:
    """Whether _Gen.fetch reads the field without a call."""
    dig = getattr(get, "dig", None)
    return _inline(dig[0]) if dig is not None else _attrs(get) is not None


def _attrs(get: Callable[[Any], Any]) -> list[str] | None:
    """The attribute path an ``operator.attrgetter`` of one (dotted) name reads."""
    if type(get) is not operator.attrgetter:
        return None
    args = get.__reduce__()[1]
    if len(args) != 1 or not isinstance(args[0], str):
        return None
    path = args[0].split(".")
    return path if all(a.isidentifier() for a in path) else None


def attribute_read(get: Callable[[Any], Any], base: ast.expr) -> ast.expr | None:
    """What ``get(base)`` reads, as attribute nodes, when ``get`` is an
    ``operator.attrgetter`` of one (dotted) name; else None (the getter must be called)."""
    path = _attrs(get)
    if path is None:
        return None
    for attr in path:
        base = ast.Attribute(base, attr, ast.Load())
    return base


class _Item:
    """A quantifier's variable inside its loop: the local holding the item."""

    __slots__ = ("local", "name", "record", "scope")

    def __init__(self, name: str, local: str, record: Any, scope: _Scope) -> None:
        self.name, self.local, self.record, self.scope = name, local, record, scope


class _Gen:
    """Builds the statements of one program: a first pass counts what is used where (which
    fields to read on entry, which values to keep as memos), the second emits the code."""

    def __init__(self, compiler: Compiler, first: _Gen | None = None) -> None:
        self.c = compiler
        # fields read on entry: those read inline (attribute paths, meta keys) and used in
        # two places or more (a test on every use would cost more than a read that turns out
        # not needed); the others -- a getter computing something (labels, reputation) --
        # on first use: the rules that need them may all be skipped for this message
        self.eager = (
            frozenset(n for n, k in first.uses.items() if k > 1 and n in first.inline)
            if first
            else frozenset()
        )
        self.inline: set[str] = set()  # fields whose read is inline (see fetch)
        # values worth a memo: used in two places or more (None: all, on the first pass)
        self.shared = {k for k, n in first.node_uses.items() if n > 1} if first else None
        self.node_uses: Counter[Any] = Counter()
        self.uses: Counter[str] = Counter()  # field -> places that read it
        self.ns: dict[str, Any] = {
            "U": _UNSET,
            "SEQ": _SEQ,
            "SIZED": _SIZED,
            "is_num": _is_num,
            "get_slow": _get_slow,
        }
        self._ids = itertools.count()
        self._temps = 0  # the current entry's temporaries (see fresh)
        self._building = 0  # > 0 while building memo code
        self._bound: dict[int, str] = {}  # id(object) -> its global name
        self.memo: dict[Any, str] = {}  # (shape or field name) -> the local holding it
        self._code: dict[str, Code] = {}  # a memo local -> the code computing it
        self.lazy: list[str] = []  # locals set to U on entry
        self.entry: list[ast.stmt] = []  # the eager reads
        self._reads: dict[str, list[ast.stmt]] = {}  # a field's local -> what sets it

    # -- names ---------------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        """A new local. Temporaries of one entry's own code are numbered per entry (the next
        entry reuses the names: a frame clears every local on return, so fewer locals is
        less work per call); those of memo code, which several entries inline, and the memo
        and field locals themselves are unique."""
        if self._building or prefix in ("m", "v", "s"):
            return f"{prefix}{next(self._ids)}"
        self._temps += 1
        return f"{prefix}_{self._temps}"

    def start_entry(self) -> None:
        self._temps = 0

    def bind(self, obj: Any, prefix: str = "g") -> ast.Name:
        """A global name for an object the code uses (a getter, a regex, a closure)."""
        name = self._bound.get(id(obj))
        if name is None:
            name = self._bound[id(obj)] = f"{prefix}{next(self._ids)}"
            self.ns[name] = obj
        return _load(name)

    def const(self, value: Any) -> ast.expr:
        if isinstance(value, (str, int, float, bool, type(None), frozenset, tuple)):
            return _const(value)
        return self.bind(value)  # pragma: no cover - every literal is one of the above

    def _c(self, node: _Node, item: _Item | None) -> _C:
        return self.c._c(node, item.scope if item is not None else _TOP)

    # -- fallbacks: the node's own closure ---------------------------------------------------

    def env(self, item: _Item | None) -> ast.expr:
        return _load(item.local if item is not None else "f")

    def closure_bool(self, node: _Node, item: _Item | None) -> Code:
        fn = self.c._bool_fn(self._c(node, item), node)
        return [], _call(self.bind(fn, "k"), self.env(item))

    def closure_value(self, node: _Node, item: _Item | None) -> Code:
        return [], _call(self.bind(self._c(node, item).fn, "k"), self.env(item))

    # -- memo: a value computed at most once per message --------------------------------------

    def memo_of(self, key: Any, build: Callable[[], Code]) -> Code:
        """What ``build`` gives, computed once per call of the program when the program
        uses it in two places or more (known from a first pass: ``shared``)."""
        self.node_uses[key] += 1
        if self.shared is not None and key not in self.shared:
            return build()
        local = self.memo.get(key)
        if local is None:
            local = self.memo[key] = self.fresh("m")
            self.lazy.append(local)
            self._building += 1
            try:
                self._code[local] = build()
            except BaseException:  # (too deep to generate: the entry runs as its closure)
                del self.memo[key]
                self.lazy.remove(local)
                raise
            finally:
                self._building -= 1
        stmts, expr = self._code[local]
        return [ast.If(_is(_load(local), _load("U")), [*stmts, _assign(local, expr)], [])], _load(
            local
        )

    # -- values --------------------------------------------------------------------------------

    def value(self, node: _Node, item: _Item | None) -> Code:
        c = self._c(node, item)
        if c.const:  # (a list's closure gives its items as written)
            return [], self.const(c.fn(None) if isinstance(c.value, frozenset) else c.value)
        if isinstance(node, _Path):
            return self.path(node, item)
        if isinstance(node, _Call) and node.name in ("lower", "upper", "len"):
            if item is None:
                return self.memo_of(("v", _shape(node)), lambda: self.call_value(node, item))
            return self.call_value(node, item)
        if isinstance(node, _Quant) and node.kind == "count":
            if item is None:
                return self.memo_of(("v", _shape(node)), lambda: self.quant(node, item))
            return self.quant(node, item)
        return self.closure_value(node, item)

    def path(self, node: _Path, item: _Item | None) -> Code:
        segs = node.segs
        if item is not None and segs[0] == item.name:
            if item.record is None:
                if len(segs) == 1:
                    return [], _load(item.local)
                return self.closure_value(node, item)
            found = _resolve(item.record, segs[1:])
            if found is None or found[1]:
                return self.closure_value(node, item)
            return [], self.read(found[0].get, item.local)
        if item is not None:
            return self.closure_value(node, item)  # pragma: no cover - item-only scopes
        found = _resolve(self.c.schema, segs)
        if found is None:  # a macro used as a value
            return self.closure_value(node, item)
        field, rest, key = found
        name = ".".join([key, *rest])
        self.uses[name] += 1
        local = self.memo.get(("field", name))
        if local is None:
            local = self.memo[("field", name)] = self.fresh("v")
            get = _dig(field.get, rest) if rest else field.get
            self._reads[local] = self.fetch(get, local)
            if _inline(get):
                self.inline.add(name)
            if name in self.eager:
                self.entry += self._reads[local]
            else:
                self.lazy.append(local)
        if name in self.eager:
            return [], _load(local)
        return [ast.If(_is(_load(local), _load("U")), self._reads[local], [])], _load(local)

    def fetch(self, get: Callable[[Any], Any], local: str) -> list[ast.stmt]:
        """Statements setting ``local`` to ``get(f)``: attribute reads for an
        ``operator.attrgetter`` (``f.env.sender``), the lookups of a ``meta.*`` key inline,
        else a call of the getter."""
        dig = getattr(get, "dig", None)
        if dig is not None:
            base, keys = dig
            stmts = self.fetch(base, local)
            for k in keys:
                d = _load(local)
                fast = _call(ast.Attribute(d, "get", ast.Load()), ast.Constant(k))
                slow = _call(_load("get_slow"), d, ast.Constant(k))
                test = _is(_cls(d), _load("dict"))
                stmts.append(_assign(local, ast.IfExp(test, fast, slow)))
            return stmts
        expr = attribute_read(get, _load("f"))
        return [_assign(local, expr or _call(self.bind(get), _load("f")))]

    def read(self, get: Callable[[Any], Any], local: str) -> ast.expr:
        """A record field of the item in ``local``: an attribute read when its getter is an
        ``operator.attrgetter`` of one name, else a call of the getter."""
        return attribute_read(get, _load(local)) or _call(self.bind(get), _load(local))

    def call_value(self, node: _Call, item: _Item | None) -> Code:
        stmts, x = self.value(node.args[0], item)
        v = self.fresh("t")
        stmts = [*stmts, _assign(v, x)]
        if node.name == "len":
            if self._c(node.args[0], item).type in (Type.STR, Type.LIST, Type.RECORDS):
                ok: ast.expr = _is(_load(v), ast.Constant(None), negate=True)  # typed: or None
            else:
                ok = _call(_load("isinstance"), _load(v), _load("SIZED"))
            out: ast.expr = ast.IfExp(ok, _call(_load("len"), _load(v)), ast.Constant(None))
        else:
            m = ast.Attribute(_load(v), node.name, ast.Load())
            typed = self._c(node.args[0], item).type is Type.STR
            out = ast.IfExp(self.is_str(_load(v), typed), _call(m), ast.Constant(None))
        return stmts, out

    def is_str(self, v: ast.expr, typed: bool = False) -> ast.expr:
        """Whether ``v`` is a str; for a STR-typed value (a str or missing), not None."""
        if typed:
            return _is(v, ast.Constant(None), negate=True)
        return _or(_is(_cls(v), _load("str")), _call(_load("isinstance"), v, _load("str")))

    # -- booleans ------------------------------------------------------------------------------

    def boolean(self, node: _Node, item: _Item | None) -> Code:
        """Code for ``node`` in a boolean position: a real bool, as ``_bool_fn`` gives."""
        c = self._c(node, item)
        if c.const:
            return [], ast.Constant(bool(c.value))
        if isinstance(node, _BoolOp):
            return self.boolop(node, item)
        if isinstance(node, _Not):
            stmts, x = self.boolean(node.operand, item)
            return stmts, ast.UnaryOp(ast.Not(), x)
        if isinstance(node, _Path):
            body = self.c._macro_node(node)
            if body is not None and item is None:
                return self.memo_of(("b", _shape(node)), lambda: self.boolean(body, item))
            if c.type is Type.BOOL or c.type is Type.ANY:
                stmts, v = self.value(node, item)
                return stmts, _is(v, ast.Constant(True))
            return self.closure_bool(node, item)  # pragma: no cover - a type error at load
        if isinstance(node, _Cmp):
            if node.op == "matches" and item is None:
                return self.memo_of(("b", _shape(node)), lambda: self.compare(node, item))
            return self.compare(node, item)
        if isinstance(node, _Call):
            return self.affix(node, item)
        if isinstance(node, _Quant):
            if item is None:
                return self.memo_of(("b", _shape(node)), lambda: self.quant(node, item))
            return self.quant(node, item)
        return self.closure_bool(node, item)

    def boolop(self, node: _BoolOp, item: _Item | None) -> Code:
        parts = [self.boolean(n, item) for n in self.c._operands(node)]
        return self.chain(node.op == "and", parts)

    def test(
        self, node: _Node, then: list[ast.stmt], keyed: frozenset[str] = frozenset()
    ) -> list[ast.stmt]:
        """Statements running ``then`` when the (top-level) condition holds: its ``and``
        operands (macros flattened, as ``Condition.conjuncts``) become nested ``if``
        statements, cheapest first, each operand's code inside the one before. Operands
        reading only ``keyed`` fields are left out: the caller's mask decided them."""
        flat = self.c._and_operands(node)
        if len(flat) > 1 or keyed:
            if keyed:
                flat = [n for n in flat if not self._c(n, None).fields <= keyed]
            for n in sorted(flat, key=self.c._cost)[::-1]:
                then = self.test(n, then)
            return then
        body = self.c._macro_node(node)
        if body is not None and ("b", _shape(node)) not in self.memo:
            return self.test(body, then)  # a macro used once so far: inline, no memo
        stmts, expr = self.boolean(node, None)
        return [*stmts, ast.If(expr, then, [])]

    def chain(self, conj: bool, parts: Sequence[Code]) -> Code:
        """``a and b and ..`` (or ``or``) of real bools, short-circuit: an operand's
        statements run only when the operands before it did not decide."""
        stmts, expr = list(parts[0][0]), parts[0][1]
        join = _and if conj else _or
        for s, e in parts[1:]:
            if not s:
                expr = join(expr, e)
                continue
            t = self.fresh("b")
            test: ast.expr = _load(t) if conj else ast.UnaryOp(ast.Not(), _load(t))
            stmts += [_assign(t, expr), ast.If(test, [*s, _assign(t, e)], [])]
            expr = _load(t)
        return stmts, expr

    def named(self, stmts: list[ast.stmt], v: ast.expr) -> tuple[list[ast.stmt], ast.Name]:
        """``v`` as a local, for an expression that reads it more than once."""
        if isinstance(v, ast.Name):
            return stmts, v
        t = self.fresh("t")
        return [*stmts, _assign(t, v)], _load(t)

    def compare(self, node: _Cmp, item: _Item | None) -> Code:
        op = node.op
        left = self._c(node.left, item)
        if op == "matches":
            return self.matches(node, item)
        right = self._c(node.right, item)
        if op in ("in", "not in"):
            if left.const and not right.const and right.type in (Type.LIST, Type.ANY):
                # "red" in labels (as conditions._in_dyn with a constant on the left)
                stmts, s = self.named(*self.value(node.right, item))
                test: ast.expr = ast.Compare(
                    ast.Constant(left.value), [ast.NotIn() if op == "not in" else ast.In()], [s]
                )
                if right.type is Type.ANY:
                    coll = _call(_load("isinstance"), s, self.bind(_COLL, "types"))
                    test = _and(coll, test)
                return stmts, _and(_is(s, ast.Constant(None), negate=True), test)
            if not right.const or left.const:
                return self.closure_bool(node, item)
            stmts, v = self.value(node.left, item)
            return self.member(stmts, v, left.type, right.value, op == "not in")
        lnode = node.left
        if left.const and not right.const:
            left, right, lnode = right, left, node.right
            op = _FLIP.get(op, op)
        if not right.const or left.const:
            return self.closure_bool(node, item)
        stmts, v = self.value(lnode, item)
        return self.versus(stmts, v, left.type, op, right.value)

    def versus(self, stmts: list[ast.stmt], v: ast.expr, lt: Type, op: str, c: Any) -> Code:
        """``v <op> c`` for a constant ``c``, as ``conditions._cmp_const`` decides it (a
        TypeError -- a getter giving a value of the wrong type -- is left to the rule's
        fallback, see :func:`program`)."""
        k = ast.Constant(c)
        anyt = lt is Type.ANY
        if c is None:
            return stmts, _is(v, k, negate=op != "==")
        if isinstance(c, bool):
            if op == "==":
                return stmts, _is(v, k)
            stmts, v = self.named(stmts, v)
            tf = _or(_is(v, ast.Constant(True)), _is(v, ast.Constant(False)))
            return stmts, _and(tf, _is(v, k, negate=True))
        num = not isinstance(c, str)
        if op == "==" and not (anyt and num and c in (0, 1)):
            return stmts, ast.Compare(v, [ast.Eq()], [k])
        stmts, v = self.named(stmts, v)
        cmp = ast.Compare(v, [_OPS[op]()], [k])
        if op == "==":  # True == 1, but a bool is not a number here
            return stmts, _and(cmp, _is(_cls(v), _load("bool"), negate=True))
        if op == "!=":
            if not anyt:
                return stmts, _and(_is(v, ast.Constant(None), negate=True), cmp)
            kind = _call(_load("is_num"), v) if num else self.is_str(v)
            return stmts, _and(kind, cmp)
        if not anyt:  # ordering of a typed value: missing is false
            return stmts, _and(_is(v, ast.Constant(None), negate=True), cmp)
        if num:  # (missing first: the common case of an absent meta key is one test)
            fast = _or(_is(_cls(v), _load("int")), _is(_cls(v), _load("float")))
            slow = _and(_call(_load("is_num"), v), _call(_load("bool"), cmp))
            present = _is(v, ast.Constant(None), negate=True)
            return stmts, _and(present, ast.IfExp(fast, cmp, slow))
        return stmts, _and(self.is_str(v), _call(_load("bool"), cmp))

    def member(
        self, stmts: list[ast.stmt], v: ast.expr, lt: Type, items: frozenset[Any], negate: bool
    ) -> Code:
        """``v in items`` / ``v not in items``, as ``conditions._in_const`` decides it (an
        unhashable value's TypeError is left to the rule's fallback)."""
        S = _const(items)
        if lt is not Type.ANY or (not negate and not (0 in items or 1 in items)):
            if not negate:
                return stmts, ast.Compare(v, [ast.In()], [S])
            stmts, v = self.named(stmts, v)
            test = ast.Compare(v, [ast.NotIn()], [S])
            return stmts, _and(_is(v, ast.Constant(None), negate=True), test)
        stmts, v = self.named(stmts, v)
        not_bool = _is(_cls(v), _load("bool"), negate=True)
        if not negate:
            return stmts, _and(ast.Compare(v, [ast.In()], [S]), not_bool)
        kinds: tuple[type, ...] = ()
        if any(isinstance(x, str) for x in items):
            kinds += (str,)
        if any(not isinstance(x, str) for x in items):
            kinds += (int, float)
        ok = _call(_load("isinstance"), v, self.bind(kinds, "types"))
        return stmts, _and(ok, not_bool, ast.Compare(v, [ast.NotIn()], [S]))

    def cased(self, node: _Node, item: _Item | None) -> tuple[list[ast.stmt], ast.expr, str, bool]:
        """The value of ``x``, the case method for ``lower(x)`` / ``upper(x)`` ('' for a
        plain value), the way the closures fold the case into the test that uses it, and
        whether ``x`` is STR-typed (a str or missing)."""
        if isinstance(node, _Call) and node.name in ("lower", "upper"):
            arg = self._c(node.args[0], item)
            key = ("v", _shape(node))
            if item is None and self.shared is not None and key in self.shared:
                # lower(content) tested by several rules: lowered once per message
                stmts, v = self.value(node, item)
                return stmts, v, "", True
            if not arg.const:
                if item is None:
                    self.node_uses[key] += 1  # (counted as value() would count it)
                stmts, v = self.value(node.args[0], item)
                return stmts, v, node.name, arg.type is Type.STR
        stmts, v = self.value(node, item)
        return stmts, v, "", self._c(node, item).type is Type.STR

    def text_test(
        self, node: _Node, item: _Item | None, test: Callable[[ast.expr], ast.expr]
    ) -> Code:
        """``test(value)`` of a str value (possibly lower/upper-cased), false for a non-str."""
        stmts, v, case, typed = self.cased(node, item)
        stmts, v = self.named(stmts, v)
        s: ast.expr = _call(ast.Attribute(v, case, ast.Load())) if case else v
        return stmts, _and(self.is_str(v, typed), test(s))

    def matches(self, node: _Cmp, item: _Item | None) -> Code:
        rnode = node.right
        assert isinstance(rnode, _Lit)
        search = self.bind(re.compile(rnode.value).search, "re")
        return self.text_test(
            node.left, item, lambda s: _is(_call(search, s), ast.Constant(None), negate=True)
        )

    def affix(self, node: _Call, item: _Item | None) -> Code:
        """startswith / endswith / contains with a constant second argument."""
        x = self._c(node.args[0], item)
        y = self._c(node.args[1], item)
        if not y.const or x.const:
            return self.closure_bool(node, item)
        if node.name == "contains":
            if x.type is not Type.STR and not (x.fuse and x.fuse[0] == "case"):
                return self.closure_bool(node, item)  # a list, or ANY: membership too
            if y.type is not Type.STR:
                return self.closure_bool(node, item)
            sub = ast.Constant(y.value)
            return self.text_test(node.args[0], item, lambda s: ast.Compare(sub, [ast.In()], [s]))
        p = tuple(sorted(y.value)) if isinstance(y.value, frozenset) else y.value
        return self.text_test(
            node.args[0],
            item,
            lambda s: _call(ast.Attribute(s, node.name, ast.Load()), _const(p)),
        )

    # -- quantifiers ---------------------------------------------------------------------------

    def quant(self, node: _Quant, item: _Item | None) -> Code:
        if item is not None:  # nested: the inner loop runs as its closure
            return (self.closure_value if node.kind == "count" else self.closure_bool)(node, item)
        coll = self._c(node.coll, None)
        record = None
        if coll.type is Type.RECORDS:
            record = _record_schema(self.c.schema, _TOP, node.coll.segs)
        cname = ".".join(node.coll.segs)
        coll_name = next(iter(coll.fields), cname)
        scope = _Scope(0, {node.var: _Var(None, record, coll_name)}, item_only=True)
        try:
            self.c._c(node.body, scope)
        except _NeedsEnv:  # the body reads outside its variable
            return (self.closure_value if node.kind == "count" else self.closure_bool)(node, item)
        it = _Item(node.var, self.fresh("i"), record, scope)
        stmts, items = self.value(node.coll, None)
        if not isinstance(items, ast.Name):  # pragma: no cover - collections are fields
            t = self.fresh("t")
            stmts, items = [*stmts, _assign(t, items)], _load(t)
        guard = self.c._quant_guard(node) if node.kind != "all" else None
        body_node = node.body
        if (
            guard
            and record is not None
            and isinstance(body_node, _BoolOp)
            and body_node.op == "and"
        ):
            # the guard's own test first in the loop too: the record that lacks its value
            # is the common one (the others' order is the compiler's, cheapest first)
            ops = self.c._operands(body_node)
            key = next((n for n in ops if self.c._record_guard(n, node.var, record)), None)
            if key is not None:
                ops = [key, *(n for n in ops if n is not key)]
            bstmts, body = self.chain(True, [self.boolean(n, it) for n in ops])
        else:
            bstmts, body = self.boolean(body_node, it)
        check = coll.type is not Type.RECORDS  # plain/ANY collections: only lists count
        seq = _call(_load("isinstance"), items, _load("SEQ"))
        r = self.fresh("q")

        def loop(inner: list[ast.stmt]) -> list[ast.stmt]:
            out: list[ast.stmt] = [ast.For(_store(it.local), items, [*bstmts, *inner], [])]
            if guard is not None:
                # no record has the value the body requires: no loop (the values present
                # are collected once per message, for every quantifier that asks)
                pstmts, present = self.present(guard[0], guard[1], items, record)
                values = guard[2]
                if len(values) == 1:
                    has: ast.expr = ast.Compare(
                        ast.Constant(next(iter(values))), [ast.In()], [present]
                    )
                else:
                    disjoint = _call(
                        ast.Attribute(present, "isdisjoint", ast.Load()), _const(values)
                    )
                    has = ast.UnaryOp(ast.Not(), disjoint)
                out = [*pstmts, ast.If(has, out, [])]
            return out

        if node.kind == "any":
            ok = _and(items, seq) if check else items
            found = ast.If(body, [_assign(r, ast.Constant(True)), ast.Break()], [])
            stmts += [_assign(r, ast.Constant(False)), ast.If(ok, loop([found]), [])]
            return stmts, _load(r)
        present = _is(items, ast.Constant(None), negate=True)
        ok = _and(present, seq) if check else present
        if node.kind == "all":
            miss = ast.If(
                ast.UnaryOp(ast.Not(), body), [_assign(r, ast.Constant(False)), ast.Break()], []
            )
            stmts += [
                _assign(r, ast.Constant(False)),
                ast.If(ok, [_assign(r, ast.Constant(True)), *loop([miss])], []),
            ]
            return stmts, _load(r)
        add = ast.If(body, [ast.AugAssign(_store(r), ast.Add(), ast.Constant(1))], [])
        stmts += [
            _assign(r, ast.Constant(None)),
            ast.If(ok, [_assign(r, ast.Constant(0)), *loop([add])], []),
        ]
        return stmts, _load(r)

    def present(self, coll: str, fname: str, items: ast.Name, record: Any) -> Code:
        """The set of values of records' field ``fname`` in facts-level ``coll`` (memo)."""
        local = self.memo.get(("present", coll, fname))
        if local is None:
            local = self.memo[("present", coll, fname)] = self.fresh("s")
            self.lazy.append(local)
        i = self.fresh("i")
        value = self.read(record[fname].get, i)
        add = ast.Expr(_call(ast.Attribute(_load(local), "add", ast.Load()), value))
        build = [_assign(local, _call(_load("set"))), ast.For(_store(i), items, [add], [])]
        return [ast.If(_is(_load(local), _load("U")), build, [])], _load(local)


class Entry(NamedTuple):
    """One condition of a :func:`program`."""

    condition: Condition
    payload: Any = None  # what the program lists when the condition holds (without then)
    exempt: Callable[[Any], Any] | None = None  # a match counts only when this gives None
    # With a mask (see program): the entry's flag in it. The caller has evaluated the
    # entry's and-operands that read only ``keyed`` fields (and its exemptions, if exempt is
    # None) and set the flag false when one was false. None: the entry has none of those
    # (its flag is always true), so no test of it is written.
    slot: int | None = 0
    # What runs when it holds, instead of listing the payload (the names it uses are the
    # program's parameters, prologue locals and ``names``)
    then: Sequence[ast.stmt] | None = None


def program(
    compiler: Compiler,
    entries: Sequence[Entry],
    keyed: frozenset[str] = frozenset(),
    name: str = "rules",
    *,
    params: Sequence[str] = (),
    prologue: Sequence[ast.stmt] = (),
    result: ast.expr | None = None,
    fallback: ast.expr | None = None,
    names: dict[str, Any] | None = None,
    reads: Sequence[tuple[str, Callable[[Any], Any]]] = (),
    mask_param: bool = True,
    preamble: Sequence[ast.stmt] = (),
) -> Callable[..., Any]:
    """One function ``(facts[, mask], *params)`` evaluating every entry's condition, in
    entry order; by default it returns the payloads of the entries whose condition holds
    and whose ``exempt(facts)`` (when given) is None.

    With ``keyed`` fields the function takes a mask as well (see :class:`Entry`): an entry
    whose flag (``mask[entry.slot]``, a sequence of bools) is false is skipped, and of the
    others only the operands reading something beyond ``keyed`` are evaluated (as
    ``ostracon.rules`` indexes its rules by key fields). An entry's ``then`` (else: list its
    payload in ``fired``) runs when it holds; the function runs ``prologue`` first and
    returns ``result`` (else ``fired``); ``names`` are globals those statements read (names
    starting with ``r_`` never clash with generated ones). ``reads`` are ``(local, getter)``
    pairs set on entry, before the prologue, the way the conditions read fields (attribute
    paths and ``meta`` lookups inline). With ``mask_param`` false the mask is not a
    parameter: the prologue sets the local ``mask`` (and a ``fallback`` is required).
    ``preamble`` runs first of all, before any field is read (what ``fallback`` needs).

    Should the code raise (a value of a type its getter does not promise: an unhashable
    item in ``in``, a string ordered against a number), the function returns ``fallback``
    instead: by default, the same list computed by the entries' closures, which say false
    there. A caller whose ``then`` has effects gives a fallback that undoes them and decides
    with the closures (what ``then`` raises would then be raised again there). One ``try``
    around the whole body costs nothing until something raises, where one per entry would
    add a flag, a test and a handler's bytecode to each."""
    first = _Gen(compiler)
    _body(first, entries, keyed)  # to count where each field is read
    gen = _Gen(compiler, first)
    rules = _body(gen, entries, keyed)
    if fallback is None:
        if keyed and not mask_param:
            raise ValueError("a mask computed by the prologue needs a fallback")

        def closures(f: Any, mask: Any = None, *_: Any) -> list[Any]:
            # (the mask's flag also says what the key decided: exemptions among them)
            return [
                e.payload
                for e in entries
                if (mask is None or e.slot is None or mask[e.slot])
                and e.condition.fn(f)
                and (e.exempt is None or e.exempt(f) is None)
            ]

        takes = ("mask",) if keyed else ()
        fallback = _call(gen.bind(closures, "r"), *(_load(a) for a in ("f", *takes)))
    # (the list only when an entry or the result uses it)
    listed = result is None or any(e.then is None for e in entries)
    fired = [_assign("fired", ast.List([], ast.Load()))] if listed else []
    entry = [stmt for local, get in reads for stmt in gen.fetch(get, local)]
    body = [
        *preamble,
        *gen.entry,
        *fired,
        *entry,
        *prologue,
        *rules,
        ast.Return(result or _load("fired")),
    ]
    if gen.lazy:
        body.insert(0, ast.Assign([_store(n) for n in gen.lazy], _load("U")))
    handler = ast.ExceptHandler(_load("Exception"), None, [ast.Return(fallback)])
    # (U as a default: a local, not a global, in the many "not read yet" tests; positional,
    # as keyword-only defaults take a slower path into every call)
    params_ = [
        ast.arg(a) for a in ("f", *(("mask",) if keyed and mask_param else ()), *params, "U")
    ]
    arguments = ast.arguments([], params_, None, [], [], None, [_load("U")])
    fn = ast.FunctionDef(name, arguments, [ast.Try(body, [handler], [], [])], [], None, None)
    module = ast.fix_missing_locations(ast.Module([fn], []))
    ns = {**gen.ns, **(names or {})}
    exec(compile(module, f"<ostracon {name}>", "exec"), ns)
    return ns[name]  # type: ignore[no-any-return]


def _body(gen: _Gen, entries: Sequence[Entry], keyed: frozenset[str]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for cond, payload, exempt, slot, then in entries:
        gen.start_entry()
        if then is None:
            fire = ast.Attribute(_load("fired"), "append", ast.Load())
            then = [ast.Expr(_call(fire, gen.bind(payload, "p")))]
        if exempt is not None:
            ok = _is(_call(gen.bind(exempt, "x"), _load("f")), ast.Constant(None))
            then = [ast.If(ok, list(then), [])]
        code: list[ast.stmt] | None = None
        if cond.node is not None:
            try:
                code = gen.test(cond.node, list(then), keyed)
            except RecursionError:  # pragma: no cover - deeper than the language allows
                code = None
        if code is None:  # its closure
            code = [ast.If(_call(gen.bind(cond.fn, "k"), _load("f")), list(then), [])]
        if keyed and slot is not None:
            flag = ast.Subscript(_load("mask"), ast.Constant(slot), ast.Load())
            code = [ast.If(flag, code, [])]
        out += code
    return out
