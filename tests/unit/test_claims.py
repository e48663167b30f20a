"""Claims: normalization, the built-in extractors, and the property the genealogy relies on —
the same fact in different words gives one fingerprint, a different value the same key."""

import pytest

from ostracon.claims import (
    DEFAULT_EXTRACTORS,
    ExtractedClaim,
    Extractor,
    extract_claims,
    make_claim,
    normalize_key,
    normalize_value,
)
from ostracon.envelope import Claim, Envelope, Kind


def env(content: str = "", claims: list[Claim] | None = None) -> Envelope:
    return Envelope(
        id="m-1", conversation="c", sender="alice", kind=Kind.CHAT, content=content,
        claims=claims or [],
    )  # fmt: skip


def fingerprints(content: str) -> list[str]:
    return [c.fingerprint for c in extract_claims(env(content))]


def only(content: str) -> ExtractedClaim:
    claims = extract_claims(env(content))
    assert len(claims) == 1, (content, claims)
    return claims[0]


# --------------------------------------------------------------------------------------------
# The same fact, phrased the way agents phrase it, must give one fingerprint; another value
# for the same quantity must keep the key and change the value (that is a contradiction).

FAMILIES: dict[str, tuple[str, list[str], list[str]]] = {
    # name: (expected fingerprint, phrasings of it, phrasings of a different value)
    "revenue": (
        "q3 revenue=12000000 usd",
        [
            "Q3 revenue was $12M.",
            "The revenue for Q3 is 12 million dollars.",
            "Revenue in Q3: $12,000,000",
            "I can confirm Q3 revenue = 12M USD",
            "Our Q3 revenue hit $12M.",
            "Q3 revenue came in at USD 12m.",
            "In Q3, revenue was $12 million.",
            "Revenue was $12M in Q3.",
            "Q3 revenue totaled 12,000,000 USD.",
            "Q3's revenue reached $12 million, per the finance dashboard.",
            "We booked $12M in Q3 revenue.",
            "Total revenue for Q3: 12000000 USD",
            "**Q3 revenue:** $12M",
            "According to finance, Q3 revenue was approximately $12M.",
            "The finance agent reports that Q3 revenue was $12.0M.",
            "Q3 revenue of $12M beat the forecast.",
            "Revenue (Q3) = $12M",
            "- Q3 revenue: $12M",
            "| Q3 revenue | $12M |",
            "Q3 revenue stood at $12,000,000.",
        ],
        [
            "Q3 revenue was $8.1M.",
            "The revenue for Q3 is 8.1 million dollars.",
            "Revenue in Q3: $8,100,000",
            "Our Q3 revenue hit USD 8.1m",
        ],
    ),
    "latency": (
        "latency p99=120 ms",
        [
            "p99 latency is 120 ms",
            "the p99 latency was 120ms",
            "P99 latency: 120 milliseconds",
            "The p99 latency came in at 0.12 s.",
            "p99 latency = 120ms",
            "Latency (p99) is 120 ms.",
            "We measured the p99 latency at 120 ms.",
        ],
        ["p99 latency is 250 ms", "The p99 latency was 0.25s."],
    ),
    "replicas": (
        "replica=3",
        [
            "the deployment uses 3 replicas",
            "replicas: 3",
            "There are three replicas.",
            "The number of replicas is 3.",
            "We run 3 replicas.",
            "Replica count: 3",
            "The service has three replicas",
            "replicas = 3",
        ],
        ["the deployment uses 5 replicas", "replicas: 5"],
    ),
    "release date": (
        "release=2024-03-05",
        [
            "The release date is 2024-03-05.",
            "Release date: March 5, 2024",
            "The release is scheduled for 5 March 2024.",
            "release: 2024/03/05",
            "The release date is Mar 5th, 2024.",
            "The release is on 5th of March 2024",
        ],
        ["The release date is 2024-03-06.", "Release date: March 6, 2024"],
    ),
    "migration": (
        "migration succeeded=true",
        [
            "the migration succeeded",
            "The migration was successful.",
            "Migration status: succeeded",
            "The migration completed successfully.",
            "The migration has completed.",
            "Migration: passed",
        ],
        [
            "the migration failed",
            "The migration did not succeed.",
            "The migration was not successful.",
            "Migration status: failed",
            "The migration has failed.",
            "the migration didn't complete",
        ],
    ),
    "tests": (
        "succeeded test=true",
        [
            "the tests passed",
            "All tests passed.",
            "The tests are passing.",
            "Tests: passed",
            "The tests are green.",
            "No tests failed.",
        ],
        [
            "the tests did not pass",
            "The tests failed.",
            "Tests are failing.",
            "tests aren't passing",
        ],
    ),
    "region": (
        "primary region=us-east-1",
        [
            "The primary region is us-east-1.",
            "Primary region: us-east-1",
            "the primary region = us-east-1",
            "Our primary region is US-EAST-1",
        ],
        ["The primary region is eu-west-1.", "The primary region is not us-east-1."],
    ),
    "tool output": (
        "check health output=ok",
        [
            "The health check returned `OK`.",
            'the health check returned "ok"',
            "The health check output was `OK`",
            "The health check printed 'OK'.",
        ],
        ["The health check returned `DEGRADED`.", 'the health check returned "error: timeout"'],
    ),
}
SAME = [(name, fp, text) for name, (fp, same, _) in FAMILIES.items() for text in same]
OTHER = [(name, fp, text) for name, (fp, _, other) in FAMILIES.items() for text in other]


@pytest.mark.parametrize(("family", "fingerprint", "text"), SAME)
def test_phrasings_of_one_fact_share_its_fingerprint(
    family: str, fingerprint: str, text: str
) -> None:
    assert fingerprint in fingerprints(text)


@pytest.mark.parametrize(("family", "fingerprint", "text"), OTHER)
def test_another_value_keeps_the_key_and_changes_the_value(
    family: str, fingerprint: str, text: str
) -> None:
    key, value = fingerprint.split("=")
    same_key = [c for c in extract_claims(env(text)) if c.key == key]
    assert same_key, (text, fingerprints(text))
    assert all(c.value != value for c in same_key)


def test_each_family_phrasing_says_exactly_one_thing() -> None:
    for _, _, text in SAME + OTHER:
        assert len(extract_claims(env(text))) == 1, (text, fingerprints(text))


def test_the_other_values_of_a_family_agree_with_each_other() -> None:
    assert len({fingerprints(t)[0] for t in FAMILIES["revenue"][2]}) == 1
    assert len({fingerprints(t)[0] for t in FAMILIES["latency"][2]}) == 1
    assert len({fingerprints(t)[0] for t in FAMILIES["migration"][2]}) == 1
    assert len({fingerprints(t)[0] for t in FAMILIES["tests"][2]}) == 1


# --------------------------------------------------------------------------------------------
# No claim where nothing is asserted


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Thanks, sounds good!",
        "Thanks, sounds good! I'll take a look at the report this afternoon and get back to you.",
        "Could you double-check the numbers in the summary before we send it?",
        "Here is the plan: first fetch the sales data, then compute the regional breakdown.",
        "Did the build pass?",
        "Is Q3 revenue $12M?",
        "If the build fails, we roll back.",
        "If the deployment uses 3 replicas, the cost doubles.",
        "Revenue should hit $12M next quarter.",
        "The build might fail tomorrow.",
        "We'll ship v2 on March 5, 2024.",
        "It's done, thanks!",
        "The tests are on main.",
        "Let me think about this for a moment.",
        "Upgrade to Python 3.11.7 and see section 4.2 of the guide.",
        "The meeting moved from 10:30 to 11:15.",
    ],
)
def test_no_claim_where_nothing_is_asserted(text: str) -> None:
    assert extract_claims(env(text)) == []


# --------------------------------------------------------------------------------------------
# Normalization


@pytest.mark.parametrize(
    "text",
    [
        "Q3 revenue",
        "the revenue for Q3",
        "revenue in Q3",
        "Q3's revenue",
        "REVENUE (Q3)",
        "q3_revenue",
    ],
)
def test_key_normalization_ignores_case_order_punctuation_and_filler(text: str) -> None:
    assert normalize_key(text) == "q3 revenue"


def test_key_normalization_folds_plurals_and_splits_identifiers() -> None:
    assert normalize_key("number of replicas") == normalize_key("replica count") == "replica"
    assert normalize_key("p99LatencyMs") == "latency ms p99"
    assert normalize_key("the dependencies") == normalize_key("dependency")
    assert normalize_key("the status") == "status"  # only filler: kept, never empty


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("$12M", "12000000 usd"),
        ("$12 million", "12000000 usd"),
        ("12,000,000 dollars", "12000000 usd"),
        ("USD 12m", "12000000 usd"),
        ("12000000 USD", "12000000 usd"),
        ("12M USD", "12000000 usd"),
        ("8.1M", "8100000"),
        ("1.2k", "1200"),
        ("1.5bn", "1500000000"),
        ("twelve million dollars", "12000000 usd"),
        ("40%", "40 %"),
        ("40 percent", "40 %"),
        ("40 per cent", "40 %"),
        ("€45,000", "45000 eur"),
        ("£3", "3 gbp"),
        ("120ms", "120 ms"),
        ("0.12 s", "120 ms"),
        ("2 hours", "7200000 ms"),
        ("5 km", "5000 m"),
        ("12m", "12 m"),  # lower-case m with no currency is metres
        ("16 GB", "16000000000 bytes"),
        ("2 GiB", "2147483648 bytes"),
        ("-5%", "-5 %"),
        ("007", "7"),
        ("3.50", "3.5"),
        ("2024-03-05", "2024-03-05"),
        ("March 5, 2024", "2024-03-05"),
        ("5 March 2024", "2024-03-05"),
        ("5th of March, 2024", "2024-03-05"),
        ("2024/03/05", "2024-03-05"),
        ("13/03/2024", "2024-03-13"),
        ("March 2024", "2024-03"),
        ("Yes", "true"),
        ("TRUE", "true"),
        ("no", "false"),
        ("  The   Misconfigured  Load Balancer. ", "misconfigured load balancer"),
        ("us-east-1", "us-east-1"),
    ],
)
def test_value_normalization(raw: str, normal: str) -> None:
    assert normalize_value(raw) == normal


def test_ambiguous_numeric_dates_stay_text() -> None:
    assert normalize_value("03/05/2024") == "03/05/2024"  # US or European? Not guessed.
    assert normalize_value("2024-02-30") == "2024-02-30"  # no such day


@pytest.mark.parametrize(
    "text", ["Q3 revenue", "the revenue for Q3", "p99LatencyMs", "Number of replicas", "x"]
)
def test_key_normalization_is_idempotent(text: str) -> None:
    once = normalize_key(text)
    assert normalize_key(once) == once


@pytest.mark.parametrize(
    "raw", ["$12M", "8.1M", "40 percent", "0.12 s", "March 5, 2024", "yes", "The Load Balancer"]
)
def test_value_normalization_is_idempotent(raw: str) -> None:
    once = normalize_value(raw)
    assert normalize_value(once) == once


# --------------------------------------------------------------------------------------------
# make_claim and structured claims


def test_make_claim_normalizes_and_fingerprints() -> None:
    claim = make_claim("The revenue for Q3", "$12 million", "Q3 revenue = $12M", "structured")
    assert claim == ExtractedClaim(
        key="q3 revenue",
        value="12000000 usd",
        fingerprint="q3 revenue=12000000 usd",
        text="Q3 revenue = $12M",
        extractor="structured",
    )


@pytest.mark.parametrize(
    ("key", "value", "fingerprint"),
    [
        ("replicas", 3, "replica=3"),
        ("ratio", 0.1, "ratio=0.1"),
        ("ratio", 2.50, "ratio=2.5"),
        ("latency_ms", 120, "latency=120 ms"),  # a unit closing the key moves to the value
        ("q3_revenue_usd", 12_000_000, "q3 revenue=12000000 usd"),
        ("owner", None, "owner=null"),
        ("migration_succeeded", True, "migration succeeded=true"),
        ("migration_failed", True, "migration succeeded=false"),  # one key for both verdicts
        ("build", "passed", "build succeeded=true"),
        ("build", "failed", "build succeeded=false"),
        ("service_up", False, "healthy service=false"),
        ("color", "red", "color=red"),  # an ambiguous word stays a plain value
    ],
)
def test_make_claim_values_of_any_json_scalar(key: str, value: object, fingerprint: str) -> None:
    assert make_claim(key, value, "", "structured").fingerprint == fingerprint


def test_structured_and_free_text_claims_of_one_fact_match() -> None:
    structured = extract_claims(
        env("blah", [Claim(key="q3_revenue", value="$12M"), Claim("build", "passed")])
    )
    assert [c.fingerprint for c in structured] == [
        fingerprints("Q3 revenue was $12M.")[0],
        fingerprints("The build passed.")[0],
    ]


def test_structured_claims_win_over_free_text() -> None:
    e = env(
        "Q3 revenue was $8.1M and the build failed.",
        [Claim(key="Q3 revenue", value=12_000_000, sources=["tool:finance", "m-0"])],
    )
    claims = extract_claims(e)
    assert len(claims) == 1
    claim = claims[0]
    assert claim.fingerprint == "q3 revenue=12000000"
    assert claim.extractor == "structured"
    assert claim.sources == ("tool:finance", "m-0")
    assert claim.text == "Q3 revenue = 12000000"


def test_structured_claims_are_deduplicated_in_order() -> None:
    e = env(claims=[Claim("b", 1), Claim("a", True), Claim("B", "1"), Claim("a", "yes")])
    assert [c.fingerprint for c in extract_claims(e)] == ["b=1", "a=true"]


# --------------------------------------------------------------------------------------------
# Extraction details


def test_a_message_gives_each_of_its_claims_once_in_order() -> None:
    text = (
        "I checked the finance dashboard and can confirm Q3 revenue was $12M, up from $8.1M "
        "in Q2. The p99 latency is 120 ms and the deployment uses 3 replicas. Again: Q3 "
        "revenue was 12 million dollars."
    )
    assert fingerprints(text) == ["q3 revenue=12000000 usd", "latency p99=120 ms", "replica=3"]


def test_claims_carry_their_surface_text_and_extractor() -> None:
    text = (
        "The migration succeeded. Release date: March 5, 2024. The primary region is "
        "us-east-1, the health check returned `OK` and p99 latency is 120 ms."
    )
    claims = {c.extractor: c for c in extract_claims(env(text))}
    assert set(claims) == {"quantity", "date", "named-value", "yes-no", "quoted-output"}
    for claim in claims.values():
        assert claim.text in text
        assert claim.sources == ()
    assert claims["quantity"].text == "p99 latency is 120 ms"
    assert claims["date"].text == "Release date: March 5, 2024"
    assert claims["named-value"].text == "The primary region is us-east-1"
    assert claims["yes-no"].text == "The migration succeeded"
    assert claims["quoted-output"].text == "the health check returned `OK`"


def test_realistic_agent_messages() -> None:
    assert fingerprints(
        "Based on the logs, the checkout service error rate was 4.2% yesterday, p95 latency "
        "reached 850ms, and we had two incidents. Root cause is a misconfigured pool."
    ) == [
        "checkout error rate service=4.2 %",
        "latency p95=850 ms",
        "incident=2",
        "cause root=misconfigured pool",
    ]
    assert fingerprints(
        "Status update: deployment to staging is done, smoke tests are green, and the feature "
        "flag is disabled in production until the product owner signs off."
    ) == [
        "deployment staging succeeded=true",
        "smoke succeeded test=true",
        "enabled feature flag=false",
    ]
    assert fingerprints(
        "The total cost for the project came in at €45,000, which is 10% under budget. The "
        "contract end date is 2025-06-30 and the vendor is Acme Consulting GmbH."
    ) == ["cost project=45000 eur", "contract end=2025-06-30", "vendor=acme consulting gmbh"]


def test_an_enumerated_heading_is_not_a_name() -> None:
    # "Step 5:" heads what follows (it was a claim "5 step = deployment uses 3 replicas",
    # new on every step, so never grounded); a label that names something still is one
    assert fingerprints("Step 5: the deployment uses 3 replicas and the p99 is 120 ms.") == [
        "replica=3",
        "p99=120 ms",
    ]
    assert fingerprints("Update 2: the owner is alice") == ["owner=alice"]
    assert fingerprints("3: the owner is alice") == ["owner=alice"]
    assert fingerprints("Q3 target: growth") == ["q3 target=growth"]
    # only a colon heading: these name step 5 / step 3
    assert fingerprints("Step 5 status: blocked") == ["5 step=blocked"]
    assert fingerprints("Step 5 is blocked.") == ["5 step=blocked"]
    assert fingerprints("step 3 = rollback") == ["3 step=rollback"]


def test_negations_and_negated_subjects() -> None:
    assert fingerprints("The service isn't healthy.") == ["healthy service=false"]
    assert fingerprints("The service is down.") == ["healthy service=false"]
    assert fingerprints("v2 is not deployed yet") == ["deployed v2=false"]
    assert fingerprints("The build didn't fail.") == ["build succeeded=true"]
    assert fingerprints("Not all tests passed.") == ["succeeded test=false"]
    assert fingerprints("Q3 revenue was not $12M.") == ["q3 revenue=not 12000000 usd"]


def test_counts_stay_with_their_verb() -> None:
    assert fingerprints("3 tests failed.") == ["failed test=3", "succeeded test=false"]
    assert fingerprints("The rate limit is 1000 requests per minute.") == [
        "limit rate=1000 request/minute"
    ]


def test_quoted_output_without_a_subject_is_keyed_by_the_command() -> None:
    claim = only("I ran `pytest -q` and it printed `42 passed, 1 skipped`.")
    assert claim.fingerprint == "output pytest q=42 passed,1 skipped"
    assert claim.extractor == "quoted-output"


def test_numbers_in_dates_versions_and_times_are_not_quantities() -> None:
    assert fingerprints("The launch was on March 5, 2024.") == ["launch=2024-03-05"]
    assert fingerprints("We pinned v2.1.0 at 10:30 on the 5th.") == []


def test_long_tool_output_keeps_a_head_and_a_digest() -> None:
    out = "x" * 300
    claim = only(f"The export job printed `{out}`.")
    assert claim.value.startswith("x" * 120) and len(claim.value) < 160
    assert claim.value != only(f"The export job printed `{out}y`.").value


def test_extraction_is_deterministic() -> None:
    text = "Q3 revenue was $12M; the build passed and the release date is 2024-03-05."
    assert extract_claims(env(text)) == extract_claims(env(text)) == extract_claims(env(text))


# --------------------------------------------------------------------------------------------
# Pluggable extractors


class Shouting:
    """A toy extractor: every all-caps word is a claim that it was shouted."""

    name = "shouting"

    def extract(self, envelope: Envelope) -> list[ExtractedClaim]:
        return [
            make_claim("shouted", w, w, self.name)
            for w in envelope.content.split()
            if w.isupper() and len(w) > 1
        ]


def test_extractors_are_pluggable() -> None:
    extractor: Extractor = Shouting()
    text = "STOP the deploy NOW, the build failed"
    assert [c.fingerprint for c in extract_claims(env(text), [extractor])] == [
        "shouted=stop",
        "shouted=now",
    ]
    both = extract_claims(env(text), [*DEFAULT_EXTRACTORS, extractor])
    assert [c.extractor for c in both] == ["yes-no", "shouting", "shouting"]


def test_default_extractors_have_distinct_names() -> None:
    names = [x.name for x in DEFAULT_EXTRACTORS]
    assert names == ["quantity", "date", "named-value", "yes-no", "quoted-output"]
    assert extract_claims(env("Q3 revenue was $12M."), []) == []
