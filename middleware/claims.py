"""Claims: split one message into atomic ``key = value`` claims with a stable fingerprint.

The genealogy links claims across messages by ``fingerprint`` (the same fact, repeated) and by
``key`` (the same question, perhaps answered differently), so normalization decides whether two
agents said the same thing. The rules, in brief:

* **Keys**: camelCase and snake_case split, lowercased, punctuation and possessives dropped,
  stopwords and filler dropped ("the", "our", "for", "in", "of", "total", "number", "status",
  "I can confirm that", ...), plurals folded ("replicas" -> "replica"), then the tokens are
  **sorted** so word order does not matter: "Q3 revenue", "the revenue for Q3" and "revenue in
  Q3" all give ``q3 revenue``.
* **Numbers**: one canonical decimal with the magnitude applied and a canonical unit: "$12M",
  "12 million dollars", "USD 12m", "12,000,000 USD" -> ``12000000 usd``; "8.1M" -> ``8100000``;
  "40%", "40 percent" -> ``40 %``. Durations become ``ms`` ("0.12 s" -> ``120 ms``), lengths
  ``m``, masses ``kg``, data sizes ``bytes``; ``usd``/``eur``/``gbp``/``jpy`` from symbols,
  codes or words. Upper-case ``M`` is million; lower-case ``m`` is million next to a currency
  and metres otherwise. Small number words count ("three replicas").
* **Dates** become ISO ``YYYY-MM-DD`` ("March 5, 2024", "5th March 2024", "2024/03/05");
  a numeric d/m vs m/d date is read only when unambiguous.
* **Yes/no**: ``true``/``false``. Assertions become ``<subject> <predicate> = true|false``
  over a small lexicon of predicate families (succeeded, healthy, enabled, correct, approved,
  resolved, deployed, exist), so opposite phrasings share one key: "the build passed", "the
  build is green", "build status: passed" -> ``build succeeded = true``; "the build failed",
  "the build did not pass", "the build isn't passing" -> ``build succeeded = false``.
  "X is not Y" for any other Y gives ``X = not <Y>``, which contradicts ``X = <Y>``.
* Other values are lowercased, whitespace collapsed, a leading article dropped.

Structured ``claims`` in the envelope win: when present, the free-text extractors do not run.
Otherwise ``content`` goes through small deterministic extractors: regexes compiled at import,
one pass each, cheap word-set prefilters, no I/O and no model. Questions ("...?"),
conditionals ("if the build fails") and predictions ("revenue should hit $12M") assert nothing
and give no claims. Extractors are pluggable through the :class:`Extractor` protocol.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Protocol

import msgspec

from .envelope import Envelope

__all__ = [
    "DEFAULT_EXTRACTORS",
    "DateExtractor",
    "ExtractedClaim",
    "Extractor",
    "NamedValueExtractor",
    "QuantityExtractor",
    "QuotedOutputExtractor",
    "YesNoExtractor",
    "extract_claims",
    "make_claim",
    "normalize_key",
    "normalize_value",
    "structured_claims",
]


class ExtractedClaim(msgspec.Struct, frozen=True, gc=False):
    """One atomic claim found in a message, normalized for lineage matching."""

    key: str  # normalized key, e.g. "q3 revenue"
    value: str  # normalized value, e.g. "12000000 usd"
    fingerprint: str  # f"{key}={value}": the identity of the claim
    text: str  # the surface span it came from ("key = value" for structured claims)
    extractor: str  # which extractor found it
    sources: tuple[str, ...] = ()  # structured claims only


class Extractor(Protocol):
    """Finds claims in an envelope. Must be deterministic, fast and free of I/O."""

    name: str

    def extract(self, envelope: Envelope) -> list[ExtractedClaim]: ...


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --------------------------------------------------------------------------------------------
# Vocabulary

_STOPWORDS = _words(
    """
    a an the this that these those our my your their his her its we i you they he she it me
    them is was are were be been being am has have had do does did will would shall should can
    could may might must of for in on at by to from with as per about into over under during
    across within between via and or but so nor not no yes there here which what who whom whose
    total overall current currently now then just also actually really basically approximately
    around roughly exactly only still already confirm confirmed confirms think believe note say
    said according value values number count amount figure level status state result outcome
    date final latest all every each some any very please most least more less above below
    s t d ll re ve isn wasn aren weren didn doesn don hasn haven hadn won wouldn couldn shouldn
    cannot
    """
)
# Reading leftwards from a value, the key phrase ends at one of these words.
_BOUNDARY = _words(
    """
    that and but so because since while although though whereas which who where when if unless
    whether once until after before then thus therefore hence confirm confirmed confirms think
    thinks believe believes says said say reports reported shows showed show showing indicates
    indicated suggests suggested found find finds see saw seeing seen measured observed recorded
    noted expect expected estimate estimated know knew means mentions mentioned stated states
    claims claimed according given assuming suppose heard noticed
    """
)
# A clause opened by one of these asserts nothing ("If the build fails, ...").
_CONDITIONAL = _words("if unless whether when once until suppose assuming")
# "Revenue should hit $12M", "the build might fail": predictions, not facts.
_MODALS = _words("might may could would should will must can")


# (single words, longer phrases as word tuples, the last words of those phrases)
_Connectors = tuple[frozenset[str], frozenset[tuple[str, ...]], frozenset[str]]


def _phrases(spec: str) -> _Connectors:
    phrases = [tuple(p.split()) for p in spec.split("|")]
    longer = frozenset(p for p in phrases if len(p) > 1)
    return frozenset(p[0] for p in phrases if len(p) == 1), longer, frozenset(p[-1] for p in longer)


# "<key> <connector> <value>"; matched against the last one to three words before the value.
_QTY_CONNECTORS = _phrases(
    "is|was|are|were|been|be|of|equals|equaled|equalled|hit|hits|reached|reaches|at|totaled"
    "|totalled|totals|totaling|averaged|averages|peaked at|remains|remained|became|stands at"
    "|stood at|came in at|comes in at|came to|comes to|amounts to|amounted to|rose to|grew to"
    "|fell to|dropped to|increased to|decreased to|climbed to|jumped to|declined to|went to"
    "|went up to|went down to|is now|was now|now at|settled at|landed at|ended at|closed at"
    "|equal to|set to|stays at|reads|read|of about|ended up at|ends up at|came out at|came out to"
    "|sits at|is sitting at|now stands at"
)
_DATE_CONNECTORS = _phrases(
    "is|was|are|were|been|be|on|for|by|at|until|due|due on|due by|scheduled for|planned for"
    "|set for|slated for|moved to|set to|happened on|took place on"
)
_SEPARATORS = _words(": = | -> => - \u2013 — ≈ ~")  # en dash
_HEDGES = _words(
    "about around approximately approx approx. roughly nearly almost ~ ≈ exactly precisely"
    " just only circa some an estimated a"
)
_RSQUO = "\u2019"  # typographic apostrophe, as LLMs often write it
_EDGE = "*_`\"'“”\u2018" + _RSQUO + "()[]{}<>"  # markup and quotes around a token
_STRIP = _EDGE + ".,;:!?"

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        (
            "january jan",
            "february feb",
            "march mar",
            "april apr",
            "may",
            "june jun",
            "july jul",
            "august aug",
            "september sep sept",
            "october oct",
            "november nov",
            "december dec",
        )
    )
    for name in names.split()
}

# Yes/no predicate families: predicate -> (words meaning true, words meaning false).
_FAMILIES = {
    "succeeded": (
        "pass passed passes passing succeed succeeded succeeds successful success complete"
        " completed completes finished done working green ok okay",
        "fail failed fails failing failure unsuccessful broke broken errored crashed red",
    ),
    "healthy": (
        "healthy up online available reachable operational running live",
        "unhealthy down offline unavailable unreachable degraded",
    ),
    "enabled": ("enabled active activated on", "disabled inactive deactivated off"),
    "correct": (
        "correct valid accurate true right verified confirmed",
        "incorrect invalid inaccurate false wrong",
    ),
    "approved": ("approved accepted merged", "rejected declined denied"),
    "resolved": ("resolved fixed closed", "unresolved unfixed open pending"),
    "deployed": ("deployed released shipped", "undeployed unreleased"),
    "exist": ("exists exist present", "missing absent"),
}
# Words that assert on their own as a verb ("the build passed"); the rest need a copula
# ("the build is green", "build: green") so "the tests are on main" says nothing.
_VERBS = _words(
    "pass passed passes succeed succeeded succeeds complete completed completes finish finished"
    " fail failed fails crash crashed errored broke"
)
# Too common in other senses to turn a plain value into a yes/no ({"color": "red"}).
_AMBIGUOUS = _words(
    "on off up down open red green live running right true false done present working"
    " available active ok okay complete pending"
)
_BOOLEANS = {"true": "true", "yes": "true", "false": "false", "no": "false"}

# --------------------------------------------------------------------------------------------
# Key normalization

_WORD = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")
_STEM_EXCEPTIONS = {"caches": "cache", "statuses": "status", "aliases": "alias"}


def _stem(tok: str) -> str:
    """Fold a plural to its singular, idempotently (a key renormalizes to itself)."""
    if len(tok) <= 3 or tok[-1] != "s" or not tok.isalpha():
        return tok
    if tok in _STEM_EXCEPTIONS:
        return _STEM_EXCEPTIONS[tok]
    if tok.endswith("ies") and len(tok) > 4:
        return tok[:-3] + "y"
    if tok.endswith(("sses", "xes", "ches", "shes")):
        return tok[:-2]
    if tok.endswith(("ss", "us", "is")):
        return tok
    return tok[:-1]


def _key_tokens(text: str) -> list[str]:
    """Content tokens of a key phrase, in order, deduplicated (not yet sorted)."""
    if not text.islower():
        text = _CAMEL.sub(" ", text).lower()
    out: list[str] = []
    for tok in _WORD.findall(text):
        if tok not in _STOPWORDS:
            tok = _stem(tok)
            if tok not in out:
                out.append(tok)
    return out


def _content(toks: list[str]) -> list[str]:
    """``_key_tokens`` for lowercase whitespace tokens (the free-text hot path)."""
    text = " ".join(toks)
    words = text.split() if text.replace(" ", "").isalnum() else _WORD.findall(text)
    words = [_stem(w) if w[-1] == "s" else w for w in words if w not in _STOPWORDS]
    return list(dict.fromkeys(words)) if len(words) > 1 else words


def normalize_key(text: str) -> str:
    """Lowercase, drop punctuation, stopwords and filler, fold plurals, sort the tokens.

    A key made only of stopwords keeps them, so a structured key never vanishes.
    """
    toks = _key_tokens(text)
    if not toks:
        words = {_stem(t) for t in _WORD.findall(text.lower())}
        toks = list(words - {"the", "a", "an"} or words)
        if not toks:
            return " ".join(text.lower().split())
    toks.sort()
    return " ".join(toks)


# --------------------------------------------------------------------------------------------
# Numbers and units

_D = Decimal
_MILLION = _D(10) ** 6
_MAGNITUDES = {
    "k": _D(1000),
    "thousand": _D(1000),
    "hundred": _D(100),
    "million": _MILLION,
    "mn": _MILLION,
    "mil": _MILLION,
    "mio": _MILLION,
    "b": _D(10) ** 9,
    "bn": _D(10) ** 9,
    "billion": _D(10) ** 9,
    "tn": _D(10) ** 12,
    "trillion": _D(10) ** 12,
}
_CURRENCIES = {
    "$": "usd",
    "us$": "usd",
    "usd": "usd",
    "dollar": "usd",
    "dollars": "usd",
    "bucks": "usd",
    "€": "eur",
    "eur": "eur",
    "euro": "eur",
    "euros": "eur",
    "£": "gbp",
    "gbp": "gbp",
    "¥": "jpy",
    "jpy": "jpy",
    "yen": "jpy",
}
_CURRENCY_CODES = ("usd", "eur", "gbp", "jpy")
_SIGNS = "-+\u2212"  # with the minus sign
_CURRENCY_PREFIXES = tuple(c + " " for c in _CURRENCY_CODES)


def _unit_table() -> dict[str, tuple[str, Decimal]]:
    table: dict[str, tuple[str, Decimal]] = {}

    def add(names: str, unit: str, factor: str | int = 1) -> None:
        for name in names.split():
            table[name] = (unit, _D(factor))

    add("% percent pct", "%")
    add("ns nanosecond nanoseconds", "ms", "0.000001")
    add("us µs μs microsecond microseconds", "ms", "0.001")
    add("ms msec msecs millisecond milliseconds", "ms")
    add("s sec secs second seconds", "ms", 1000)
    add("min mins minute minutes", "ms", 60_000)
    add("h hr hrs hour hours", "ms", 3_600_000)
    add("day days", "d")
    add("week weeks", "w")
    add("mm millimeter millimeters millimetre millimetres", "m", "0.001")
    add("cm centimeter centimeters centimetre centimetres", "m", "0.01")
    add("m meter meters metre metres", "m")
    add("km kilometer kilometers kilometre kilometres", "m", 1000)
    add("mg milligram milligrams", "kg", "0.000001")
    add("g gram grams", "kg", "0.001")
    add("kg kgs kilogram kilograms", "kg")
    add("lb lbs", "lb")
    add("byte bytes", "bytes")
    add("kb kilobyte kilobytes", "bytes", 10**3)
    add("mb megabyte megabytes", "bytes", 10**6)
    add("gb gigabyte gigabytes", "bytes", 10**9)
    add("tb terabyte terabytes", "bytes", 10**12)
    add("kib", "bytes", 2**10)
    add("mib", "bytes", 2**20)
    add("gib", "bytes", 2**30)
    add("tib", "bytes", 2**40)
    add("x", "x")
    add("°c °", "°c")
    add("°f", "°f")
    add("rps", "rps")
    add("qps", "qps")
    add("tps", "tps")
    return table


_UNITS = _unit_table()
# Unit words that may close a structured key: {"latency_ms": 120} -> latency = 120 ms.
_KEY_UNITS = _words(
    "usd eur gbp jpy ms msec sec secs seconds minutes mins hours hrs pct percent kb mb gb tb"
    " kib mib gib tib bytes km kg dollars euros"
)
_NOT_QUANTITY = _words("st nd rd th am pm")  # ordinals and clock times
_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    " fifteen sixteen seventeen eighteen nineteen"
)
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety"
_WORD_NUMBERS = {w: i for i, w in enumerate(_SMALL.split()) if w != "one"}  # "one": too vague
for _t, _tw in enumerate(_TENS.split()):
    _WORD_NUMBERS[_tw] = 10 * (_t + 2)
    for _o, _ow in enumerate(_SMALL.split()[1:10]):
        _WORD_NUMBERS[f"{_tw}-{_ow}"] = 10 * (_t + 2) + _o + 1

_SUFFIX_SRC = (
    r"(?:[ \t]?(?P<s1>%|°[cCfF]?|[$€£¥]|[^\W\d_]+(?:/[^\W\d_]+)?))?(?:[ \t](?P<s2>[^\W\d_]+))?"
)
# Digits not glued to a word, version, path or clock ("Q3", "v2.1.0", "10:30" are no numbers);
# a charset-first pattern, so the scan skips non-digits in C.
_NUMBER = re.compile(
    r"[0-9](?<![\w.#/:][0-9])(?:[0-9]{0,2}(?:,[0-9]{3})+|[0-9]*)(?:\.[0-9]+)?(?![.,:/\-]?[0-9])"
    + _SUFFIX_SRC
)
_SUFFIX = re.compile(_SUFFIX_SRC)


def _suffix(text: str, pos: int) -> re.Match[str]:
    """The suffix words after a number written as a word ("twelve million dollars")."""
    m = _SUFFIX.match(text, pos)
    assert m is not None  # every part of the pattern is optional
    return m


_BARE_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _fmt_number(d: Decimal) -> str:
    out = format(d.normalize(), "f")
    return "0" if out == "-0" else out


def _lead(text: str, low: str, s: int) -> tuple[int, str | None, bool] | None:
    """Look left of the digits at ``s`` for a sign and a currency.

    Returns (start of the amount, currency, negative), or None when the digits are glued to
    something that makes them no amount ("x-1", "#42").
    """
    start, cur, neg = s, None, False
    c = text[s - 1] if s else " "
    if c in _SIGNS and (s < 2 or not text[s - 2].isalnum()):
        neg, start = c != "+", s - 1
        c = text[start - 1] if start else " "
    if c in "$€£¥":
        cur, start = _CURRENCIES[c], start - 1
        if start >= 2 and low[start - 2 : start] == "us":
            start -= 2
        c = text[start - 1] if start else " "
        return (start, cur, neg) if not c.isalnum() else None
    if start >= 4 and c in " \t" and low[start - 4 : start - 1] in _CURRENCY_CODES:  # "USD 12m"
        cur, start = low[start - 4 : start - 1], start - 4
        c = text[start - 1] if start else " "
    if c.isalnum() or c in "._#/:@\\-":
        return None
    return start, cur, neg


_Suffix = tuple[str | None, Decimal | None]  # (unit, factor); no unit for a bare magnitude
_SUFFIXES: dict[str, _Suffix] = {k: (None, f) for k, f in _MAGNITUDES.items()}
_SUFFIXES.update((k, (u, None if f == 1 else f)) for k, (u, f) in _UNITS.items())
_SUFFIXES.update((k, (u, None)) for k, u in _CURRENCIES.items())
_MILLION_SUFFIX: _Suffix = (None, _MILLION)


def _amount(
    digits: str, negative: bool, cur: str | None, sm: re.Match[str], end: int
) -> tuple[str, int, bool] | None:
    """Canonical value of the number ``digits`` with the suffix words of ``sm`` applied.

    Returns (value, end of what was used, has a unit); None for ordinals and clock times
    ("5th", "3pm"). Decimal arithmetic only when a magnitude or unit factor applies.
    """
    unit = cur
    factor: Decimal | None = None
    s1 = sm.group("s1")
    if s1 is not None:
        low1 = s1.lower()
        suffix = _SUFFIXES.get(low1)
        if s1 == "M" or (low1 == "m" and (cur or (sm.group("s2") or "").lower() in _CURRENCIES)):
            suffix = _MILLION_SUFFIX  # "$12m" is money; a bare "12m" is metres
        if suffix is None:
            if low1 in _NOT_QUANTITY:
                return None
            if low1 == "per" and (sm.group("s2") or "").lower() == "cent":
                unit, end = "%", sm.end("s2")
            elif unit is None and (sm.start("s1") == end or "/" in low1):
                unit, end = low1, sm.end("s1")  # glued letters are a unit: "12mbps", "5km/h"
        elif suffix[0] is None:  # a magnitude, perhaps followed by a unit: "12 million USD"
            factor, end = suffix[1], sm.end("s1")
            s2 = sm.group("s2")
            after = _SUFFIXES.get(s2.lower()) if s2 else None
            if after is not None and after[0] is not None and unit in (None, after[0]):
                unit, end = after[0], sm.end("s2")
                if after[1] is not None and factor is not None:
                    factor *= after[1]
        elif unit is None or unit == suffix[0]:
            unit, factor, end = suffix[0], suffix[1], sm.end("s1")
    plain = digits.replace(",", "") if "," in digits else digits
    if factor is not None:
        value = _fmt_number(_D(plain) * factor)
    elif "." in plain:
        value = _fmt_number(_D(plain))
    else:
        value = plain.lstrip("0") or "0"
    if negative and value != "0":
        value = "-" + value
    return (f"{value} {unit}" if unit else value), end, unit is not None


def _number_at(text: str, low: str, m: re.Match[str]) -> tuple[str, int, int, bool] | None:
    """(value, start, end, has unit) of a ``_NUMBER`` match, or None if it is no amount."""
    lead = _lead(text, low, m.start())
    if lead is None:
        return None
    start, cur, negative = lead
    digits = text[m.start() : m.end() if m.group("s1") is None else m.start("s1")].rstrip()
    amount = _amount(digits, negative, cur, m, m.start() + len(digits))
    if amount is None:
        return None
    return amount[0], start, amount[1], amount[2]


# --------------------------------------------------------------------------------------------
# Dates

_MONTH_ALT = "|".join(sorted(_MONTHS, key=len, reverse=True))
# Every date form we read carries a four-digit year; dates are found from it, looking around.
_YEAR = re.compile(r"[0-9](?<![0-9][0-9])[0-9]{3}(?![0-9])")
_ISO = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})(?![0-9])")
_NUMERIC_DATE = re.compile(r"(?<![0-9/])([0-9]{1,2})/([0-9]{1,2})/")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ORDINALS = ("st", "nd", "rd", "th")


def _iso(year: int, month: int, day: int) -> str | None:
    if 1 <= month <= 12 and 0 < day <= _DAYS_IN_MONTH[month - 1]:
        return f"{year:04d}-{month:02d}-{day:02d}"
    return None


def _day(word: str) -> int:
    """The day in "5", "5th", "05"; 0 when ``word`` is none."""
    if word[-2:] in _ORDINALS:
        word = word[:-2]
    return int(word) if word.isascii() and word.isdigit() and len(word) <= 2 else 0


def _date_at(low: str, s: int, e: int) -> tuple[int, int, str] | None:
    """The date around the year ``low[s:e]``: (start, end, ISO form), or None.

    Reads "2024-03-05", "2024/03/05", "March 5, 2024", "5th of March 2024", "March 2024"
    (-> "2024-03") and d/m/yyyy or m/d/yyyy when the order is unambiguous.
    """
    before = low[s - 1] if s else " "
    m = _ISO.match(low, s)
    if m is not None:
        if before in "-/.":
            return None
        iso = _iso(int(m.group(1)), int(m.group(3)), int(m.group(4)))
        return (s, m.end(), iso) if iso else None
    if before == "/":
        n = _NUMERIC_DATE.search(low, max(0, s - 6), s)
        if n is None or n.end() != s:
            return None
        a, b, year = int(n.group(1)), int(n.group(2)), int(low[s:e])
        if a > 12 >= b:
            iso = _iso(year, b, a)
        elif b > 12 >= a or a == b:
            iso = _iso(year, a, b)
        else:  # 03/05/2024: US or European? Guessing would invent a fact.
            return None
        return (n.start(), e, iso) if iso else None
    if before not in " \t":
        return None
    words = low[s - 28 if s > 28 else 0 : s].split()
    if not words:
        return None
    last = words[-1]
    month = _MONTHS.get(last.rstrip(",."))
    if month is not None:  # "5 March 2024", "5th of March 2024", "March 2024"
        day = _day(words[-2]) if len(words) > 1 else 0
        first = -2
        if not day and len(words) > 2 and words[-2] == "of":
            day, first = _day(words[-3]), -3
        if not day:
            if last[-1] == ",":
                return None
            first, iso = -1, f"{low[s:e]}-{month:02d}"
        else:
            iso = _iso(int(low[s:e]), month, day)
    elif len(words) > 1 and (month := _MONTHS.get(words[-2].rstrip("."), 0)):  # "March 5, 2024"
        iso = _iso(int(low[s:e]), month, _day(last.rstrip(",")))
        first = -2
    else:
        return None
    if iso is None:
        return None
    return low.rfind(words[first], s - 28 if s > 28 else 0, s), e, iso


def _find_dates(low: str) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    for y in _YEAR.finditer(low):
        if not found or y.start() >= found[-1][1]:
            got = _date_at(low, y.start(), y.end())
            if got is not None:
                found.append(got)
    return found


# --------------------------------------------------------------------------------------------
# Values


def normalize_value(text: str) -> str:
    """One canonical form: number with unit, ISO date, true/false, or lowercased text."""
    s = text.strip().strip(_EDGE).rstrip(".,;:!?").strip()
    low = s.lower()
    if low in _BOOLEANS:
        return _BOOLEANS[low]
    if not s:
        return ""
    y = _YEAR.search(low)
    if y is not None:
        d = _date_at(low, y.start(), y.end())
        if d is not None and d[0] == 0 and d[1] == len(low):
            return d[2]
    q = _quantity_text(s, low)
    if q is not None:
        return q
    words = low.split()
    if len(words) > 1 and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


def _quantity_text(s: str, low: str) -> str | None:
    """The canonical amount if all of ``s`` is one ("$12M", "twelve million dollars")."""
    if s[0].isdigit() or s[0] in _SIGNS or s[0] in "$€£¥." or low.startswith(_CURRENCY_PREFIXES):
        m = _NUMBER.search(s)
        got = _number_at(s, low, m) if m is not None else None
        return got[0] if got is not None and got[1] == 0 and got[2] == len(s) else None
    head = low.split(" ", 1)[0]
    if head in _WORD_NUMBERS:
        number = str(_WORD_NUMBERS[head])
        got2 = _amount(number, False, None, _suffix(s, len(head)), len(head))
        if got2 is not None and got2[1] == len(s):
            return got2[0]
    return None


# --------------------------------------------------------------------------------------------
# Claims

_POLARITY: dict[str, tuple[str, bool]] = {}
for _pred, (_yes, _no) in _FAMILIES.items():
    for _ws, _truth in ((_yes, True), (_no, False)):
        for _w in _ws.split():
            _POLARITY[_w] = (_pred, _truth)
            _POLARITY.setdefault(_stem(_w), (_pred, _truth))
_VALUE_POLARITY = {w: p for w, p in _POLARITY.items() if w not in _AMBIGUOUS}
_MAX_VALUE = 160


def _long_value(value: str) -> str:
    """A long value (tool output) keeps a readable head and a digest of the whole."""
    if len(value) <= _MAX_VALUE:
        return value
    digest = hashlib.blake2b(value.encode(), digest_size=8).hexdigest()
    return f"{value[:120]}…#{digest}"


def _claim(
    tokens: list[str], value: str, text: str, extractor: str, sources: tuple[str, ...] = ()
) -> ExtractedClaim:
    """Build a claim from key content tokens and an already normalized value."""
    if value == "true" or value == "false":
        # The last yes/no word names the predicate: "build failed = true" is
        # "build succeeded = false", so opposite phrasings share one key.
        for i in range(len(tokens) - 1, -1, -1):
            pol = _POLARITY.get(tokens[i])
            if pol is not None:
                if not pol[1]:
                    value = "false" if value == "true" else "true"
                tokens = list(dict.fromkeys([*tokens[:i], pol[0], *tokens[i + 1 :]]))
                break
    key = " ".join(sorted(tokens))
    return ExtractedClaim(key, value, f"{key}={value}", text, extractor, sources)


def make_claim(
    key: str,
    value: object,
    text: str,
    extractor: str,
    sources: Sequence[str] = (),
) -> ExtractedClaim:
    """Normalize ``key`` and ``value`` (a JSON scalar or text) into a claim.

    A unit closing the key moves onto a bare number ({"latency_ms": 120} -> ``latency`` =
    ``120 ms``) and yes/no keys or values fold onto their predicate (see the module doc).
    """
    if value is None:
        nval = "null"
    elif isinstance(value, bool):
        nval = "true" if value else "false"
    elif isinstance(value, int | float):
        try:
            nval = _fmt_number(_D(repr(value)))
        except InvalidOperation:
            nval = repr(value).lower()  # nan, inf
    else:
        nval = normalize_value(str(value))
    tokens = _key_tokens(key)
    if len(tokens) > 1 and tokens[-1] in _KEY_UNITS and _BARE_NUMBER.fullmatch(nval):
        nval = normalize_value(f"{nval} {tokens[-1]}")
        tokens = tokens[:-1]
    if not tokens:
        tokens = normalize_key(key).split()
    elif nval in _VALUE_POLARITY:
        # {"build": "passed"} says what "the build passed" says.
        pred, truth = _VALUE_POLARITY[nval]
        tokens = tokens if pred in tokens else [*tokens, pred]
        nval = "true" if truth else "false"
    return _claim(tokens, _long_value(nval), text, extractor, tuple(sources))


def _display(value: object) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def structured_claims(envelope: Envelope) -> list[ExtractedClaim]:
    """The envelope's own structured claims, normalized, deduplicated, in order."""
    seen: dict[str, ExtractedClaim] = {}
    for c in envelope.claims:
        text = f"{c.key} = {_display(c.value)}"
        claim = make_claim(c.key, c.value, text, "structured", c.sources)
        seen.setdefault(claim.fingerprint, claim)
    return list(seen.values())


# --------------------------------------------------------------------------------------------
# Free text: shared helpers


# Words are looked up among the message's whitespace tokens, so each vocabulary also holds
# its words with trailing punctuation ("passed.", "is:"): no per-token stripping needed.
_TRAILING = ("", ".", ",", ";", ":", "!", "?", ")", "),", ").", "*", "**", '"', "'", "...")


class _Vocab:
    """Words to find in a message, with their punctuated forms."""

    __slots__ = ("base", "forms")

    def __init__(self, words: Iterable[str]) -> None:
        self.base = {w + t: w for w in words for t in _TRAILING}
        self.forms = frozenset(self.base)

    def found(self, p: _Text) -> set[str]:
        """The words of this vocabulary that occur in ``p``."""
        base = self.base
        return {base[f] for f in p.tokens & self.forms}


_WINDOW = 80  # how far left of a value its key phrase may start


class _Text:
    """A message's content prepared once for all extractors: lowercased, plus its tokens."""

    __slots__ = ("_dates", "has_month", "has_question", "has_quote", "low", "raw", "tokens")

    def __init__(self, raw: str) -> None:
        low = raw.lower()
        if len(low) != len(raw):  # a few characters grow when lowercased; keep offsets aligned
            low = "".join(c.lower() if len(c.lower()) == 1 else c for c in raw)
        self.raw = raw
        self.low = low
        self.tokens = frozenset(low.split())
        self.has_month = not self.tokens.isdisjoint(_MONTH_FORMS)
        self.has_question = "?" in raw
        self.has_quote = "`" in raw or '"' in raw
        self._dates: list[tuple[int, int, str]] | None = None

    def dates(self) -> list[tuple[int, int, str]]:
        """(start, end, ISO) of the dates in the text, found once."""
        if self._dates is None:
            self._dates = _find_dates(self.low)
        return self._dates

    def clause(self, end: int) -> tuple[int, list[str]]:
        """Start offset and whitespace tokens of the sentence that runs up to ``end``.

        At most ``_WINDOW`` characters: a key phrase is a few words, and splitting less is
        the cheapest thing on this hot path.
        """
        low = self.low
        start = end - _WINDOW if end > _WINDOW else 0
        cut = max(
            low.rfind(". ", start, end),
            low.rfind("\n", start, end),
            low.rfind("? ", start, end),
            low.rfind("! ", start, end),
            low.rfind("; ", start, end),
        )
        if cut >= 0:
            start = cut + 1
        elif start:
            start = low.find(" ", start, end) + 1  # do not start inside a word
        return start, low[start:end].split()


_MONTH_FORMS = _Vocab(_MONTHS).forms
_WORD_NUMBER_VOCAB = _Vocab(_WORD_NUMBERS)
_last: _Text | None = None


def _prepare(text: str) -> _Text:
    """Prepare ``text``, reusing the last result: the extractors run back to back on it.

    A memo, not state: results depend on ``text`` only, and under threads a miss just
    prepares the text again."""
    global _last
    last = _last
    if last is None or last.raw is not text:
        last = _last = _Text(text)
    return last


_FRONTING = _words("in for during over")
_PERIOD = re.compile(
    rf"[ \t]+(?:in|for|during)[ \t]+(?:the[ \t]+)?((?:{_MONTH_ALT}|[^\W\d_]*\d\w*)"
    r"(?:[ \t]+\d{4})?)\b"
)
_PER = re.compile(r"[ \t]+([^\W\d_]+)[ \t]+per[ \t]+([^\W\d_]+)\b")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def _has_period(toks: list[str]) -> bool:
    for t in toks:
        t = t.strip(_STRIP)
        if t in _MONTHS or any(ch.isdigit() for ch in t):
            return True
    return False


_MAX_PHRASE = 8  # tokens; keys keep at most five content words anyway
# How a word ends a key phrase read leftwards: 1 = the phrase starts after it; 2 = the
# clause asserts nothing (conditional, modal guess).
_PHRASE_STOP = dict.fromkeys(_BOUNDARY | _SEPARATORS, 1)
_PHRASE_STOP.update(dict.fromkeys(_CONDITIONAL | (_MODALS - {"may"}), 2))  # "May": a month


def _phrase_start(toks: list[str], j: int) -> int:
    """Index of the first token of the key phrase ending at ``toks[j - 1]``.

    Reads leftwards to a boundary word ("that", "and", "shows"), a label separator or a comma;
    a short fronted time phrase stays in ("In Q3, revenue ..."). -1 when the clause asserts
    nothing: a conditional ("if ...") or a modal guess ("should", "might", "we'll").
    """
    if not j or toks[0] in _CONDITIONAL or toks[j - 1] in _MODALS:
        return -1
    i = j - _MAX_PHRASE if j > _MAX_PHRASE else 0
    stops = _PHRASE_STOP.keys() & toks[i:j]  # set operations and string scans run in C
    if stops:
        k = j - 1
        while toks[k] not in stops:
            k -= 1
        if _PHRASE_STOP[toks[k]] == 2:
            return -1
        i = k + 1
    if i >= j - 1:
        return i
    inner = " ".join(toks[i : j - 1]) + " "  # the last token may carry the connector's colon
    if "'ll " in inner or _RSQUO + "ll " in inner:
        return -1  # "we'll ship ...": a plan, not a fact
    cut = max(inner.rfind(", "), inner.rfind(": "), inner.rfind("; "), inner.rfind("= "))
    cut = max(cut, inner.rfind("| "))
    if cut < 0:
        return i
    after = i + inner.count(" ", 0, cut) + 1  # the first token after the separator
    if inner[cut] == ",":
        k = after - 1  # keep a short fronted time phrase: "In Q3, revenue ..."
        while k > i and k > after - 5 and toks[k - 1][-1] not in ",:;":
            k -= 1
        if toks[k] in _FRONTING and _has_period(toks[k:after]):
            return k
    return after


def _is_question(p: _Text, pos: int) -> bool:
    if not p.has_question:
        return False
    m = _SENTENCE_END.search(p.low, pos)
    return m is not None and m.group() == "?"


def _in_code(p: _Text, start: int, pos: int) -> bool:
    """Whether ``pos`` sits inside a backtick or double-quote span opened after ``start``:
    quoted text is reported, not asserted (the quoted-output extractor reads it)."""
    if not p.has_quote:
        return False
    low = p.low
    return low.count("`", start, pos) % 2 == 1 or low.count('"', start, pos) % 2 == 1


def _span_start(low: str, start: int, end: int, toks: list[str], first: int) -> int:
    """Offset of ``toks[first]``, the tokens being ``low[start:end].split()``."""
    pos = end
    for tok in reversed(toks[first:]):
        pos = low.rfind(tok, start, pos)
    return pos if pos >= 0 else start


# No connector, or only filler before it ("there are 3 replicas"): look elsewhere for a key.
_NO_KEY: tuple[list[str], int] = ([], 0)
# The clause asserts nothing ("if ...", "should ..."): do not look elsewhere.
_REJECTED: tuple[list[str], int] = ([], -1)


def _may_connect(low: str, pos: int, table: _Connectors) -> bool:
    """Cheap look at the word before ``pos``: could it end "<key> <connector>"? Most numbers
    in prose have no connector before them, and this spares them the clause analysis."""
    head = low[pos - 40 if pos > 40 else 0 : pos].rsplit(None, 1)
    word = head[-1].rstrip(_EDGE) if head else ""
    return (
        not word
        or word[-1] in ":=|"
        or word in table[0]
        or word in table[2]
        or word in _HEDGES
        or word in _SEPARATORS
    )


def _left_key(
    p: _Text, pos: int, table: _Connectors, clause: tuple[int, list[str]] | None = None
) -> tuple[list[str], int]:
    """Key tokens of "<key> <connector>" ending at ``pos``, and the offset where it starts.

    The connector ("is", "came in at", ":") and hedges ("about") closing the clause are
    dropped first; no connector gives ``_NO_KEY``. ``clause`` is ``p.clause(pos)`` if known.
    """
    start, toks = clause or p.clause(pos)
    j = len(toks)
    while j:  # hedges ("about"), stray markup
        last = toks[j - 1].rstrip(_EDGE)
        if last and last not in _HEDGES:
            break
        j -= 1
    else:
        return _NO_KEY
    if last in _SEPARATORS:
        j -= 1
    elif last[-1] in ":=":
        pass  # "revenue:" keeps its word; the colon goes with the punctuation
    elif j >= 3 and (toks[j - 3], toks[j - 2], last) in table[1]:
        j -= 3
    elif j >= 2 and (toks[j - 2], last) in table[1]:
        j -= 2
    elif last in table[0]:
        j -= 1
    else:
        return _NO_KEY
    i = _phrase_start(toks, j)
    if i < 0:
        return _REJECTED
    key = _content(toks[i:j])
    if not key:
        return _NO_KEY
    return key[-5:], _span_start(p.low, start, pos, toks, i)


_WORD_SEARCH: dict[str, re.Pattern[str]] = {}  # one per vocabulary word, compiled on first use


def _find_words(p: _Text, vocab: _Vocab) -> list[tuple[int, int]]:
    """Offsets of the whole-word occurrences in the text of words from ``vocab``."""
    low = p.low
    hits: list[tuple[int, int]] = []
    for w in vocab.found(p):
        pattern = _WORD_SEARCH.get(w)
        if pattern is None:  # a literal first, so the scan runs in C
            pattern = _WORD_SEARCH[w] = re.compile(re.escape(w) + r"(?![^\W_])")
        for m in pattern.finditer(low):
            i = m.start()
            if i == 0 or not low[i - 1].isalnum():
                hits.append((i, m.end()))
    if len(hits) > 1:
        hits.sort()
    return hits


# --------------------------------------------------------------------------------------------
# Extractors

# Up to three words after an amount: "3 replicas", "$12M in Q3 revenue", "3 tests failed".
_RIGHT = re.compile(
    r"[ \t]+(?:(?:in|of|worth[ \t]+of)[ \t]+)?([^\W\d_][\w\-]*)"
    r"(?:[ \t]+([^\W\d_][\w\-]*|[^\W_]*\d[^\W_]*))?(?:[ \t]+([^\W\d_][\w\-]*))?"
)


class QuantityExtractor:
    """Numbers with units and magnitudes: "Q3 revenue was $12M", "p99 latency: 120 ms",
    "the deployment uses 3 replicas", "$12M in Q3 revenue".

    The key is "<key> <connector>" left of the amount (is, was, =, :, of, hit, reached, came
    in at, ...) plus a trailing period ("... in Q3"); failing that, the words right after the
    amount ("3 replicas", "$12M in Q3 revenue").
    """

    name = "quantity"

    def extract(self, envelope: Envelope) -> list[ExtractedClaim]:
        text = envelope.content
        p = _prepare(text)
        out: list[ExtractedClaim] = []
        for m in _NUMBER.finditer(text):
            got = _number_at(text, p.low, m)
            if got is None:
                continue
            value, start, end, has_unit = got
            if p.has_month and not has_unit and (len(value) <= 2 or len(value) == 4):
                at = m.start()
                if any(ds <= at < de for ds, de, _ in p.dates()):
                    continue  # the day or year of a date: the date extractor's
            claim = self._claim(p, value, start, end, has_unit)
            if claim is not None:
                out.append(claim)
        if not p.tokens.isdisjoint(_WORD_NUMBER_VOCAB.forms):
            for start, end in _find_words(p, _WORD_NUMBER_VOCAB):
                number = str(_WORD_NUMBERS[p.low[start:end]])
                got2 = _amount(number, False, None, _suffix(text, end), end)
                if got2 is not None:
                    claim = self._claim(p, got2[0], start, got2[1], got2[2])
                    if claim is not None:
                        out.append(claim)
        return out

    def _claim(
        self, p: _Text, value: str, start: int, end: int, has_unit: bool
    ) -> ExtractedClaim | None:
        clause = None
        key, span = _NO_KEY
        if _may_connect(p.low, start, _QTY_CONNECTORS):
            clause = p.clause(start)
            key, span = _left_key(p, start, _QTY_CONNECTORS, clause)
            if span < 0:
                return None
        if key:
            if not has_unit and (per := _PER.match(p.low, end)) is not None:
                # "1000 requests per minute" -> "1000 request/minute"
                value = f"{value} {_stem(per.group(1))}/{per.group(2)}"
                end = per.end()
            period = _PERIOD.match(p.low, end)
            if period is not None:
                key = key + [t for t in _key_tokens(period.group(1)) if t not in key]
                end = period.end()
        else:
            right = self._right_key(p, clause, start, end, has_unit, value)
            if right is None:
                return None
            key, end = right
            span = start
        if _is_question(p, end):
            return None
        return _claim(key, value, p.raw[span:end].strip(), self.name)

    @staticmethod
    def _right_key(
        p: _Text,
        clause: tuple[int, list[str]] | None,
        start: int,
        end: int,
        has_unit: bool,
        value: str,
    ) -> tuple[list[str], int] | None:
        """Key from the words after the amount: "3 replicas", "$12M in Q3 revenue"."""
        if not has_unit and len(value) == 4 and "1900" <= value <= "2100":
            return None  # "2024 revenue": a year, not a count
        m = _RIGHT.match(p.low, end)
        if m is None:
            return None
        picked: list[str] = []
        stop = end
        for g in (1, 2, 3):
            w = m.group(g)
            if w is None or w in _STOPWORDS or w in _BOUNDARY:
                break
            picked.append(w)
            stop = m.end(g)
        key = _content(picked)
        if not any(map(str.isalpha, key)):
            return None
        cstart, toks = clause or p.clause(start)
        if (toks and _phrase_start(toks, len(toks)) < 0) or _in_code(p, cstart, start):
            return None  # "if we add 3 replicas", "we might need 3 replicas"
        return key, stop


class DateExtractor:
    """Dates as values: "the release date is March 5, 2024", "launch: 2024-03-05",
    "we shipped v2 on 5 March 2024"."""

    name = "date"

    def extract(self, envelope: Envelope) -> list[ExtractedClaim]:
        p = _prepare(envelope.content)
        if not p.has_month and "-" not in p.low and "/" not in p.low:
            return []  # every date form read has a month name, "-" or "/"
        out: list[ExtractedClaim] = []
        for start, end, value in p.dates():
            if _is_question(p, end):
                continue
            key, span = _left_key(p, start, _DATE_CONNECTORS)
            if key:
                out.append(_claim(key, value, p.raw[span:end].strip(), self.name))
        return out


_ARTICLES = _words("a an the")
_NAMED_TRIGGERS = _Vocab(_words("is was are were equals became becomes remains remained"))
_NAMED_AFTER_WORDS = ("now", "set", "called", "named", "equal")
_NAMED_AFTER = re.compile(r"(?:now|set[ \t]+to|called|named|equal[ \t]+to)[ \t]+")
_VALUE_END = (
    "and|but|because|so|which|while|though|although|since|as|if|when|for|in|on|at|with|by"
    "|from|after|before|per|according|to|than|instead|whereas|until|unless|via|due|not|or"
)
_VALUE_STOPS = _words(_VALUE_END.replace("|", " "))
_MAX_VALUE_WORDS = 5


def _word_value(low: str, v: int) -> tuple[str, int] | None:
    """A short word value at ``v`` closed by punctuation, the line's end or a joining word
    ("and", "because"): (its text without a leading article, its end). None if it runs on
    past five words or into a colon: then it is a sentence, not a value."""
    seg = low[v : v + 80]
    nl = seg.find("\n")
    closed = nl >= 0 or v + 80 >= len(low)
    if nl >= 0:
        seg = seg[:nl]
    words = seg.split()
    if words and words[0] in _ARTICLES:
        del words[0]
    out: list[str] = []
    pos = v
    for w in words:
        if out and (w in _VALUE_STOPS or w[0] in "(\"'“"):
            return " ".join(out), pos
        if len(out) == _MAX_VALUE_WORDS or w[-1] == ":":
            return None
        pos = low.find(w, pos) + len(w)
        core = w.rstrip(".,;!?)")
        if core != w:
            if not core:
                return (" ".join(out), pos - len(w)) if out else None
            out.append(core)
            return " ".join(out), pos - len(w) + len(core)
        out.append(w)
    return (" ".join(out), pos) if out and closed else None


_NON_VALUES = _words(
    """
    to being going expected likely unlikely probably possibly maybe that this these those it
    because still also now not very really quite pretty so too just here there what how why
    when where who which one some any all no more less much many same different great good
    fine nice important clear unclear possible impossible necessary needed required ready in
    on at for with by from of about than like based responsible able unable sure aware happy
    sorry my our your their his her its me you we they he she i us them yes no always never
    usually often sometimes currently set called named equal scheduled planned slated due
    moved assigned
    """
)
# First words of what follows "is"/":" that make it no word value: other extractors' values
# (yes/no words, months), hedges before numbers, and the grammar of ordinary prose.
_NOT_A_VALUE = _NON_VALUES | frozenset(_POLARITY) | _HEDGES | frozenset(_MONTHS)
_LABELS = _words(
    "note notes update summary tldr fyi ps edit example answer question reason conclusion"
    " warning important todo action step next"
)


class NamedValueExtractor:
    """Word values: "the primary region is us-east-1", "Owner: alice", "mode = strict".

    Numbers, dates, yes/no words and negations are left to their own extractors.
    """

    name = "named-value"

    def extract(self, envelope: Envelope) -> list[ExtractedClaim]:
        text = envelope.content
        p = _prepare(text)
        low = p.low
        anchors = _find_words(p, _NAMED_TRIGGERS)
        for sep in (":", "="):
            i = low.find(sep)
            while i > 0:
                if low[i - 1] not in " \t" or sep == "=":  # a label is glued: "owner: alice"
                    anchors.append((i, i + 1))
                i = low.find(sep, i + 1)
        out: list[ExtractedClaim] = []
        for at, end in sorted(anchors) if len(anchors) > 1 else anchors:
            claim = self._at(p, at, end)
            if claim is not None:
                out.append(claim)
        return out

    def _at(self, p: _Text, at: int, v: int) -> ExtractedClaim | None:
        low = p.low
        if v >= len(low) or low[v] not in " \t":
            return None
        while v < len(low) and low[v] in " \t":
            v += 1
        label = low[at] in ":="
        if not label and low.startswith(_NAMED_AFTER_WORDS, v):
            after = _NAMED_AFTER.match(low, v)
            if after is not None:
                v = after.end()  # "is set to", "is called"
        if v >= len(low) or not low[v].isalpha():
            return None  # numbers and dates have their own extractors
        head = low[v : v + 40].split(None, 2)
        first = head[1] if head[0] in _ARTICLES and len(head) > 1 else head[0]
        first = first.rstrip(".,;:!?)")
        if first in _NOT_A_VALUE or "'" in first:
            return None  # "it is not", "the build is green", "... is March 5", "I'll ..."
        found = _word_value(low, v)
        if found is None:
            return None
        raw, stop = found
        if not _COPULAS.isdisjoint(raw.split()):
            return None  # "the bug: the counter is never reset" is a sentence, not a value
        start, toks = p.clause(at)
        i = _phrase_start(toks, len(toks))
        if i < 0 or (label and (len(toks) - i > 5 or not _COPULAS.isdisjoint(toks[i:]))):
            return None  # a label is a short name: "owner: alice"
        key = _content(toks[i:])[-5:]
        if not key or (len(key) == 1 and key[0] in _LABELS):
            return None
        if low[at] == ":":
            # "Step 5:", "Update 2:", "3:" head what follows (numbers aside, no word or one
            # heading word as written); they name nothing. "Step 5 status: blocked" does.
            words = [t for t in toks[i:] if not t.isdigit()]
            if not words or (len(words) == 1 and words[0] in _LABELS):
                return None
        if _in_code(p, start, at) or _is_question(p, stop):
            return None
        value = normalize_value(raw)
        if not value:
            return None
        span = _span_start(low, start, at, toks, i)
        return _claim(key, value, p.raw[span:stop].strip(), self.name)


_COPULAS = _words(
    "is was are were be been being got gets remains remained stays stayed became becomes"
    " looks looked seems seemed"
)
_ADVERBS = _words(
    "yet fully actually really successfully completely now still all currently even ever also"
    " definitely indeed already finally a an"
)
_NEGATORS = _words("no none not neither nobody nothing zero 0")
_NCOP_TRIGGERS = _Vocab(
    {"not"} | {f"{cop}n{q}t" for cop in ("is", "was", "are", "were") for q in ("'", _RSQUO)}
)
_NCOP_BEFORE = _words("is was are were")
_PHRASE_END = _words(
    _VALUE_END.replace("|", " ")
    + " now again yet already anymore too last yesterday today tonight earlier recently this"
)
_POLARITY_VOCAB = _Vocab(_POLARITY)
_NEGATED_MODALS = ("wo", "would", "could", "should", "might", "must", "ca")


class YesNoExtractor:
    """Yes/no assertions: "the build passed" (true), "the tests did not pass" (false),
    "the service is down" (healthy = false), "the region is not us-east-1" (= not us-east-1).
    """

    name = "yes-no"

    def extract(self, envelope: Envelope) -> list[ExtractedClaim]:
        p = _prepare(envelope.content)
        out: list[ExtractedClaim] = []
        if not p.tokens.isdisjoint(_POLARITY_VOCAB.forms):
            for at, end in _find_words(p, _POLARITY_VOCAB):
                claim = self._polar(p, at, end)
                if claim is not None:
                    out.append(claim)
        if not p.tokens.isdisjoint(_NCOP_TRIGGERS.forms):
            for at, end in _find_words(p, _NCOP_TRIGGERS):
                claim = self._negated_value(p, at, end)
                if claim is not None:
                    out.append(claim)
        return out

    def _polar(self, p: _Text, at: int, end: int) -> ExtractedClaim | None:
        low = p.low
        word = low[at:end]
        rest = low[end : end + 24].lstrip(" \t")
        if rest[:1] in (":", "=") or _is_question(p, end):
            return None  # "passed: 3" labels a count; it asserts nothing
        verb = word in _VERBS
        if not verb and not _ends_phrase(rest):
            return None  # "the tests are on main": "on" asserts only after a copula, at the end
        start, toks = p.clause(at)
        i = len(toks)
        while i and toks[i - 1] in _ADVERBS:
            i -= 1
        negated = copula = False
        if i:
            t = toks[i - 1]
            if t in ("not", "never", "cannot") or t.endswith(("n't", "n" + _RSQUO + "t")):
                if t[:-3] in _NEGATED_MODALS or t == "cannot":
                    return None  # "won't pass": a prediction
                negated, copula = True, t[:-3] in _COPULAS
                i -= 1
            elif t == "longer" and i > 1 and toks[i - 2] == "no":
                negated, i = True, i - 2
            while i and toks[i - 1] in _ADVERBS:
                i -= 1
        if i and toks[i - 1] in _COPULAS:
            copula = True
            i -= 1
            if i and toks[i - 1] in ("not", "never"):  # "has not been deployed"
                negated = not negated
                i -= 1
        elif i and toks[i - 1].rstrip(_EDGE)[-1:] in (":", "="):
            copula = True  # "build status: green"
        elif i and toks[i - 1].endswith(("'s", _RSQUO + "s")):
            copula = True  # "the build's green"
        if not (verb or copula) or not i or _in_code(p, start, at):
            return None
        first = _phrase_start(toks, i)
        if first < 0:
            return None
        subject: list[str] = []
        for w in toks[first:i]:
            if w in _NEGATORS:
                negated = not negated  # "no tests failed", "not all tests passed"
            else:
                subject.append(w)
        if subject and (subject[0].isdigit() or subject[0] in _WORD_NUMBERS):
            del subject[0]  # "3 tests failed": the count is the quantity extractor's
        key = [t for t in _content(subject) if t not in _POLARITY]
        if not key:
            return None
        pred, truth = _POLARITY[word]
        span = _span_start(low, start, at, toks, first)
        value = "true" if truth != negated else "false"
        return _claim([*key[-5:], pred], value, p.raw[span:end].strip(), self.name)

    def _negated_value(self, p: _Text, at: int, end: int) -> ExtractedClaim | None:
        """ "X is not Y" for a Y that is no yes/no word: X = "not <Y>"."""
        low, text = p.low, p.raw
        if low[at:end] == "not":
            before = low[max(0, at - 8) : at].split()
            if not before or before[-1] not in _NCOP_BEFORE:
                return None
            at = low.rfind(before[-1], 0, at)
        v = end
        while v < len(low) and low[v] in " \t":
            v += 1
        if v == end or v >= len(low):
            return None
        value, stop = next(((iso, de) for ds, de, iso in p.dates() if ds == v), ("", v))
        if value:
            pass  # "the launch is not 2024-03-05"
        elif not low[v].isalpha() or low.startswith(_CURRENCY_PREFIXES, v):
            num = _NUMBER.search(text, v)
            got = _number_at(text, low, num) if num is not None and num.start() < v + 6 else None
            if got is not None and got[1] == v:
                value, stop = got[0], got[2]
        else:
            found = _word_value(low, v)
            if found is not None:
                first = found[0].split(None, 1)[0]
                if first not in _NON_VALUES and first not in _POLARITY and first not in _ADVERBS:
                    value, stop = normalize_value(found[0]), found[1]
        if not value or _is_question(p, stop):
            return None
        start, toks = p.clause(at)
        i = _phrase_start(toks, len(toks))
        if i < 0 or _in_code(p, start, at):
            return None
        key = _content(toks[i:])[-5:]
        if not key:
            return None
        span = _span_start(low, start, at, toks, i)
        return _claim(key, f"not {value}", text[span:stop].strip(), self.name)


def _ends_phrase(rest: str) -> bool:
    """Whether the text after a yes/no word closes the assertion ("is green." / "is green and")."""
    if not rest or rest[0] in ".,;:!?)\n*`\"'":
        return True
    head = rest.split(None, 1)
    return not head or head[0].rstrip(".,;:!?)") in _PHRASE_END


_QUOTE_TRIGGERS = _Vocab(
    _words(
        "returned returns return output outputs outputted printed prints responded replied"
        " yielded yields produced produces emitted emits logged logs says said showed shows"
        " displayed displays reported reports gave gives echoed result"
    )
)
# What may follow a trigger word before the quote: "returned with", "output was:", "printed
# the following:\n```...```".
_QUOTE_AFTER = re.compile(
    r"(?:[ \t]+(?:value|was|is|were|with|of|exactly|only|just|back|the[ \t]+following|this))*"
    r"[ \t]*:?[ \t]*\n?[ \t]*"
    r"(?:```[^\n]*\n(?P<block>[\s\S]{1,2000}?)\n?```|`(?P<tick>[^`\n]{1,500})`"
    r"|\"(?P<dq>[^\"\n]{1,500})\"|“(?P<cq>[^”\n]{1,500})”|'(?P<sq>[^'\n]{1,500})')"
)
_CODE_SPACE = re.compile(r"\s*([^\w\s])\s*")
_TICK_SPAN = re.compile(r"`([^`\n]{1,200})`")


class QuotedOutputExtractor:
    """Code and tool output quoted back: "the health check returned `OK`",
    "`git rev-parse HEAD` printed \"abc123\"". The key is what produced it, plus ``output``.
    """

    name = "quoted-output"

    def extract(self, envelope: Envelope) -> list[ExtractedClaim]:
        text = envelope.content
        if "`" not in text and '"' not in text and "“" not in text and "'" not in text:
            return []
        p = _prepare(text)
        out: list[ExtractedClaim] = []
        for at, end in _find_words(p, _QUOTE_TRIGGERS):
            m = _QUOTE_AFTER.match(p.low, end)
            if m is None or _is_question(p, m.end()):
                continue
            g = m.group
            quoted = g("block") or g("tick") or g("dq") or g("cq") or g("sq") or ""
            start, toks = p.clause(at)
            i = _phrase_start(toks, len(toks))
            if i < 0:
                continue
            key = _content(toks[i:])[-5:]
            span = _span_start(p.low, start, at, toks, i)
            if not key:
                # "I ran `pytest -q` and it printed `3 passed`": the command is the subject.
                sent = max(text.rfind(". ", 0, at), text.rfind("\n", 0, at), 0)
                ticks = _TICK_SPAN.findall(text, sent, at)
                key = _key_tokens(ticks[-1]) if ticks else []
                if not key:
                    continue
                span = text.rfind("`" + ticks[-1], sent, at)
            value = _CODE_SPACE.sub(r"\1", " ".join(quoted.split()))
            if value:
                key = key if "output" in key else [*key, "output"]
                out.append(_claim(key, _long_value(value), text[span : m.end()], self.name))
        return out


DEFAULT_EXTRACTORS: tuple[Extractor, ...] = (
    QuantityExtractor(),
    DateExtractor(),
    NamedValueExtractor(),
    YesNoExtractor(),
    QuotedOutputExtractor(),
)


def extract_claims(
    envelope: Envelope, extractors: Sequence[Extractor] = DEFAULT_EXTRACTORS
) -> list[ExtractedClaim]:
    """All claims of one message, deduplicated by fingerprint in first-seen order.

    Structured claims in the envelope win: when it has any, the free text is not read.
    """
    if envelope.claims:
        return structured_claims(envelope)
    if not envelope.content:
        return []
    seen: dict[str, ExtractedClaim] = {}
    for extractor in extractors:
        for claim in extractor.extract(envelope):
            seen.setdefault(claim.fingerprint, claim)
    return list(seen.values())
