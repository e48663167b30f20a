"""The rule condition language: a small, safe expression language compiled once into closures.

A rule's ``condition`` is text written by an operator. It is tokenized and parsed by hand (a
Pratt parser), type-checked against a schema of known fields at load time, and compiled ONCE
into nested Python closures specialised for their operands. No text is ever handed to
``eval``/``exec``/``compile``: the only things that run are the closures built here and the
schema's own getters. (:mod:`ostracon.codegen` compiles many conditions again into one
function, from their syntax trees as ``ast`` nodes -- never from text either.)

Language
========

Literals
    ``"text"`` or ``'text'`` (escapes ``\\"`` ``\\'`` ``\\\\`` ``\\n`` ``\\t``; any other
    backslash is kept as-is, so regexes read naturally: ``"\\d+"``), numbers ``3``, ``-2``,
    ``0.5``, ``1e3``, ``true``, ``false``, ``null``, lists of strings/numbers ``["a", "b", 3]``.

Fields
    ``sender``, ``risk.score``, ``meta.role``, ``meta.a.b`` -- dotted names looked up in the
    schema. A schema key ending in ``.*`` (``meta.*``) is a wildcard: its getter returns a
    mapping (or ``None``) and the rest of the path is looked up in it with ``.get`` (nested
    for ``meta.a.b``); a missing key is ``null``. An exact field of type ``ANY`` followed by
    more path works the same way. Unknown names are load errors that suggest the closest name.

Comparisons (non-associative: ``a == b == c`` is an error)
    ``== != < <= > >=``; both sides must have the same type (str, num, bool), ``null`` only
    with ``==``/``!=``; ``x in [..]``, ``x not in [..]`` against a list literal, a named list
    (the ``lists`` argument) or a list field; ``x matches "regex"`` (``re.search``; the pattern
    must be a string literal, compiled at load).

Functions
    ``lower(x)``, ``upper(x)``, ``len(x)`` (str or list), ``startswith(x, "p")``,
    ``endswith(x, "s")`` (the second argument may also be a list literal of alternatives),
    ``contains(x, "sub")`` (substring; or membership when ``x`` is a list).

Boolean
    ``and``, ``or``, ``not``, parentheses; short-circuit. Precedence, loosest first:
    ``or`` < ``and`` < ``not`` < comparisons < function calls / fields / literals.

Quantifiers over record lists (``RECORDS`` fields such as ``claims``)
    ``claims.any(c, c.label == "yellow" and c.reach >= 3)``, ``claims.all(c, c.grounded)``,
    ``claims.count(c, c.risk > 0.5) >= 2`` (count is a number). Inside, ``c.<field>`` is
    looked up in the field's record schema and the outer fields stay visible. Over a plain
    list (``LIST``/``ANY``) the variable is the item itself: ``recipients.any(r,
    startswith(r, "bot-"))``. ``all`` over an empty list is true; over a missing one, false.

Macros and named lists
    A bare identifier naming a macro is that macro's (boolean) condition; macros may use
    other macros (a cycle is an error) and are compiled once per :class:`Compiler`
    (``Compiler.check_macros()`` compiles all of them up front). Names resolve as: quantifier
    variable, schema field, macro, named list. A named list may be used on the right of
    ``in``/``not in`` (and in ``len``).

Examples::

    kind == "chat" and sender in ["planner", "coder"]
    meta.role == "summarizer" and risk.score >= 0.5
    not (sender in trusted_agents) and claims.any(c, c.label == "red")
    lower(meta.team) matches "^(ops|sre)-" or lineage.depth > 3
    claims.count(c, not c.grounded and c.reach >= 3) >= 2 and is_hub

Types and missing values
========================

Every expression has a static :class:`Type`. ``ANY`` (e.g. ``meta.*``) is unknown at load
time and checked at run time: a mismatch (``meta.n >= 3`` when ``meta.n`` is ``"x"``, or a
``bool`` where a number is expected) evaluates to false and never raises. A missing value
(``None`` from a getter, an absent key) makes every comparison false -- ``!=``, ``not in`` and
the ordering operators included -- except ``== null`` (true) and ``!= null`` (false).
Functions of a missing value are missing (``lower(null)`` is ``null``; ``startswith`` is
false). In a boolean position a ``bool``-typed field or an ``ANY`` value counts as true only
when it is exactly ``True``. ``ANY`` values are expected to be JSON-like (str, number, bool,
null, list, dict), as decoded message metadata is.

Errors are :class:`ConditionError` with a 1-based column (an offset into the text, so a
multi-line condition counts its newlines as one column each) and a hint.

Speed
=====

A condition is one closure tree built at load time, and a Python call (~30 ns) is the unit of
cost, so the compiler removes calls: a comparison against a constant is one closure (``in`` a
constant list is a ``frozenset`` lookup; ``meta.k <op> c`` inlines the dict lookup;
``len(x) <op> n`` and ``xs.count(..) >= n`` fold into one closure, the count stopping at n);
``==``/``!=``/``in``/``not in`` on typed fields and bool fields are inlined into the ``and``/
``or`` (no loop up to four operands) or the quantifier loop that uses them. Missing values are
tested, not caught: a raised exception costs more than a rule. ``lower(x)``/``upper(x)`` fold
into the ``contains``/``startswith``/``endswith``/``matches`` that uses them. Call
``Condition.fn(facts)`` in hot loops (``Condition(facts)`` adds a call), and give the schema
fast getters (``operator.attrgetter``/``itemgetter``): they run once per field per rule.

Conditions have no side effects and never raise, so ``and``/``or`` operands are evaluated
cheapest first (a field test before a function, a regex, then a loop over records; equal
costs keep the written order) -- the result cannot differ. One :class:`Compiler` compiles an
expression that several conditions share (``sender.role != "auditor"``, a macro) to the same
closures, and gives each condition its top-level ``conjuncts`` and ``guards`` so that a rule
set can be indexed, and its syntax tree (``node``), which :mod:`ostracon.codegen` compiles
again, with a rule set's other conditions, into one function (see ``ostracon.rules``).
``benchmarks/conditions.py`` measures 100 rules per message.
"""

from __future__ import annotations

import difflib
import enum
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "Compiler",
    "Condition",
    "ConditionError",
    "Field",
    "Schema",
    "Type",
    "compile_condition",
    "conjoin",
]

Fn = Callable[[Any], Any]


class Type(enum.Enum):
    """Static type of an expression. ``NULL`` is the type of the ``null`` literal only."""

    STR = "str"
    NUM = "num"
    BOOL = "bool"
    LIST = "list"  # list of str / num
    RECORDS = "records"  # list of records (claims); see Field.record
    ANY = "any"  # unknown at load time; checked at run time
    NULL = "null"


@dataclass(frozen=True)
class Field:
    """A field the language can read.

    ``get`` receives the facts object (for a record schema: one record) and returns the value,
    or ``None`` when it is missing; a typed field's value has its type (``str``; ``int``/
    ``float``; ``bool``; a list for ``LIST``/``RECORDS``) -- only ``ANY`` is checked at run time.
    For a wildcard key (``"meta.*"``) ``get`` returns a mapping (or ``None``) and ``type`` is
    the type of every value in it (usually ``ANY``). ``record`` is the schema of the items
    when ``type`` is ``RECORDS``.
    """

    type: Type
    get: Callable[[Any], Any]
    doc: str = ""
    record: Schema | None = None


Schema = Mapping[str, Field]

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class ConditionError(Exception):
    """A condition that cannot be compiled. ``col`` is 1-based; when the error is inside a
    macro, ``macro`` names it, ``col`` points into the macro's text and the message says so."""

    def __init__(self, message: str, col: int, hint: str = "", macro: str | None = None) -> None:
        self.message = message
        self.col = col
        self.hint = hint
        self.macro = macro
        super().__init__(str(self))

    def __str__(self) -> str:
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"col {self.col}: {self.message}{hint}"


Guard = tuple[str, frozenset[Any]]
RecordGuard = tuple[str, str, frozenset[Any]]
Conjunct = tuple[frozenset[str], Callable[[Any], bool]]


class Condition:
    """A compiled condition. ``fn(facts) -> bool`` never raises for well-behaved getters.
    ``fields`` names what it reads: schema names (``meta.role`` for a wildcard), and record
    fields as ``<collection>.<field>`` (``claims.label``).

    For indexing rules (as Falco indexes its rules by event type), found from the syntax tree:

    ``conjuncts``
        ``(fields, fn)`` for each operand of the top-level ``and`` (nested ``and`` and macros
        whose body is an ``and`` or a single operand are flattened into it), cheapest first;
        the whole condition as one conjunct when it is not an ``and``. The condition is true
        exactly when every ``fn`` is (:func:`conjoin` rebuilds it from some of them);
        ``fields`` is what that operand reads.
    ``guards``
        ``(field, values)`` for each conjunct of the form ``field == const``, ``const ==
        field``, ``field in [consts]`` / a named list, or a bare bool field (values
        ``{True}``), where ``field`` is a facts-level field: the condition can be true only
        when the field's value equals one of ``values``. A necessary condition, never a
        sufficient one.
    """

    __slots__ = (
        "_getters",
        "_parts",
        "conjuncts",
        "fields",
        "fn",
        "guards",
        "node",
        "text",
    )

    def __init__(
        self,
        text: str,
        fn: Callable[[Any], bool],
        fields: frozenset[str],
        parts: Sequence[tuple[str, Callable[[Any], bool]]] = (),
        getters: Mapping[str, Fn] = _EMPTY,
        conjuncts: Sequence[Conjunct] | None = None,
        guards: Sequence[Guard] = (),
        node: _Node | None = None,
    ) -> None:
        self.text = text
        self.node = node  # the parsed syntax tree (ostracon.codegen compiles it again)
        self.fn = fn
        self.fields = fields
        self._parts = tuple(parts)
        self._getters = dict(getters)
        self.conjuncts: tuple[Conjunct, ...] = (
            ((fields, fn),) if conjuncts is None else tuple(conjuncts)
        )
        self.guards: tuple[Guard, ...] = tuple(guards)

    @property
    def getters(self) -> Mapping[str, Fn]:
        """The getter of every facts-level field it reads, macros included, by field name
        (as in ``fields``): what ``values`` calls."""
        return MappingProxyType(self._getters)

    def __call__(self, facts: Any) -> bool:
        return self.fn(facts)

    def explain(self, facts: Any) -> list[tuple[str, object]]:
        """(source text, value) of each top-level operand of and/or/not, then of the whole.
        Every operand is evaluated (no short-circuit) so all of them can be shown."""
        out: list[tuple[str, object]] = [(src, fn(facts)) for src, fn in self._parts]
        out.append((self.text.strip(), self.fn(facts)))
        return out

    def values(self, facts: Any) -> dict[str, object]:
        """The value of every facts-level field the condition reads, macros included (for
        ``rules explain``); record fields read through a quantifier variable are left out."""
        return {name: get(facts) for name, get in self._getters.items()}

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


# --------------------------------------------------------------------------------------------
# Tokenizer

_KEYWORDS = frozenset({"and", "or", "not", "in", "matches", "true", "false", "null"})
_OPS2 = frozenset({"==", "!=", "<=", ">="})
_OPS1 = frozenset("<>()[],.-")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}
_NUM_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?")
_DIGITS = frozenset("0123456789")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BAD_HINTS = {
    "=": "use == to compare",
    "&": "use and",
    "|": "use or",
    "!": "use not, or != to compare",
}


class _Tok:
    __slots__ = ("end", "kind", "start", "value")

    def __init__(self, kind: str, value: Any, start: int, end: int) -> None:
        self.kind = kind  # "num" | "str" | "ident" | "op" | "eof"
        self.value = value
        self.start = start
        self.end = end

    def is_op(self, op: str) -> bool:
        return self.kind == "op" and self.value == op

    def is_kw(self, kw: str) -> bool:
        return self.kind == "ident" and self.value == kw

    def show(self) -> str:
        if self.kind == "eof":
            return "the end of the condition"
        if self.kind == "str":
            return "a string"
        return repr(str(self.value))


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            j = i + 1
            buf: list[str] = []
            while True:
                if j >= n:
                    raise ConditionError("unclosed string", i + 1, f"add a closing {ch}")
                c = text[j]
                if c == ch:
                    break
                if c == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    # unknown escapes keep their backslash so regexes like "\d" read naturally
                    buf.append(_ESCAPES.get(nxt, "\\" + nxt))
                    j += 2
                    continue
                buf.append(c)
                j += 1
            toks.append(_Tok("str", "".join(buf), i, j + 1))
            i = j + 1
            continue
        after_name = bool(toks) and toks[-1].kind == "ident" and toks[-1].end == i
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS and not after_name):
            if toks and toks[-1].is_op("."):
                # a path segment after a dot, e.g. "meta.0" - not a number
                raise ConditionError(
                    f"a field name cannot start with a digit: {ch!r}", i + 1, "use letters"
                )
            m = _NUM_RE.match(text, i)
            assert m is not None
            raw = m.group()
            num: int | float = float(raw) if any(c in raw for c in ".eE") else int(raw)
            if m.end() < n and _IDENT_RE.match(text, m.end()):
                raise ConditionError(
                    f"bad number {text[i : m.end() + 1]!r}", i + 1, "separate it with a space"
                )
            toks.append(_Tok("num", num, i, m.end()))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)  # ASCII names only
        if m is not None:
            toks.append(_Tok("ident", m.group(), i, m.end()))
            i = m.end()
            continue
        two = text[i : i + 2]
        if two in _OPS2:
            toks.append(_Tok("op", two, i, i + 2))
            i += 2
            continue
        if two in ("&&", "||"):
            raise ConditionError(f"unexpected {two!r}", i + 1, _BAD_HINTS[ch])
        if ch in _OPS1:
            toks.append(_Tok("op", ch, i, i + 1))
            i += 1
            continue
        raise ConditionError(
            f"unexpected character {ch!r}", i + 1, _BAD_HINTS.get(ch, "remove it or quote it")
        )
    toks.append(_Tok("eof", None, n, n))
    return toks


# --------------------------------------------------------------------------------------------
# AST


class _Node:
    __slots__ = ("end", "paren", "shape", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.paren = False  # written inside parentheses (stops chaining / n-ary merging)
        self.shape: tuple[Any, ...] | None = None  # see _shape


class _Lit(_Node):
    __slots__ = ("value",)

    def __init__(self, value: Any, start: int, end: int) -> None:
        super().__init__(start, end)
        self.value = value


class _ListLit(_Node):
    __slots__ = ("items",)

    def __init__(self, items: list[_Lit], start: int, end: int) -> None:
        super().__init__(start, end)
        self.items = items


class _Path(_Node):
    __slots__ = ("segs",)

    def __init__(self, segs: list[str], start: int, end: int) -> None:
        super().__init__(start, end)
        self.segs = segs


class _Call(_Node):
    __slots__ = ("args", "name")

    def __init__(self, name: str, args: list[_Node], start: int, end: int) -> None:
        super().__init__(start, end)
        self.name = name
        self.args = args


class _Quant(_Node):
    __slots__ = ("body", "coll", "kind", "var", "var_start")

    def __init__(
        self, kind: str, coll: _Path, var: str, var_start: int, body: _Node, start: int, end: int
    ) -> None:
        super().__init__(start, end)
        self.kind = kind
        self.coll = coll
        self.var = var
        self.var_start = var_start
        self.body = body


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand: _Node, start: int, end: int) -> None:
        super().__init__(start, end)
        self.operand = operand


class _BoolOp(_Node):
    __slots__ = ("op", "operands")

    def __init__(self, op: str, operands: list[_Node], start: int, end: int) -> None:
        super().__init__(start, end)
        self.op = op
        self.operands = operands


class _Cmp(_Node):
    __slots__ = ("left", "op", "op_start", "right")

    def __init__(self, op: str, left: _Node, right: _Node, op_start: int) -> None:
        super().__init__(left.start, right.end)
        self.op = op
        self.left = left
        self.right = right
        self.op_start = op_start


# --------------------------------------------------------------------------------------------
# Parser (Pratt): binding powers, loosest first

_BP_OR, _BP_AND, _BP_NOT, _BP_CMP = 1, 2, 3, 4
_MAX_DEPTH = 64
_CMP_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_QUANTS = ("any", "all", "count")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def parse(self) -> _Node:
        if self.peek().kind == "eof":
            raise ConditionError("empty condition", 1, 'write an expression, e.g. kind == "chat"')
        node = self.expr(0)
        tok = self.peek()
        if tok.kind != "eof":
            if tok.is_op(")"):
                raise ConditionError("unmatched ')'", tok.start + 1, "remove it or add '('")
            if tok.is_kw("not"):
                hint = "use 'and not ...' or 'not in'"
            else:
                hint = "join conditions with 'and' / 'or'"
            raise ConditionError(f"unexpected {tok.show()}", tok.start + 1, hint)
        return node

    def _infix(self, tok: _Tok) -> tuple[str, int] | None:
        if tok.kind == "op" and tok.value in _CMP_OPS:
            return tok.value, _BP_CMP
        if tok.kind == "ident":
            if tok.value == "or":
                return "or", _BP_OR
            if tok.value == "and":
                return "and", _BP_AND
            if tok.value in ("in", "matches"):
                return tok.value, _BP_CMP
            if tok.value == "not" and self.peek(1).is_kw("in"):
                return "not in", _BP_CMP
        return None

    def expr(self, min_bp: int) -> _Node:
        tok = self.peek()
        # bound the recursion (parser and closures) with a clear error, not a RecursionError
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ConditionError(
                f"nested more than {_MAX_DEPTH} levels deep", tok.start + 1, "use macros"
            )
        try:
            return self._expr(min_bp, tok)
        finally:
            self.depth -= 1

    def _expr(self, min_bp: int, tok: _Tok) -> _Node:
        left: _Node
        if tok.is_kw("not"):
            if min_bp >= _BP_CMP:
                raise ConditionError(
                    "'not' cannot be an operand of a comparison", tok.start + 1, "use (not ...)"
                )
            self.next()
            operand = self.expr(_BP_NOT)
            left = _Not(operand, tok.start, operand.end)
        else:
            left = self.primary()
        while True:
            tok = self.peek()
            infix = self._infix(tok)
            if infix is None or infix[1] <= min_bp:
                return left
            op, bp = infix
            self.next()
            if op == "not in":
                self.next()
            if bp == _BP_CMP:
                if isinstance(left, _Cmp) and not left.paren:
                    raise ConditionError(
                        f"comparisons cannot be chained ({op!r} after {left.op!r})",
                        tok.start + 1,
                        "join them with 'and'",
                    )
                right = self.expr(_BP_CMP)
                left = _Cmp(op, left, right, tok.start)
            else:
                right = self.expr(bp)
                if isinstance(left, _BoolOp) and left.op == op and not left.paren:
                    left.operands.append(right)
                    left.end = right.end
                else:
                    left = _BoolOp(op, [left, right], left.start, right.end)

    def _close(self, opener: _Tok, closer: str, what: str) -> _Tok:
        tok = self.peek()
        if tok.is_op(closer):
            return self.next()
        if tok.kind == "eof":
            raise ConditionError(f"unclosed {opener.value!r}", opener.start + 1, f"add {closer!r}")
        raise ConditionError(
            f"expected {closer!r} {what}, got {tok.show()}",
            tok.start + 1,
            f"{opener.value!r} opened at col {opener.start + 1}",
        )

    def primary(self) -> _Node:
        tok = self.next()
        if tok.kind == "num":
            return _Lit(tok.value, tok.start, tok.end)
        if tok.kind == "str":
            return _Lit(tok.value, tok.start, tok.end)
        if tok.is_op("-"):
            num = self.peek()
            if num.kind == "num" and num.start == tok.end:
                self.next()
                return _Lit(-num.value, tok.start, num.end)
            raise ConditionError("'-' must be followed by a number", tok.start + 1, "e.g. -1")
        if tok.is_op("("):
            if self.peek().kind == "eof":
                raise ConditionError("unclosed '('", tok.start + 1, "add ')'")
            inner = self.expr(0)
            close = self._close(tok, ")", "to close the parenthesis")
            inner.start, inner.end, inner.paren = tok.start, close.end, True
            return inner
        if tok.is_op("["):
            return self._list(tok)
        if tok.kind == "ident":
            if tok.value in ("true", "false"):
                return _Lit(tok.value == "true", tok.start, tok.end)
            if tok.value == "null":
                return _Lit(None, tok.start, tok.end)
            if tok.value in _KEYWORDS:
                raise ConditionError(
                    f"expected a value, got keyword {tok.value!r}", tok.start + 1, _kw_hint(tok)
                )
            return self._path(tok)
        if tok.kind == "eof":
            raise ConditionError(
                "the condition ends too early", tok.start + 1, "complete the expression"
            )
        raise ConditionError(f"expected a value, got {tok.show()}", tok.start + 1, "")

    def _list(self, opener: _Tok) -> _ListLit:
        items: list[_Lit] = []
        if not self.peek().is_op("]"):
            while True:
                if self.peek().kind == "eof":
                    raise ConditionError("unclosed '['", opener.start + 1, "add ']'")
                item = self.primary()
                if not isinstance(item, _Lit) or isinstance(item.value, bool) or item.value is None:
                    raise ConditionError(
                        "list items must be string or number literals",
                        item.start + 1,
                        'e.g. ["a", "b"]; compare fields with == and join with or',
                    )
                items.append(item)
                if self.peek().is_op(","):
                    self.next()
                    if self.peek().is_op("]"):  # trailing comma
                        break
                    continue
                break
        close = self._close(opener, "]", "to close the list")
        return _ListLit(items, opener.start, close.end)

    def _path(self, first: _Tok) -> _Node:
        segs = [first.value]
        end = first.end
        while self.peek().is_op("."):
            dot = self.next()
            seg = self.next()
            if seg.kind != "ident":
                raise ConditionError(
                    f"expected a name after '.', got {seg.show()}", seg.start + 1, "e.g. meta.role"
                )
            if seg.start != dot.end or dot.start != end:
                raise ConditionError(
                    "no spaces allowed around '.' in a field name", dot.start + 1, "e.g. meta.role"
                )
            segs.append(seg.value)
            end = seg.end
        if not self.peek().is_op("("):
            return _Path(segs, first.start, end)
        opener = self.next()
        if len(segs) == 1:
            args: list[_Node] = []
            if not self.peek().is_op(")"):
                while True:
                    if self.peek().kind == "eof":
                        raise ConditionError("unclosed '('", opener.start + 1, "add ')'")
                    args.append(self.expr(0))
                    if not self.peek().is_op(","):
                        break
                    self.next()
            close = self._close(opener, ")", "after the function's arguments")
            return _Call(segs[0], args, first.start, close.end)
        method = segs[-1]
        method_col = end - len(method) + 1
        if method not in _QUANTS:
            close_match = difflib.get_close_matches(method, _QUANTS, n=1)
            hint = f"did you mean {close_match[0]!r}?" if close_match else "use any, all or count"
            raise ConditionError(f"unknown quantifier {method!r}", method_col, hint)
        var = self.next()
        if var.kind != "ident" or var.value in _KEYWORDS:
            raise ConditionError(
                f"expected a variable name, got {var.show()}",
                var.start + 1,
                f'e.g. {".".join(segs)}(c, c.label == "red")',
            )
        comma = self.next()
        if not comma.is_op(","):
            if comma.kind == "eof":
                raise ConditionError("unclosed '('", opener.start + 1, "add ')'")
            raise ConditionError(
                f"expected ',' after the variable, got {comma.show()}",
                comma.start + 1,
                f'e.g. {".".join(segs)}({var.value}, {var.value}.label == "red")',
            )
        if self.peek().kind == "eof":
            raise ConditionError("unclosed '('", opener.start + 1, "add ')'")
        body = self.expr(0)
        close = self._close(opener, ")", "after the quantifier's condition")
        coll = _Path(segs[:-1], first.start, end - len(method) - 1)
        return _Quant(method, coll, var.value, var.start, body, first.start, close.end)


def _shape(node: _Node) -> tuple[Any, ...]:
    """What a node means, without its position: equal shapes compile to the same closures
    (literals keep their class: 1, 1.0 and true differ)."""
    shape = node.shape
    if shape is None:
        if isinstance(node, _Lit):
            shape = ("lit", node.value.__class__, node.value)
        elif isinstance(node, _ListLit):
            shape = ("list", *((i.value.__class__, i.value) for i in node.items))
        elif isinstance(node, _Path):
            shape = ("path", *node.segs)
        elif isinstance(node, _Call):
            shape = ("call", node.name, *map(_shape, node.args))
        elif isinstance(node, _Quant):
            shape = ("quant", node.kind, _shape(node.coll), node.var, _shape(node.body))
        elif isinstance(node, _Not):
            shape = ("not", _shape(node.operand))
        elif isinstance(node, _BoolOp):
            shape = ("bool", node.op, *map(_shape, node.operands))
        elif isinstance(node, _Cmp):
            shape = ("cmp", node.op, _shape(node.left), _shape(node.right))
        else:  # pragma: no cover
            raise AssertionError(node)
        node.shape = shape
    return shape


def _kw_hint(tok: _Tok) -> str:
    if tok.value in ("and", "or"):
        return f"'{tok.value}' needs a condition on both sides"
    if tok.value in ("in", "matches"):
        return f"'{tok.value}' needs a value on its left"
    return ""


# --------------------------------------------------------------------------------------------
# Run-time helpers (called only off the hot path: missing values, non-dict mappings)


def _identity(e: Any) -> Any:
    return e


def _get_slow(d: Any, key: str) -> Any:
    if d is None or not isinstance(d, Mapping):
        return None
    try:
        return d.get(key)
    except Exception:  # a broken mapping must not make a rule raise
        return None


def _is_num(v: Any) -> bool:
    t = v.__class__
    if t is int or t is float:
        return True
    return t is not bool and isinstance(v, (int, float))


def _kind(v: Any) -> Type | None:
    t = v.__class__
    if t is str:
        return Type.STR
    if t is bool:
        return Type.BOOL
    if t is int or t is float:
        return Type.NUM
    if isinstance(v, str):
        return Type.STR
    if isinstance(v, (int, float)):
        return Type.NUM
    if isinstance(v, (list, tuple)):
        return Type.LIST
    return None


_SEQ = (list, tuple)
_SIZED = (str, list, tuple, dict)
_SIZED_SET = frozenset(_SIZED)
_COLL = (list, tuple, set, frozenset)


def _dig(base: Fn, keys: Sequence[str]) -> Fn:
    """Getter for base(...)[k1][k2]... where a missing level gives None. The getter's
    ``dig`` attribute is ``(base, keys)`` (ostracon.codegen writes the lookups inline)."""
    if len(keys) == 1:
        k = keys[0]

        def dig1(e: Any) -> Any:
            d = base(e)
            if d.__class__ is dict:
                return d.get(k)
            return _get_slow(d, k)

        dig1.dig = (base, (k,))  # type: ignore[attr-defined]
        return dig1
    ks = tuple(keys)

    def dig(e: Any) -> Any:
        d = base(e)
        for k in ks:
            d = d.get(k) if d.__class__ is dict else _get_slow(d, k)
        return d

    dig.dig = (base, ks)  # type: ignore[attr-defined]
    return dig


# --------------------------------------------------------------------------------------------
# Closure builders. L / R are operand closures, c is a constant. Each returns a real bool.


def _cmp_const(op: str, L: Fn, lt: Type, c: Any) -> Fn:
    """``L(e) <op> c`` for a constant c (already type-checked)."""
    anyt = lt is Type.ANY
    if c is None:
        if op == "==":
            return lambda e: L(e) is None
        return lambda e: L(e) is not None
    if isinstance(c, bool):
        if op == "==":
            return lambda e: L(e) is c

        def ne_bool(e: Any) -> bool:
            v = L(e)
            return (v is True or v is False) and v is not c

        return ne_bool
    num = not isinstance(c, str)
    # True == 1 in Python; here a bool is never a number, so guard where it could matter
    bool_guard = anyt and num and c in (0, 1)
    if op == "==":
        if bool_guard:

            def eq_guard(e: Any) -> bool:
                v = L(e)
                return v == c and v.__class__ is not bool

            return eq_guard
        return lambda e: L(e) == c
    if op == "!=":
        if not anyt:

            def ne(e: Any) -> bool:
                v = L(e)
                return v is not None and v != c

            return ne
        if num:

            def ne_num(e: Any) -> bool:
                v = L(e)
                return _is_num(v) and v != c

            return ne_num

        def ne_str(e: Any) -> bool:
            v = L(e)
            return (v.__class__ is str or isinstance(v, str)) and v != c

        return ne_str
    # ordering. Missing values are common (an absent meta key), so test for None instead of
    # catching the TypeError: a raised exception costs more than a whole rule.
    if anyt:
        return _order_any(op, L, c, num)
    if op == ">=":

        def ge(e: Any) -> bool:
            v = L(e)
            if v is None:
                return False
            try:
                return v >= c  # type: ignore[no-any-return]
            except TypeError:  # a getter returning the wrong type: a mismatch
                return False

        return ge
    if op == ">":

        def gt(e: Any) -> bool:
            v = L(e)
            if v is None:
                return False
            try:
                return v > c  # type: ignore[no-any-return]
            except TypeError:
                return False

        return gt
    if op == "<=":

        def le(e: Any) -> bool:
            v = L(e)
            if v is None:
                return False
            try:
                return v <= c  # type: ignore[no-any-return]
            except TypeError:
                return False

        return le

    def lt_(e: Any) -> bool:
        v = L(e)
        if v is None:
            return False
        try:
            return v < c  # type: ignore[no-any-return]
        except TypeError:
            return False

    return lt_


_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _order_any(op: str, L: Fn, c: Any, num: bool) -> Fn:
    """Ordering of an ANY value against a constant: other types (bool included) are false."""
    f = _ORDER[op]
    if num:

        def order_num(e: Any) -> bool:
            v = L(e)
            t = v.__class__
            if t is float or t is int:
                return f(v, c)  # type: ignore[no-any-return]
            return v is not None and _is_num(v) and bool(f(v, c))

        return order_num

    def order_str(e: Any) -> bool:
        v = L(e)
        return (v.__class__ is str or isinstance(v, str)) and bool(f(v, c))

    return order_str


def _cmp_dyn(op: str, L: Fn, lt: Type, R: Fn, rt: Type) -> Fn:
    """``L(e) <op> R(e)`` with both sides computed at run time."""
    f = _ORDER[op]
    check = lt is Type.ANY or rt is Type.ANY

    def cmp(e: Any) -> bool:
        a = L(e)
        if a is None:
            return False
        b = R(e)
        if b is None:
            return False
        if check:
            ka = _kind(a)
            if ka is None or ka is not _kind(b) or ka is Type.LIST:
                return False
        try:
            return bool(f(a, b))
        except TypeError:
            return False

    return cmp


def _in_const(negate: bool, L: Fn, lt: Type, items: frozenset[Any]) -> Fn:
    if lt is not Type.ANY:
        # a typed getter returning something unhashable is a mismatch, not a crash
        if not negate:

            def in_(e: Any) -> bool:
                try:
                    return L(e) in items
                except TypeError:
                    return False

            return in_

        def not_in(e: Any) -> bool:
            v = L(e)
            try:
                return v is not None and v not in items
            except TypeError:
                return False

        return not_in
    kinds: tuple[type, ...] = ()
    if any(isinstance(x, str) for x in items):
        kinds += (str,)
    if any(not isinstance(x, str) for x in items):
        kinds += (int, float)
    if not negate:
        bool_guard = 0 in items or 1 in items

        def in_any(e: Any) -> bool:
            v = L(e)
            try:
                return v in items and not (bool_guard and v.__class__ is bool)
            except TypeError:  # unhashable (a dict from meta): a mismatch
                return False

        return in_any

    def not_in_any(e: Any) -> bool:
        v = L(e)
        return isinstance(v, kinds) and v.__class__ is not bool and v not in items

    return not_in_any


def _in_dyn(negate: bool, L: Fn, R: Fn, rt: Type, const: bool = False, value: Any = None) -> Fn:
    check_coll = rt is Type.ANY
    if const and value is not None:  # "red" in labels: no call for the constant

        def const_in(e: Any) -> bool:
            s = R(e)
            if s is None or (check_coll and not isinstance(s, _COLL)):
                return False
            try:
                return (value not in s) if negate else (value in s)
            except TypeError:
                return False

        return const_in

    def in_(e: Any) -> bool:
        v = L(e)
        if v is None:
            return False
        s = R(e)
        if s is None or (check_coll and not isinstance(s, _COLL)):
            return False
        try:
            return (v not in s) if negate else (v in s)
        except TypeError:
            return False

    return in_


# A "spec" (g, S, True) says a predicate is exactly ``g(e) in S``; (g, S, False) that it is
# ``g(e) not in S``; S a frozenset of constants. and/or and quantifiers inline such tests
# instead of calling their closures (a Python call is the unit of cost here, ~30 ns). Covered,
# for typed str/num/bool fields: ``x == c`` / ``x in [..]`` (in S), ``x != c`` / ``x not in
# [..]`` (not in S | {None}: a missing value stays false), ``not (x in ..)``, and a bool field
# ``b`` / ``not b`` (in / not in {True}).
Spec = tuple[Fn, frozenset[Any], bool]


# The inlined closures below fall back to the operands' own closures (which never raise) when
# an unhashable value meets a set: try costs nothing in 3.11 until something raises.


def _and2(a: Fn, b: Fn, sa: Spec | None, sb: Spec | None) -> Fn:
    if sa is not None:
        ga, A, pa = sa
        if sb is not None:
            gb, B, pb = sb
            if pa and pb:

                def in_in(e: Any) -> bool:
                    try:
                        return ga(e) in A and gb(e) in B
                    except TypeError:
                        return a(e) and b(e)  # type: ignore[no-any-return]

                return in_in
            if pa:

                def in_out(e: Any) -> bool:
                    try:
                        return ga(e) in A and gb(e) not in B
                    except TypeError:
                        return a(e) and b(e)  # type: ignore[no-any-return]

                return in_out
            if pb:

                def out_in(e: Any) -> bool:
                    try:
                        return ga(e) not in A and gb(e) in B
                    except TypeError:
                        return a(e) and b(e)  # type: ignore[no-any-return]

                return out_in

            def out_out(e: Any) -> bool:
                try:
                    return ga(e) not in A and gb(e) not in B
                except TypeError:
                    return a(e) and b(e)  # type: ignore[no-any-return]

            return out_out
        if pa:

            def in_f(e: Any) -> bool:
                try:
                    if ga(e) not in A:
                        return False
                except TypeError:
                    return a(e) and b(e)  # type: ignore[no-any-return]
                return b(e)  # type: ignore[no-any-return]

            return in_f

        def out_f(e: Any) -> bool:
            try:
                if ga(e) in A:
                    return False
            except TypeError:
                return a(e) and b(e)  # type: ignore[no-any-return]
            return b(e)  # type: ignore[no-any-return]

        return out_f
    if sb is not None:
        gb, B, pb = sb
        if pb:

            def f_in(e: Any) -> bool:
                if not a(e):
                    return False
                try:
                    return gb(e) in B
                except TypeError:
                    return b(e)  # type: ignore[no-any-return]

            return f_in

        def f_out(e: Any) -> bool:
            if not a(e):
                return False
            try:
                return gb(e) not in B
            except TypeError:
                return b(e)  # type: ignore[no-any-return]

        return f_out
    return lambda e: a(e) and b(e)


def _or2(a: Fn, b: Fn, sa: Spec | None, sb: Spec | None) -> Fn:
    if sa is not None:
        ga, A, pa = sa
        if sb is not None:
            gb, B, pb = sb
            if pa and pb:

                def in_in(e: Any) -> bool:
                    try:
                        return ga(e) in A or gb(e) in B
                    except TypeError:
                        return a(e) or b(e)  # type: ignore[no-any-return]

                return in_in
            if pa:

                def in_out(e: Any) -> bool:
                    try:
                        return ga(e) in A or gb(e) not in B
                    except TypeError:
                        return a(e) or b(e)  # type: ignore[no-any-return]

                return in_out
            if pb:

                def out_in(e: Any) -> bool:
                    try:
                        return ga(e) not in A or gb(e) in B
                    except TypeError:
                        return a(e) or b(e)  # type: ignore[no-any-return]

                return out_in

            def out_out(e: Any) -> bool:
                try:
                    return ga(e) not in A or gb(e) not in B
                except TypeError:
                    return a(e) or b(e)  # type: ignore[no-any-return]

            return out_out
        if pa:

            def in_f(e: Any) -> bool:
                try:
                    if ga(e) in A:
                        return True
                except TypeError:
                    return a(e) or b(e)  # type: ignore[no-any-return]
                return b(e)  # type: ignore[no-any-return]

            return in_f

        def out_f(e: Any) -> bool:
            try:
                if ga(e) not in A:
                    return True
            except TypeError:
                return a(e) or b(e)  # type: ignore[no-any-return]
            return b(e)  # type: ignore[no-any-return]

        return out_f
    if sb is not None:
        gb, B, pb = sb
        if pb:

            def f_in(e: Any) -> bool:
                if a(e):
                    return True
                try:
                    return gb(e) in B
                except TypeError:
                    return b(e)  # type: ignore[no-any-return]

            return f_in

        def f_out(e: Any) -> bool:
            if a(e):
                return True
            try:
                return gb(e) not in B
            except TypeError:
                return b(e)  # type: ignore[no-any-return]

        return f_out
    return lambda e: a(e) or b(e)


def conjoin(fns: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool] | None:
    """``fns[0](e) and fns[1](e) and ...`` as one closure, evaluated in the given order (e.g.
    some of a :attr:`Condition.conjuncts`); None for no operand."""
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]
    return _and(list(fns), [None] * len(fns))


def _order(costs: list[float]) -> list[int]:
    """Evaluation order of and/or operands: cheapest first, ties in written order."""
    return sorted(range(len(costs)), key=costs.__getitem__)


def _and(fs: list[Fn], specs: list[Spec | None]) -> Fn:
    if len(fs) == 2:
        return _and2(fs[0], fs[1], specs[0], specs[1])
    if len(fs) == 3:
        a, b, c = fs
        sa = specs[0]
        if sa is not None:
            ga, A, pa = sa

            def and3(e: Any) -> bool:
                try:
                    if (ga(e) in A) is not pa:
                        return False
                except TypeError:
                    return a(e) and b(e) and c(e)  # type: ignore[no-any-return]
                return b(e) and c(e)  # type: ignore[no-any-return]

            return and3
        return lambda e: a(e) and b(e) and c(e)
    if len(fs) == 4:
        a, b, c, d = fs
        return lambda e: a(e) and b(e) and c(e) and d(e)
    ts = tuple(fs)

    def and_n(e: Any) -> bool:
        for f in ts:
            if not f(e):
                return False
        return True

    return and_n


def _or(fs: list[Fn], specs: list[Spec | None]) -> Fn:
    if len(fs) == 2:
        return _or2(fs[0], fs[1], specs[0], specs[1])
    if len(fs) == 3:
        a, b, c = fs
        sa = specs[0]
        if sa is not None:
            ga, A, pa = sa

            def or3(e: Any) -> bool:
                try:
                    if (ga(e) in A) is pa:
                        return True
                except TypeError:
                    return a(e) or b(e) or c(e)  # type: ignore[no-any-return]
                return b(e) or c(e)  # type: ignore[no-any-return]

            return or3
        return lambda e: a(e) or b(e) or c(e)
    if len(fs) == 4:
        a, b, c, d = fs
        return lambda e: a(e) or b(e) or c(e) or d(e)
    ts = tuple(fs)

    def or_n(e: Any) -> bool:
        for f in ts:
            if f(e):
                return True
        return False

    return or_n


def _cmp_dig(op: str, base: Fn, k: str, c: Any) -> Fn | None:
    """``meta.k <op> c`` (an ANY value one key into a mapping) as one closure: the lookup is
    inlined. None where the generic composition must handle it."""
    if c is None or isinstance(c, bool):
        if op == "==":

            def is_(e: Any) -> bool:
                d = base(e)
                return (d.get(k) if d.__class__ is dict else _get_slow(d, k)) is c

            return is_
        return None
    num = not isinstance(c, str)
    if op == "!=":
        if num:
            return None

        def ne_str(e: Any) -> bool:
            d = base(e)
            v = d.get(k) if d.__class__ is dict else _get_slow(d, k)
            return (v.__class__ is str or isinstance(v, str)) and v != c

        return ne_str
    if op == "==":
        if num and c in (0, 1):  # True == 1: needs the bool guard of the generic path
            return None

        def eq(e: Any) -> bool:
            d = base(e)
            return (d.get(k) if d.__class__ is dict else _get_slow(d, k)) == c  # type: ignore[no-any-return]

        return eq
    f = _ORDER[op]
    if num:

        def order_num(e: Any) -> bool:
            d = base(e)
            v = d.get(k) if d.__class__ is dict else _get_slow(d, k)
            t = v.__class__
            if t is float or t is int:
                return f(v, c)  # type: ignore[no-any-return]
            return v is not None and _is_num(v) and bool(f(v, c))

        return order_num

    def order_str(e: Any) -> bool:
        d = base(e)
        v = d.get(k) if d.__class__ is dict else _get_slow(d, k)
        return (v.__class__ is str or isinstance(v, str)) and bool(f(v, c))

    return order_str


def _in_dig(base: Fn, k: str, items: frozenset[Any]) -> Fn:
    """``meta.k in [...]`` as one closure."""
    bool_guard = 0 in items or 1 in items

    def in_(e: Any) -> bool:
        d = base(e)
        v = d.get(k) if d.__class__ is dict else _get_slow(d, k)
        try:
            return v in items and not (bool_guard and v.__class__ is bool)
        except TypeError:  # unhashable: a mismatch
            return False

    return in_


# --------------------------------------------------------------------------------------------
# Compiler


class _C:
    """A compiled expression: its static type, closure, and what is known at load time."""

    __slots__ = (
        "access",
        "const",
        "fields",
        "fn",
        "fuse",
        "spec",
        "strict",
        "truth",
        "type",
        "value",
    )

    def __init__(
        self,
        type: Type,
        fn: Fn,
        *,
        const: bool = False,
        value: Any = None,
        strict: bool = False,
        fields: frozenset[str] = frozenset(),
        spec: Spec | None = None,
        access: tuple[Fn, str] | None = None,
        fuse: tuple[Any, ...] | None = None,
    ) -> None:
        # ("len", X) / ("count", C, check, spec, body): a number a comparison can fold into
        self.fuse = fuse
        self.spec = spec  # see Spec
        self.access = access  # (getter of a mapping, key): fn is mapping.get(key)
        self.type = type
        self.fn = fn
        self.const = const  # a literal: value holds it (a frozenset for a list)
        self.value = value
        self.strict = strict  # fn always returns a real bool
        self.fields = fields
        self.truth: Fn | None = None  # the bool closure of a non-strict one (see _bool_fn)


_TRUE = frozenset([True])


def _spec(c: _C) -> Spec | None:
    if c.spec is not None:
        return c.spec
    if c.type is Type.BOOL and not c.strict and not c.const:
        return (c.fn, _TRUE, True)  # a typed bool field: True (or 1) is in {True}
    return None


def _const(value: Any, type: Type) -> _C:
    return _C(type, lambda e: value, const=True, value=value, strict=isinstance(value, bool))


class _Var:
    __slots__ = ("coll", "level", "record")

    def __init__(self, level: int | None, record: Schema | None, coll: str) -> None:
        self.level = level  # index of the item in the env tuple; None: the env IS the item
        self.record = record  # the item's schema, or None when the item is a plain value
        self.coll = coll  # collection field name (for Condition.fields)


class _Scope:
    """What the env passed to closures is. depth 0: the facts; depth d > 0: the tuple
    (facts, item1, .., itemd); item_only: the quantifier's item itself (a body that reads
    nothing but its own variable - the common case, and much cheaper: no tuple per item, and
    the record getters are called directly)."""

    __slots__ = ("depth", "item_only", "key", "vars")

    def __init__(
        self, depth: int = 0, vars: Mapping[str, _Var] | None = None, item_only: bool = False
    ) -> None:
        self.depth = depth
        self.vars: Mapping[str, _Var] = vars or {}
        self.item_only = item_only
        # what compiling in this scope depends on (see Compiler._c)
        self.key = (
            depth,
            item_only,
            tuple(sorted((n, v.level, id(v.record), v.coll) for n, v in self.vars.items())),
        )

    def lift(self, fn: Fn) -> Fn:
        """Adapt a facts-level closure to this scope's env."""
        if self.depth == 0:
            return fn
        return lambda e: fn(e[0])


_TOP = _Scope()


class _NeedsEnv(Exception):
    """An item-only quantifier body reads something other than its variable."""


_FUNCS = {"lower": 1, "upper": 1, "len": 1, "startswith": 2, "endswith": 2, "contains": 2}


def _tname(t: Type) -> str:
    return {Type.LIST: "list", Type.RECORDS: "list of records"}.get(t, t.value)


class Compiler:
    """Compiles many conditions against one schema; each macro is compiled once and reused."""

    def __init__(
        self,
        schema: Schema,
        macros: Mapping[str, str] = _EMPTY,
        lists: Mapping[str, Sequence[str | int | float]] = _EMPTY,
    ) -> None:
        self.schema = schema
        self.macros = macros
        self.lists = lists
        self._macro_cache: dict[str, tuple[_C, dict[str, Fn]]] = {}
        self._macro_nodes: dict[str, _Node] = {}  # parsed macro bodies (costs, conjuncts)
        self._shared: dict[tuple[Any, ...], tuple[_C, dict[str, Fn]]] = {}  # see _c
        self._macro_costs: dict[str, float] = {}
        self._list_cache: dict[str, _C] = {}
        self._stack: list[str] = []  # macros being compiled (cycle detection)
        self._text = ""
        self._getters: dict[str, Fn] = {}

    # -- entry points ------------------------------------------------------------------------

    def compile(self, text: str) -> Condition:
        """Compile one condition; it must be boolean."""
        node, c, getters = self._compile_text(text)
        fn = self._bool_fn(c, node)
        parts: list[tuple[str, Callable[[Any], bool]]] = []
        conjuncts: list[Conjunct] | None = None
        guards: list[Guard] = []
        saved = self._text, self._getters
        self._text, self._getters = text, {}
        try:
            if isinstance(node, (_BoolOp, _Not)):
                operands = node.operands if isinstance(node, _BoolOp) else [node.operand]
                for op in operands:
                    parts.append((text[op.start : op.end], self._bool_fn(self._c(op, _TOP), op)))
            flat = self._and_operands(node)
            if len(flat) > 1:
                conjuncts = []
                for op in [flat[i] for i in _order([self._cost(n) for n in flat])]:
                    oc = self._c(op, _TOP)
                    conjuncts.append((oc.fields, self._bool_fn(oc, op)))
            for op in flat:
                guard = self._guard(op)
                if guard is not None:
                    guards.append(guard)
        finally:
            self._text, self._getters = saved
        return Condition(
            text,
            fn,
            c.fields,
            parts,
            getters,
            conjuncts,
            guards,
            node,
        )

    def check_macros(self) -> None:
        """Compile every macro now, so a broken one fails at load even if no rule uses it."""
        for name in self.macros:
            self._macro(name, 0)

    # -- internals ---------------------------------------------------------------------------

    def _compile_text(self, text: str) -> tuple[_Node, _C, dict[str, Fn]]:
        saved = self._text, self._getters
        self._text, self._getters = text, {}
        try:
            node = _Parser(text).parse()
            c = self._c(node, _TOP)
            if c.type not in (Type.BOOL, Type.ANY):
                raise ConditionError(
                    f"the condition must be true/false, but this is a {_tname(c.type)}",
                    node.start + 1,
                    'compare it with something, e.g. sender == "planner"',
                )
            return node, c, self._getters
        finally:
            self._text, self._getters = saved

    def _err(self, msg: str, pos: int, hint: str = "") -> ConditionError:
        return ConditionError(msg, pos + 1, hint)

    def _bool_fn(self, c: _C, node: _Node) -> Fn:
        if c.type not in (Type.BOOL, Type.ANY):
            raise self._err(
                f"expected a true/false condition, got a {_tname(c.type)}",
                node.start,
                "compare it with something, e.g. x == 1",
            )
        if c.strict:
            return c.fn
        if c.truth is None:  # one closure per expression, so equal conjuncts stay identical
            g = c.fn
            c.truth = lambda e: g(e) is True
        return c.truth

    def _c(self, node: _Node, scope: _Scope) -> _C:
        """Compile a node. The same expression in the same scope -- ``sender.role !=
        "auditor"`` or ``lower(content)`` in several rules -- compiles to the same closures:
        fewer objects for a message to bring into the CPU caches (a rule set is evaluated
        right after other stages ran), and less memory."""
        key = (_shape(node), scope.key)
        hit = self._shared.get(key)
        if hit is not None:
            self._getters.update(hit[1])
            return hit[0]
        outer = self._getters
        self._getters = {}
        try:
            c = self._compile_node(node, scope)
            getters = self._getters
        finally:
            self._getters = outer | self._getters
        self._shared[key] = (c, getters)
        return c

    def _compile_node(self, node: _Node, scope: _Scope) -> _C:
        if isinstance(node, _Lit):
            v = node.value
            if v is None:
                return _const(None, Type.NULL)
            if isinstance(v, bool):
                return _const(v, Type.BOOL)
            return _const(v, Type.STR if isinstance(v, str) else Type.NUM)
        if isinstance(node, _ListLit):
            items = tuple(i.value for i in node.items)
            return _C(Type.LIST, lambda e: items, const=True, value=frozenset(items))
        if isinstance(node, _Path):
            return self._path(node, scope)
        if isinstance(node, _Cmp):
            return self._cmp(node, scope)
        if isinstance(node, _BoolOp):
            return self._boolop(node, scope)
        if isinstance(node, _Not):
            inner = self._c(node.operand, scope)
            f = self._bool_fn(inner, node.operand)
            if inner.const:
                return _const(not f(None), Type.BOOL)
            spec = _spec(inner)
            if spec is not None:  # not (x in S) is exactly x not in S, missing included
                g, S, pos = spec
                spec = (g, S, not pos)

                def negated(e: Any) -> bool:
                    try:
                        return (g(e) in S) is not pos
                    except TypeError:  # unhashable: ask the operand's own closure
                        return not f(e)

                return _C(Type.BOOL, negated, strict=True, fields=inner.fields, spec=spec)
            if not inner.strict:  # an ANY value: one closure instead of two
                g = inner.fn
                return _C(Type.BOOL, lambda e: g(e) is not True, strict=True, fields=inner.fields)
            return _C(Type.BOOL, lambda e: not f(e), strict=True, fields=inner.fields)
        if isinstance(node, _Call):
            return self._call(node, scope)
        if isinstance(node, _Quant):
            return self._quant(node, scope)
        raise AssertionError(node)  # pragma: no cover

    def _operands(self, node: _BoolOp) -> list[_Node]:
        """Its operands in evaluation order: nested ones of the same operator flattened
        ((a and b) and c: the operators are associative, one closure is faster), cheapest
        first. Operands have no side effects and never raise, so the result does not depend
        on their order: a field test before a regex before a loop over the claims. The sort
        is stable: equal costs keep the written order."""
        flat: list[_Node] = []
        todo = list(node.operands)
        while todo:
            n = todo.pop(0)
            if isinstance(n, _BoolOp) and n.op == node.op:
                todo[:0] = n.operands
            else:
                flat.append(n)
        return [flat[i] for i in _order([self._cost(n) for n in flat])]

    def _boolop(self, node: _BoolOp, scope: _Scope) -> _C:
        flat = self._operands(node)
        cs = [self._c(n, scope) for n in flat]
        fns = [self._bool_fn(c, n) for c, n in zip(cs, flat, strict=True)]
        specs = [_spec(c) for c in cs]
        fields = frozenset().union(*(c.fields for c in cs))
        fn = _and(fns, specs) if node.op == "and" else _or(fns, specs)
        return _C(Type.BOOL, fn, strict=True, fields=fields)

    # -- names -------------------------------------------------------------------------------

    def _path(self, node: _Path, scope: _Scope) -> _C:
        segs = node.segs
        name = ".".join(segs)
        var = scope.vars.get(segs[0])
        if var is not None:
            return self._var_path(node, var, segs[1:])
        if scope.item_only:
            if len(segs) == 1 and name in self.lists and name not in self.macros:
                if _resolve(self.schema, segs) is None:
                    return self._named_list(name, node.start)
            raise _NeedsEnv
        found = _resolve(self.schema, segs)
        if found is not None:
            field, rest, key = found
            fn = _dig(field.get, rest) if rest else field.get
            fname = ".".join([key, *rest]) if rest else key
            self._getters[fname] = fn
            access = (field.get, rest[0]) if len(rest) == 1 and scope.depth == 0 else None
            return _C(field.type, scope.lift(fn), fields=frozenset([fname]), access=access)
        if len(segs) == 1 and name in self.macros:
            c, getters = self._macro(name, node.start)
            self._getters.update(getters)
            if scope.depth == 0:  # keep what and/or can inline
                return _C(c.type, c.fn, strict=c.strict, fields=c.fields, spec=c.spec)
            return _C(c.type, scope.lift(c.fn), strict=c.strict, fields=c.fields)
        if len(segs) == 1 and name in self.lists:
            return self._named_list(name, node.start)
        if (name + ".*") in self.schema:
            raise self._err(f"{name} needs a key", node.start, f"e.g. {name}.role")
        for i in range(len(segs) - 1, 0, -1):
            prefix = self.schema.get(".".join(segs[:i]))
            if prefix is not None and prefix.type is Type.RECORDS:
                key = ".".join(segs[:i])
                raise self._err(
                    f"{key} is a list of records",
                    node.start,
                    f"use {key}.any(x, x.{segs[i]} ...) or len({key})",
                )
        raise self._unknown(name, node.start, scope)

    def _unknown(self, name: str, pos: int, scope: _Scope) -> ConditionError:
        names = [k[:-2] + ".<key>" if k.endswith(".*") else k for k in self.schema]
        names += list(self.macros) + list(self.lists)
        for vname, var in scope.vars.items():
            if var.record is not None:
                names += [f"{vname}.{k}" for k in var.record]
            else:
                names.append(vname)
        # "mta.role" should suggest "meta.role": fill wildcards with the key that was written
        rest = name.split(".", 1)[1] if "." in name else "<key>"
        cands = [n.replace("<key>", rest) for n in names]
        match = difflib.get_close_matches(name, cands, n=1, cutoff=0.6)
        if match:
            hint = f"did you mean {match[0]!r}?"
        else:
            shown = ", ".join(sorted(names)[:12])
            hint = f"known names: {shown}" + (", ..." if len(names) > 12 else "")
        return self._err(f"unknown field {name!r}", pos, hint)

    def _var_path(self, node: _Path, var: _Var, rest: list[str]) -> _C:
        j = var.level
        vname = node.segs[0]
        if var.record is None:
            item: Fn = _identity if j is None else (lambda e: e[j])
            return _C(Type.ANY, _dig(item, rest) if rest else item, fields=frozenset([var.coll]))
        if not rest:
            fields = ", ".join(f"{vname}.{k}" for k in list(var.record)[:6])
            raise self._err(f"{vname} is a record; use one of its fields", node.start, fields)
        found = _resolve(var.record, rest)
        if found is None:
            raise self._unknown(".".join(node.segs), node.start, _Scope(1, {vname: var}))
        field, more, key = found
        g = field.get
        fn: Fn = g if j is None else (lambda e: g(e[j]))
        access = (g, more[0]) if j is None and len(more) == 1 else None
        if more:
            fn = _dig(fn, more)
        fname = ".".join([var.coll, key, *more])
        return _C(field.type, fn, fields=frozenset([fname]), access=access)

    def _macro(self, name: str, pos: int) -> tuple[_C, dict[str, Fn]]:
        cached = self._macro_cache.get(name)
        if cached is not None:
            return cached
        if name in self._stack:
            cycle = " -> ".join([*self._stack[self._stack.index(name) :], name])
            raise self._err(f"macro cycle: {cycle}", pos, "a macro cannot use itself")
        if len(self._stack) >= _MAX_DEPTH:
            raise self._err(f"macros nested more than {_MAX_DEPTH} deep", pos, "flatten them")
        self._stack.append(name)
        try:
            mnode, c, getters = self._compile_text(self.macros[name])
        except ConditionError as exc:
            if exc.macro is None:  # innermost macro: its text is where col points
                exc.macro = name
                exc.message = f"in macro {name!r}: {exc.message}"
                exc.args = (str(exc),)
            raise
        finally:
            self._stack.pop()
        self._macro_cache[name] = (c, getters)
        self._macro_nodes[name] = mnode
        return c, getters

    # -- structure for indexing and ordering ---------------------------------------------------

    def _macro_node(self, node: _Node) -> _Node | None:
        """The parsed body of the (compiled) macro that ``node`` names at the top level."""
        if not isinstance(node, _Path) or len(node.segs) != 1:
            return None
        if _resolve(self.schema, node.segs) is not None:  # a field shadows a macro
            return None
        return self._macro_nodes.get(node.segs[0])

    def _and_operands(self, node: _Node) -> list[_Node]:
        """The operands of a top-level ``and``, nested ``and`` and macros flattened."""
        body = self._macro_node(node)
        if body is not None:
            return self._and_operands(body)
        if isinstance(node, _BoolOp) and node.op == "and":
            return [n for op in node.operands for n in self._and_operands(op)]
        return [node]

    def _facts_field(self, node: _Node) -> tuple[str, Type] | None:
        """(name as in Condition.fields, type) of a facts-level field path."""
        if not isinstance(node, _Path):
            return None
        found = _resolve(self.schema, node.segs)
        if found is None:
            return None
        field, rest, key = found
        return (".".join([key, *rest]) if rest else key), field.type

    def _guard(self, node: _Node) -> Guard | None:
        """``field == c``, ``c == field``, ``field in [..]`` / named list, bare bool field."""
        body = self._macro_node(node)
        if body is not None:
            return self._guard(body)
        f = self._facts_field(node)
        if f is not None:
            return (f[0], _TRUE) if f[1] is Type.BOOL else None
        if not isinstance(node, _Cmp) or node.op not in ("==", "in"):
            return None
        left, right = node.left, node.right
        if node.op == "==" and isinstance(left, _Lit):
            left, right = right, left
        f = self._facts_field(left)
        if f is None or f[1] not in (Type.STR, Type.NUM, Type.BOOL, Type.ANY):
            return None
        if node.op == "==":
            if not isinstance(right, _Lit) or right.value is None:
                return None
            return f[0], frozenset([right.value])
        if isinstance(right, _ListLit):
            return f[0], frozenset(i.value for i in right.items)
        if self._list_name(right):
            assert isinstance(right, _Path)
            return f[0], frozenset(self.lists[right.segs[0]])
        return None

    def _quant_guard(self, quant: _Quant) -> RecordGuard | None:
        """(collection, field, values) when the quantifier's body has a conjunct ``c.f ==
        k`` (or ``in``, or a bare bool ``c.f``) over a facts-level records field: no record
        without ``f`` in ``values`` satisfies the body."""
        found = _resolve(self.schema, quant.coll.segs)
        if found is None or found[1] or found[0].type is not Type.RECORDS:
            return None
        record = found[0].record
        if record is None:
            return None
        todo: list[_Node] = [quant.body]
        while todo:
            n = todo.pop(0)
            if isinstance(n, _BoolOp) and n.op == "and":
                todo[:0] = n.operands
                continue
            hit = self._record_guard(n, quant.var, record)
            if hit is not None:
                return found[2], hit[0], frozenset(hit[1])
        return None

    def _cost(self, node: _Node) -> float:
        """Rough cost of evaluating ``node``, in Python calls (~30 ns each): what the
        ``and``/``or`` operand order is decided on."""
        if isinstance(node, (_Lit, _ListLit)):
            return 0.0
        if isinstance(node, _Path):
            if len(node.segs) == 1 and _resolve(self.schema, node.segs) is None:
                name = node.segs[0]
                if name in self._macro_nodes:
                    cost = self._macro_costs.get(name)
                    if cost is None:
                        cost = self._macro_costs[name] = self._cost(self._macro_nodes[name])
                    return cost
                if name in self.lists:
                    return 0.0
            found = _resolve(self.schema, node.segs)
            return 1.0 + 0.5 * len(found[1]) if found is not None else 1.0
        if isinstance(node, _Cmp):
            if node.op == "matches":
                return self._cost(node.left) + 5.0
            cost = self._cost(node.left) + self._cost(node.right) + 1.0
            if node.op in ("in", "not in") and not isinstance(node.right, _ListLit):
                right = node.right
                named = isinstance(right, _Path) and self._cost(right) == 0.0
                if not named:  # a list field: a scan, not a set lookup
                    cost += 1.0
            return cost
        if isinstance(node, _Call):
            args = sum(self._cost(a) for a in node.args)
            return args + {"len": 1.0, "lower": 2.0, "upper": 2.0}.get(node.name, 2.0)
        if isinstance(node, _Quant):  # assume a few items
            return self._cost(node.coll) + 2.0 + 3.0 * self._cost(node.body)
        if isinstance(node, _Not):
            return self._cost(node.operand) + 0.5
        if isinstance(node, _BoolOp):
            return sum(self._cost(n) for n in node.operands) + 0.5
        return 1.0  # pragma: no cover

    def _named_list(self, name: str, pos: int) -> _C:
        c = self._list_cache.get(name)
        if c is None:
            items = tuple(self.lists[name])
            for x in items:
                if not isinstance(x, (str, int, float)) or isinstance(x, bool):
                    raise self._err(
                        f"named list {name!r} holds {x!r}", pos, "named lists hold strings/numbers"
                    )
            c = _C(Type.LIST, lambda e: items, const=True, value=frozenset(items))
            self._list_cache[name] = c
        return c

    # -- comparisons -------------------------------------------------------------------------

    def _cmp(self, node: _Cmp, scope: _Scope) -> _C:
        op = node.op
        left = self._c(node.left, scope)
        if op in ("in", "not in"):
            return self._in(node, left, scope)
        if op == "matches":
            return self._matches(node, left)
        right = self._c(node.right, scope)
        lt, rt = left.type, right.type
        fields = left.fields | right.fields
        self._check_cmp(node, left, right)
        if left.const and not right.const:
            left, right = right, left
            lt, rt = rt, lt
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        spec: Spec | None = None
        if right.const:
            c = right.value
            fn = None
            if left.access is not None and lt is Type.ANY:
                fn = _cmp_dig(op, *left.access, c)
            elif left.fuse is not None and isinstance(c, (int, float)):
                fn = _cmp_fused_num(op, left.fuse, c)
            if fn is None:
                fn = _cmp_const(op, left.fn, lt, c)
            if op in ("==", "!=") and not left.const and c is not None:
                # typed values are hashable; a bool const only meets a bool field here
                if lt in (Type.STR, Type.NUM, Type.BOOL):
                    if op == "==":
                        spec = (left.fn, frozenset([c]), True)
                    else:
                        spec = (left.fn, frozenset([c, None]), False)
        else:
            fn = _cmp_dyn(op, left.fn, lt, right.fn, rt)
        return _C(Type.BOOL, fn, strict=True, fields=fields, spec=spec)

    def _check_cmp(self, node: _Cmp, left: _C, right: _C) -> None:
        op, lt, rt = node.op, left.type, right.type
        for side, t in ((node.left, lt), (node.right, rt)):
            if t is Type.RECORDS:
                src = self._text[side.start : side.end]
                raise self._err(
                    f"cannot compare {src} (a list of records) with {op}",
                    node.op_start,
                    f"use {src}.any(x, ...), {src}.count(x, ...) or len({src})",
                )
            if t is Type.LIST:
                raise self._err(
                    f"cannot compare a list with {op}", node.op_start, "use in / not in / len(...)"
                )
        if Type.NULL in (lt, rt):
            if op not in ("==", "!="):
                raise self._err(f"cannot order null with {op}", node.op_start, "use == null")
            return
        if op not in ("==", "!=") and Type.BOOL in (lt, rt):
            raise self._err(f"cannot order booleans with {op}", node.op_start, "use == or !=")
        if lt is Type.ANY or rt is Type.ANY or lt is rt:
            return
        hint = "both sides must have the same type"
        if lt is Type.STR and rt is Type.NUM and right.const:
            hint = f'quote the number: "{self._text[node.right.start : node.right.end]}"'
        elif lt is Type.NUM and rt is Type.STR and right.const and _numeric(right.value):
            hint = "remove the quotes to compare numbers"
        raise self._err(f"cannot compare {_tname(lt)} with {_tname(rt)}", node.op_start, hint)

    def _in(self, node: _Cmp, left: _C, scope: _Scope) -> _C:
        negate = node.op == "not in"
        right = self._c(node.right, scope)
        lt, rt = left.type, right.type
        if rt not in (Type.LIST, Type.ANY):
            hint = "use contains(x, sub) for a substring" if rt is Type.STR else "e.g. x in [1, 2]"
            raise self._err(
                f"the right side of {node.op!r} must be a list, got {_tname(rt)}",
                node.right.start,
                hint,
            )
        if lt not in (Type.STR, Type.NUM, Type.ANY):
            raise self._err(
                f"the left side of {node.op!r} must be a string or number, got {_tname(lt)}",
                node.left.start,
                "",
            )
        fields = left.fields | right.fields
        if right.const:
            items: frozenset[Any] = right.value
            if lt is not Type.ANY and items:
                want = str if lt is Type.STR else (int, float)
                if not any(isinstance(x, want) for x in items):
                    raise self._err(
                        f"{_tname(lt)} {node.op} a list with no {_tname(lt)} items",
                        node.op_start,
                        "quote the items" if lt is Type.STR else "remove the quotes",
                    )
            if left.const:
                v = left.value in items
                return _const(not v if negate else v, Type.BOOL)
            if not negate and left.access is not None and lt is Type.ANY:
                fn = _in_dig(*left.access, items)
            else:
                fn = _in_const(negate, left.fn, lt, items)
            if lt is not Type.ANY:  # typed values are hashable
                spec = (left.fn, items | {None}, False) if negate else (left.fn, items, True)
                return _C(Type.BOOL, fn, strict=True, fields=fields, spec=spec)
        else:
            fn = _in_dyn(negate, left.fn, right.fn, rt, left.const, left.value)
        return _C(Type.BOOL, fn, strict=True, fields=fields)

    def _matches(self, node: _Cmp, left: _C) -> _C:
        rnode = node.right
        if not (isinstance(rnode, _Lit) and isinstance(rnode.value, str)):
            raise self._err(
                "the right side of 'matches' must be a string literal",
                rnode.start,
                'e.g. sender matches "^bot-"',
            )
        if left.type not in (Type.STR, Type.ANY):
            raise self._err(
                f"'matches' needs a string on its left, got {_tname(left.type)}",
                node.left.start,
                "",
            )
        try:
            search = re.compile(rnode.value).search
        except re.error as exc:
            raise self._err(f"invalid regex: {exc}", rnode.start, "check the pattern") from None
        L = left.fn
        cased = _case_of(left)
        if cased is not None:  # lower(x) matches ..
            inner, m = cased

            def match_case(e: Any) -> bool:
                v = inner(e)
                return (v.__class__ is str or isinstance(v, str)) and search(m(v)) is not None

            return _C(Type.BOOL, match_case, strict=True, fields=left.fields)

        def match(e: Any) -> bool:
            v = L(e)
            return (v.__class__ is str or isinstance(v, str)) and search(v) is not None

        return _C(Type.BOOL, match, strict=True, fields=left.fields)

    # -- functions ---------------------------------------------------------------------------

    def _call(self, node: _Call, scope: _Scope) -> _C:
        name = node.name
        arity = _FUNCS.get(name)
        if arity is None:
            match = difflib.get_close_matches(name, _FUNCS, n=1)
            hint = f"did you mean {match[0]!r}?" if match else "known: " + ", ".join(_FUNCS)
            if name in self.macros or name in self.lists or _resolve(self.schema, [name]):
                hint = f"{name} is not a function; remove the parentheses"
            raise self._err(f"unknown function {name!r}", node.start, hint)
        if len(node.args) != arity:
            plural = "s" if arity > 1 else ""
            raise self._err(
                f"{name}() takes {arity} argument{plural}, got {len(node.args)}",
                node.start,
                "e.g. " + ("lower(sender)" if arity == 1 else f'{name}(sender, "x")'),
            )
        args = [self._c(a, scope) for a in node.args]
        fields = frozenset().union(*(a.fields for a in args))
        x = args[0]
        X = x.fn
        if name in ("lower", "upper"):
            self._want(node.args[0], x, (Type.STR, Type.ANY), name)
            m = str.lower if name == "lower" else str.upper
            if x.const:
                return _const(m(x.value), Type.STR)

            def case(e: Any) -> Any:
                v = X(e)
                return m(v) if (v.__class__ is str or isinstance(v, str)) else None

            # contains / startswith / endswith / matches apply m themselves: one call less
            return _C(Type.STR, case, fields=fields, fuse=("case", X, m))
        if name == "len":
            self._want(node.args[0], x, (Type.STR, Type.LIST, Type.RECORDS, Type.ANY), name)

            def length(e: Any) -> Any:
                v = X(e)
                if isinstance(v, _SIZED):
                    return len(v)
                return None

            return _C(Type.NUM, length, fields=fields, fuse=("len", X))
        y = args[1]
        if name in ("startswith", "endswith"):
            self._want(node.args[0], x, (Type.STR, Type.ANY), name)
            self._want(node.args[1], y, (Type.STR, Type.LIST, Type.ANY), name)
            if y.const and y.type is Type.LIST and not all(isinstance(s, str) for s in y.value):
                raise self._err(f"{name}() alternatives must be strings", node.args[1].start)
            cased = _case_of(x)
            if cased is not None and y.const:
                fn = _affix_case(name, cased[0], cased[1], y)
                return _C(Type.BOOL, fn, strict=True, fields=fields)
            return _C(Type.BOOL, _affix(name, X, y), strict=True, fields=fields)
        # contains
        self._want(node.args[0], x, (Type.STR, Type.LIST, Type.ANY), name)
        self._want(node.args[1], y, (Type.STR, Type.NUM, Type.ANY), name)
        if x.type is Type.STR and y.type is Type.NUM:
            raise self._err(
                "contains(str, num): a number is never a substring",
                node.args[1].start,
                "quote it",
            )
        cased = _case_of(x)
        if cased is not None and y.const and y.type is Type.STR:
            inner, to_case = cased
            sub = y.value

            def contains_case(e: Any) -> bool:
                v = inner(e)
                return (v.__class__ is str or isinstance(v, str)) and sub in to_case(v)

            return _C(Type.BOOL, contains_case, strict=True, fields=fields)
        return _C(Type.BOOL, _contains(X, x.type, y), strict=True, fields=fields)

    def _want(self, arg: _Node, c: _C, types: tuple[Type, ...], fname: str) -> None:
        if c.type not in types:
            want = " or ".join(_tname(t) for t in types if t is not Type.ANY)
            raise self._err(f"{fname}() needs a {want} here, got {_tname(c.type)}", arg.start, "")

    # -- quantifiers -------------------------------------------------------------------------

    def _record_guard(self, op: _Node, var: str, record: Schema) -> tuple[str, list[Any]] | None:
        """(f, values) when ``op`` is ``var.f == c``, ``var.f in [..]`` / a named list, or a
        bare bool ``var.f``, for a typed (hashable) record field ``f``."""

        def record_field(n: _Node, types: tuple[Type, ...]) -> str | None:
            if not isinstance(n, _Path) or len(n.segs) != 2 or n.segs[0] != var:
                return None
            f = record.get(n.segs[1])
            return n.segs[1] if f is not None and f.type in types else None

        name = record_field(op, (Type.BOOL,))
        if name is not None:
            return name, [True]
        if not isinstance(op, _Cmp) or op.op not in ("==", "in"):
            return None
        left, right = op.left, op.right
        if op.op == "==" and isinstance(left, _Lit):
            left, right = right, left
        name = record_field(left, (Type.STR, Type.NUM, Type.BOOL))
        if name is None:
            return None
        if op.op == "==":
            if isinstance(right, _Lit) and right.value is not None:
                return name, [right.value]
            return None
        if isinstance(right, _ListLit):
            return name, list(dict.fromkeys(i.value for i in right.items))
        if self._list_name(right):
            assert isinstance(right, _Path)
            return name, list(dict.fromkeys(self.lists[right.segs[0]]))
        return None

    def _list_name(self, node: _Node) -> bool:
        """Whether ``node`` names a named list (not shadowed by a field or a macro)."""
        return (
            isinstance(node, _Path)
            and len(node.segs) == 1
            and node.segs[0] in self.lists
            and node.segs[0] not in self.macros
            and _resolve(self.schema, node.segs) is None
        )

    def _quant(self, node: _Quant, scope: _Scope) -> _C:
        coll = self._c(node.coll, scope)
        cname = ".".join(node.coll.segs)
        if coll.type not in (Type.RECORDS, Type.LIST, Type.ANY):
            raise self._err(
                f"{cname}.{node.kind}() needs a list, {cname} is a {_tname(coll.type)}",
                node.coll.start,
                "quantifiers work on list fields such as claims",
            )
        record: Schema | None = None
        if coll.type is Type.RECORDS:
            record = _record_schema(self.schema, scope, node.coll.segs)
        coll_name = next(iter(coll.fields), cname)
        C = coll.fn
        check = coll.type is not Type.RECORDS  # plain/ANY collections: only lists count
        kind = node.kind
        try:
            item_scope = _Scope(0, {node.var: _Var(None, record, coll_name)}, item_only=True)
            body_c = self._c(node.body, item_scope)
        except _NeedsEnv:
            if scope.item_only:
                raise
        else:
            body = self._bool_fn(body_c, node.body)
            fields = coll.fields | body_c.fields
            spec = _spec(body_c)
            fuse = ("count", C, check, spec, body)
            if spec is not None:
                return _C(
                    Type.NUM if kind == "count" else Type.BOOL,
                    _quant_spec(kind, C, check, spec, body),
                    strict=kind != "count",
                    fields=fields,
                    fuse=fuse if kind == "count" else None,
                )
            # (a map object costs more than this loop's bytecode)
            if kind == "any":

                def i_any(e: Any) -> bool:
                    items = C(e)
                    if not items or (check and not isinstance(items, _SEQ)):
                        return False
                    for it in items:
                        if body(it):
                            return True
                    return False

                return _C(Type.BOOL, i_any, strict=True, fields=fields)
            if kind == "all":

                def i_all(e: Any) -> bool:
                    items = C(e)
                    if items is None or (check and not isinstance(items, _SEQ)):
                        return False
                    for it in items:
                        if not body(it):
                            return False
                    return True

                return _C(Type.BOOL, i_all, strict=True, fields=fields)

            def i_count(e: Any) -> Any:
                items = C(e)
                if items is None or (check and not isinstance(items, _SEQ)):
                    return None
                n = 0
                for it in items:
                    if body(it):
                        n += 1
                return n

            return _C(Type.NUM, i_count, fields=fields, fuse=fuse)

        depth = scope.depth + 1
        var = _Var(depth, record, coll_name)
        inner = _Scope(depth, {**scope.vars, node.var: var})
        body_c = self._c(node.body, inner)
        body = self._bool_fn(body_c, node.body)
        fields = coll.fields | body_c.fields
        top = scope.depth == 0

        # the env of the body is (facts, item) / env + (item,): no shared mutable state, so
        # one compiled condition is safe to run from several threads
        if kind == "any":

            def q_any(e: Any) -> bool:
                items = C(e)
                if not items or (check and not isinstance(items, _SEQ)):
                    return False
                for it in items:
                    if body((e, it) if top else (*e, it)):
                        return True
                return False

            return _C(Type.BOOL, q_any, strict=True, fields=fields)
        if kind == "all":

            def q_all(e: Any) -> bool:
                items = C(e)
                if items is None or (check and not isinstance(items, _SEQ)):
                    return False
                for it in items:
                    if not body((e, it) if top else (*e, it)):
                        return False
                return True

            return _C(Type.BOOL, q_all, strict=True, fields=fields)

        def q_count(e: Any) -> Any:
            items = C(e)
            if items is None or (check and not isinstance(items, _SEQ)):
                return None
            n = 0
            for it in items:
                if body((e, it) if top else (*e, it)):
                    n += 1
            return n

        return _C(Type.NUM, q_count, fields=fields)


def _cmp_fused_num(op: str, fuse: tuple[Any, ...], c: int | float) -> Fn | None:
    """``len(x) <op> c`` and ``xs.count(v, ..) >= c`` as one closure; a count stops as soon
    as it reaches the threshold."""
    if fuse[0] == "len":
        X = fuse[1]
        f = _ORDER[op]

        if op == ">=":  # the common spelling gets an inline compare

            def len_ge(e: Any) -> bool:
                v = X(e)
                return (v.__class__ in _SIZED_SET or isinstance(v, _SIZED)) and len(v) >= c

            return len_ge
        if op == ">":

            def len_gt(e: Any) -> bool:
                v = X(e)
                return (v.__class__ in _SIZED_SET or isinstance(v, _SIZED)) and len(v) > c

            return len_gt

        def len_cmp(e: Any) -> bool:
            v = X(e)
            return (v.__class__ in _SIZED_SET or isinstance(v, _SIZED)) and f(len(v), c)  # type: ignore[no-any-return]

        return len_cmp
    if fuse[0] != "count" or op not in (">=", ">") or not math.isfinite(c):
        return None
    _, C, check, spec, body = fuse
    need = math.ceil(c) if op == ">=" else math.floor(c) + 1  # counts are integers
    if need <= 0:  # any list at all satisfies it
        return lambda e: (items := C(e)) is not None and (not check or isinstance(items, _SEQ))
    if spec is not None and spec[2]:
        g, S, _ = spec

        def count_in(e: Any) -> bool:
            items = C(e)
            if not items or (check and not isinstance(items, _SEQ)):
                return False
            n = 0
            try:
                for it in items:
                    if g(it) in S:
                        n += 1
                        if n >= need:
                            return True
                return False
            except TypeError:
                return _loop_count(items, body) >= need

        return count_in
    test = body

    def count_body(e: Any) -> bool:
        items = C(e)
        if not items or (check and not isinstance(items, _SEQ)):
            return False
        n = 0
        for it in items:
            if test(it):
                n += 1
                if n >= need:
                    return True
        return False

    return count_body


def _loop_any(items: Any, body: Fn) -> bool:
    for it in items:
        if body(it):
            return True
    return False


def _loop_all(items: Any, body: Fn) -> bool:
    for it in items:
        if not body(it):
            return False
    return True


def _loop_count(items: Any, body: Fn) -> int:
    n = 0
    for it in items:
        if body(it):
            n += 1
    return n


def _quant_spec(kind: str, C: Fn, check: bool, spec: Spec, body: Fn) -> Fn:
    """A quantifier whose body is one (not-)member test: the test is inlined in the loop
    (an unhashable item value falls back to the body's own closure)."""
    g, S, pos = spec
    if kind == "any":
        if pos:

            def any_in(e: Any) -> bool:
                items = C(e)
                if not items or (check and not isinstance(items, _SEQ)):
                    return False
                try:
                    for it in items:
                        if g(it) in S:
                            return True
                    return False
                except TypeError:
                    return _loop_any(items, body)

            return any_in

        def any_not_in(e: Any) -> bool:
            items = C(e)
            if not items or (check and not isinstance(items, _SEQ)):
                return False
            try:
                for it in items:
                    if g(it) not in S:
                        return True
                return False
            except TypeError:
                return _loop_any(items, body)

        return any_not_in
    if kind == "all":
        if pos:

            def all_in(e: Any) -> bool:
                items = C(e)
                if items is None or (check and not isinstance(items, _SEQ)):
                    return False
                try:
                    for it in items:
                        if g(it) not in S:
                            return False
                    return True
                except TypeError:
                    return _loop_all(items, body)

            return all_in

        def all_not_in(e: Any) -> bool:
            items = C(e)
            if items is None or (check and not isinstance(items, _SEQ)):
                return False
            try:
                for it in items:
                    if g(it) in S:
                        return False
                return True
            except TypeError:
                return _loop_all(items, body)

        return all_not_in

    def count(e: Any) -> Any:
        items = C(e)
        if items is None or (check and not isinstance(items, _SEQ)):
            return None
        try:
            n = 0
            for it in items:
                if (g(it) in S) is pos:
                    n += 1
            return n
        except TypeError:
            return _loop_count(items, body)

    return count


def _numeric(s: str) -> bool:
    return _NUM_RE.fullmatch(s.strip().lstrip("-")) is not None


def _resolve(schema: Schema, segs: Sequence[str]) -> tuple[Field, list[str], str] | None:
    """Field for a dotted path: exact key, else the longest ``prefix.*`` wildcard or ANY
    prefix field. Returns (field, rest of the path to look up in its mapping, matched key)."""
    name = ".".join(segs)
    field = schema.get(name)
    if field is not None:
        return field, [], name
    for i in range(len(segs) - 1, 0, -1):
        prefix = ".".join(segs[:i])
        field = schema.get(prefix + ".*")
        if field is not None:
            return field, list(segs[i:]), prefix
        field = schema.get(prefix)
        if field is not None and field.type is Type.ANY:
            return field, list(segs[i:]), prefix
    return None


def _record_schema(schema: Schema, scope: _Scope, segs: Sequence[str]) -> Schema:
    var = scope.vars.get(segs[0])
    if var is not None and var.record is not None:
        found = _resolve(var.record, segs[1:])
    else:
        found = _resolve(schema, segs)
    if found is None or found[0].record is None:
        return _EMPTY
    return found[0].record


def _case_of(c: _C) -> tuple[Fn, Callable[[str], str]] | None:
    """(x, str.lower / str.upper) when ``c`` is ``lower(x)`` / ``upper(x)``."""
    fuse = c.fuse
    if fuse is not None and fuse[0] == "case":
        return fuse[1], fuse[2]
    return None


def _affix_case(name: str, X: Fn, m: Callable[[str], str], y: _C) -> Fn:
    """startswith / endswith of lower(x) / upper(x) and a constant, in one closure."""
    p = tuple(sorted(y.value)) if isinstance(y.value, frozenset) else y.value
    if name == "startswith":

        def starts(e: Any) -> bool:
            v = X(e)
            return (v.__class__ is str or isinstance(v, str)) and m(v).startswith(p)

        return starts

    def ends(e: Any) -> bool:
        v = X(e)
        return (v.__class__ is str or isinstance(v, str)) and m(v).endswith(p)

    return ends


def _affix(name: str, X: Fn, y: _C) -> Fn:
    start = name == "startswith"
    if y.const:
        # a list literal of alternatives becomes the tuple str.startswith accepts
        p = tuple(sorted(y.value)) if isinstance(y.value, frozenset) else y.value
        if start:

            def starts(e: Any) -> bool:
                v = X(e)
                return (v.__class__ is str or isinstance(v, str)) and v.startswith(p)

            return starts

        def ends(e: Any) -> bool:
            v = X(e)
            return (v.__class__ is str or isinstance(v, str)) and v.endswith(p)

        return ends
    Y = y.fn

    def affix(e: Any) -> bool:
        v = X(e)
        q = Y(e)
        if not isinstance(v, str):
            return False
        if isinstance(q, _SEQ):
            q = tuple(q)
            if not all(isinstance(s, str) for s in q):
                return False
        elif not isinstance(q, str):
            return False
        return v.startswith(q) if start else v.endswith(q)

    return affix


def _contains(X: Fn, xt: Type, y: _C) -> Fn:
    Y = y.fn
    if xt is Type.STR and y.const:
        sub = y.value

        def contains_const(e: Any) -> bool:
            v = X(e)
            return (v.__class__ is str or isinstance(v, str)) and sub in v

        return contains_const

    def contains(e: Any) -> bool:
        v = X(e)
        s = Y(e)
        if v is None or s is None:
            return False
        if isinstance(v, str):
            return isinstance(s, str) and s in v
        if isinstance(v, _SEQ):
            try:
                return s in v
            except TypeError:
                return False
        return False

    return contains


def compile_condition(
    text: str,
    schema: Schema,
    macros: Mapping[str, str] = _EMPTY,
    lists: Mapping[str, Sequence[str | int | float]] = _EMPTY,
) -> Condition:
    """Compile one condition. To compile many rules sharing macros, use one :class:`Compiler`
    so that each macro is compiled once."""
    return Compiler(schema, macros, lists).compile(text)
