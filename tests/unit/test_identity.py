"""Signed identities: canonical bytes, HMAC and Ed25519 signatures, key loading with positioned
config errors, and the router's checks (unsigned, forged, unregistered, replayed, stale; a
crash re-read is not a replay), in enforce and permissive modes."""

from __future__ import annotations

import base64
import json
import math
import random
import struct
import subprocess

import msgspec
import pytest
from typer.testing import CliRunner

from ostracon.cli import app
from ostracon.config import ConfigError, IdentityConfig, parse_config
from ostracon.core import Context, Core, Stage, State, default_stages
from ostracon.decision import Severity
from ostracon.dedupe import DedupeWindow
from ostracon.envelope import Claim, Envelope, Kind, decode, encode
from ostracon.identity import (
    SIGNED_FIELDS,
    Ed25519Signer,
    Failure,
    HmacSigner,
    Verifier,
    canonical,
    canonical_json,
    keygen,
    sign,
    sign_ed25519,
    sign_hmac,
)
from ostracon.routing import H_ERROR, H_REASON, H_SOURCE, Route, Router, header
from tests.system_packages import ensure_debian

# The worked example of docs/protocol.md (Identity): the values are pinned there too.
SEED = base64.b64encode(bytes(range(32))).decode()
PUBLIC = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
SECRET = "example-secret"
EXAMPLE = Envelope(
    id="m-1",
    conversation="q3",
    sender="alice",
    kind=Kind.CHAT,
    content="Revenue grew 12 % — über plan",
    recipients=["bob"],
    claims=[Claim("revenue growth q3", 0.12, ["tool:sql"])],
    ts=1700000000.5,
    meta={"role": "analyst", "model_family": "gpt"},
)
EXAMPLE_CANONICAL = (
    '{"claims":[{"key":"revenue growth q3","sources":["tool:sql"],"value":0.12}],'
    '"content":"Revenue grew 12 % — über plan","conversation":"q3","id":"m-1","kind":"chat",'
    '"meta":{"model_family":"gpt","role":"analyst"},"parents":[],"recipients":["bob"],'
    '"sender":"alice","ts":1700000000.5}'
)
EXAMPLE_ED25519 = (
    "ed25519:HRjYC1CF8BkXpUko+g6GYDS8Ov3oxonZVJx75alaYXofeM+Jlcy+"
    "RKFiaKpEIJpHflshPHbGJBYgFz9iQgFRCA=="
)
EXAMPLE_HMAC = "hmac-sha256:6l57v8qnpBRHetnis6pepp/hyAemUwC6Zd25V6Wo0G4="
NOW = 1700000010.0


# --- canonical bytes -----------------------------------------------------------------------


def test_worked_example_is_pinned() -> None:
    assert canonical(EXAMPLE).decode() == EXAMPLE_CANONICAL
    assert sign(EXAMPLE, Ed25519Signer(SEED)).sig == EXAMPLE_ED25519
    assert sign_hmac(EXAMPLE, SECRET).sig == EXAMPLE_HMAC
    assert Ed25519Signer(SEED).public_key == PUBLIC


def test_canonical_bytes_are_stable_across_the_wire_and_ignore_sig_and_unknown_fields() -> None:
    signed = sign_ed25519(EXAMPLE, SEED)
    wire = json.loads(encode(signed))
    wire["extra"] = {"z": 1}  # unknown fields are not signed (the struct ignores them)
    wire = dict(reversed(list(wire.items())))  # member order on the wire does not matter
    again = decode(json.dumps(wire, indent=2).encode(), 1 << 20)
    assert canonical(again) == canonical(EXAMPLE) == canonical(signed)


def test_absent_defaults_sign_the_same_as_explicit_ones() -> None:
    bare = decode(b'{"id":"a","conversation":"c","sender":"s","kind":"chat","content":""}', 999)
    full = decode(
        b'{"id":"a","conversation":"c","sender":"s","kind":"chat","content":"",'
        b'"recipients":[],"parents":[],"claims":[],"ts":null,"meta":{}}',
        999,
    )
    assert canonical(bare) == canonical(full)
    assert canonical(bare) == (
        b'{"claims":[],"content":"","conversation":"c","id":"a","kind":"chat","meta":{},'
        b'"parents":[],"recipients":[],"sender":"s","ts":null}'
    )


@pytest.mark.parametrize(
    "change",
    [
        {"id": "m-2"},
        {"conversation": "q4"},
        {"sender": "bob"},  # registered with an HMAC key: the alg does not match
        {"kind": Kind.TOOL_RESULT},
        {"content": "Revenue grew 13 %"},
        {"recipients": ["bob", "carol"]},
        {"parents": ["m-0"]},
        {"claims": [Claim("revenue growth q3", 0.13, ["tool:sql"])]},
        {"claims": [Claim("revenue growth q3", 0.12, ["tool:other"])]},
        {"ts": 1700000001.5},
        {"meta": {"role": "analyst", "model_family": "claude"}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_signed_field_is_covered(change: dict[str, object]) -> None:
    altered = msgspec.structs.replace(sign_ed25519(EXAMPLE, SEED), **change)
    assert canonical(altered) != canonical(EXAMPLE)
    verifier = _verifier("enforce")
    assert verifier.check(altered)[0] is Failure.FORGED
    assert verifier.check(sign_ed25519(EXAMPLE, SEED)) == (None, "")
    covered = {f for f in SIGNED_FIELDS if f in change}
    assert covered == set(change)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (0.12, "0.12"),
        (1e16, "10000000000000000"),
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (123456789.125, "123456789.125"),
        (-2.5e-300, "-2.5e-300"),
        (2**60, "1152921504606847000"),
        (9007199254740993, "9007199254740992"),
        (42, "42"),
        (True, "true"),
        (None, "null"),
        ("é\u2028\x7f\x1f\n/", '"é\u2028\x7f\\u001f\\n/"'),
        ({"b": 1, "a": [], "\u20ac": 0, "\U0001f600": 0, "\ufb01": 0}, None),
    ],
)
def test_rfc8785_values(value: object, expected: str | None) -> None:
    if expected is None:  # keys sort by UTF-16 code units: the astral emoji before U+FB01
        expected = '{"a":[],"b":1,"\u20ac":0,"\U0001f600":0,"\ufb01":0}'
    assert canonical_json(value) == expected


def test_values_with_no_canonical_form_are_refused() -> None:
    with pytest.raises(ValueError):
        canonical_json(float("nan"))
    with pytest.raises(ValueError):
        canonical_json("\ud800")  # a lone surrogate is not Unicode text
    with pytest.raises(ValueError):
        canonical_json({"n": 10**400})  # JSON allows it, a double cannot hold it


def test_a_signed_message_with_no_canonical_form_is_forged_not_an_internal_error() -> None:
    huge = msgspec.structs.replace(EXAMPLE, meta={"n": 10**400}, sig="ed25519:AAAA")
    out = _router().route(_wire(huge), b"q3", [], "in/0/1", NOW)
    assert out.error is not None and out.error.code == "forged"


def test_node_reproduces_the_canonical_bytes_and_both_signatures() -> None:
    """Another language (JavaScript, Node's own crypto) signs what ostracon verifies."""
    node = ensure_debian("node", "nodejs")
    script = r"""
const crypto = require('crypto');
const env = JSON.parse(process.argv[1]);
const sortKeys = v => Array.isArray(v) ? v.map(sortKeys)
  : (v && typeof v === 'object')
    ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sortKeys(v[k])]))
  : v;
const o = {id: env.id, conversation: env.conversation, sender: env.sender, kind: env.kind,
  content: env.content, recipients: env.recipients ?? [], parents: env.parents ?? [],
  claims: (env.claims ?? []).map(c => ({key: c.key, value: c.value, sources: c.sources ?? []})),
  ts: env.ts ?? null, meta: env.meta ?? {}};
const bytes = Buffer.from(JSON.stringify(sortKeys(o)), 'utf8');
const seed = Buffer.from(process.argv[2], 'base64');
const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
const key = crypto.createPrivateKey({key: der, format: 'der', type: 'pkcs8'});
console.log(JSON.stringify({
  canonical: bytes.toString('utf8'),
  ed25519: 'ed25519:' + crypto.sign(null, bytes, key).toString('base64'),
  hmac: 'hmac-sha256:'
    + crypto.createHmac('sha256', process.argv[3]).update(bytes).digest('base64'),
}));
"""
    env = msgspec.structs.replace(
        EXAMPLE, meta={"nested": {"z": [1.0, 1e21, 5e-7], "a": "x\ty"}, "\u20ac": None}
    )
    out = subprocess.run(
        [node, "-e", script, encode(env).decode(), SEED, SECRET],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    theirs = json.loads(out.stdout)
    assert theirs["canonical"].encode() == canonical(env)
    assert theirs["ed25519"] == sign(env, Ed25519Signer(SEED)).sig
    assert theirs["hmac"] == sign(env, HmacSigner(SECRET)).sig
    # Numbers: every kind of double (random bit patterns, integers beyond 2**53, decimals).
    rng = random.Random(8785)
    doubles = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(3000)]
    doubles += [float(rng.randint(-(2**62), 2**62)) for _ in range(500)]
    doubles += [rng.randint(-(10**9), 10**9) / 10 ** rng.randint(0, 12) for _ in range(1500)]
    doubles = [d for d in doubles if math.isfinite(d)]
    js = "console.log(JSON.stringify(JSON.parse(process.argv[1]).map(String)))"
    printed = subprocess.run(
        [node, "-e", js, json.dumps(doubles)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [canonical_json(d) for d in doubles] == json.loads(printed.stdout)


# --- keys and config -----------------------------------------------------------------------


def _identity_yaml(mode: str = "enforce", window: float = 60.0, replays: bool = False) -> str:
    return f"""\
identity:
  mode: {mode}
  window_s: {window}
  count_replays: {str(replays).lower()}
  agents:
    alice:
      ed25519_public_key: {PUBLIC}
    bob:
      hmac_secret: {SECRET}
"""


def _verifier(mode: str = "enforce") -> Verifier:
    return Verifier(parse_config(_identity_yaml(mode)).identity)


def test_hmac_and_ed25519_signatures_verify_and_a_wrong_key_does_not() -> None:
    verifier = _verifier()
    bob = msgspec.structs.replace(EXAMPLE, sender="bob")
    assert verifier.check(sign_hmac(bob, SECRET)) == (None, "")
    assert verifier.check(sign_hmac(bob, "guess"))[0] is Failure.FORGED
    assert verifier.check(sign_ed25519(EXAMPLE, SEED)) == (None, "")
    other_seed, _ = keygen()
    assert verifier.check(sign_ed25519(EXAMPLE, other_seed))[0] is Failure.FORGED


@pytest.mark.parametrize(
    "sig",
    ["ed25519:!!!", "ed25519:", "garbage", EXAMPLE_HMAC, "ed25519:" + "A" * 88],
    ids=["bad-base64", "empty", "no-alg", "other-alg", "wrong-signature"],
)
def test_malformed_signatures_are_forged(sig: str) -> None:
    failure, reason = _verifier().check(msgspec.structs.replace(EXAMPLE, sig=sig))
    assert failure is Failure.FORGED and "alice" in reason


def test_unsigned_and_unregistered() -> None:
    verifier = _verifier()
    assert verifier.check(EXAMPLE)[0] is Failure.UNSIGNED
    eve = sign_ed25519(msgspec.structs.replace(EXAMPLE, sender="eve"), SEED)
    assert verifier.check(eve)[0] is Failure.UNREGISTERED


def test_registered_is_open_membership_without_agents() -> None:
    assert IdentityConfig().registered("anyone")
    configured = parse_config(_identity_yaml()).identity
    assert configured.registered("alice") and configured.registered("bob")
    assert not configured.registered("eve")


def test_keys_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTRACON_TEST_SECRET_BOB", SECRET)
    text = (
        "identity:\n  mode: enforce\n  agents:\n"
        "    bob: {hmac_secret_env: OSTRACON_TEST_SECRET_BOB}\n"
    )
    verifier = Verifier(parse_config(text).identity)
    assert verifier.check(sign_hmac(msgspec.structs.replace(EXAMPLE, sender="bob"), SECRET)) == (
        None,
        "",
    )


@pytest.mark.parametrize(
    ("agents", "line", "field", "needle"),
    [
        ("    a: {hmac_secret_env: OSTRACON_TEST_UNSET_VAR}\n", 5,
         "identity.agents.a.hmac_secret_env", "OSTRACON_TEST_UNSET_VAR is unset"),
        ("    a:\n      ed25519_public_key: not*base64\n", 6,
         "identity.agents.a.ed25519_public_key", "not valid base64"),
        ("    a:\n      ed25519_public_key: AAAA\n", 6, "identity.agents.a.ed25519_public_key",
         "must be 32 bytes, got 3"),
        ("    a: {}\n", 5, "identity.agents.a", "exactly one of"),
        ("    a:\n      hmac_secret: x\n      ed25519_public_key: y\n", 7,
         "identity.agents.a.ed25519_public_key", "got hmac_secret, ed25519_public_key"),
        ("    a:\n      hmac_secret: ''\n", 6, "identity.agents.a.hmac_secret", "empty"),
        ("    a:\n      rsa_key: x\n", 6, "identity.agents.a.rsa_key", "unknown field"),
    ],
)  # fmt: skip
def test_key_errors_name_file_line_and_field(
    agents: str, line: int, field: str, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OSTRACON_TEST_UNSET_VAR", raising=False)
    text = f"# keys\nidentity:\n  mode: enforce\n  agents:\n{agents}"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "ostracon.yaml")
    err = info.value
    assert (err.file, err.line) == ("ostracon.yaml", line)
    assert err.field == field
    assert needle in str(err)


def test_signing_mode_without_agents_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("identity:\n  window_s: 5\n  mode: permissive\n", "o.yaml")
    assert str(info.value) == "o.yaml:3: identity.mode: permissive needs identity.agents"


# --- the router ------------------------------------------------------------------------------


class SignedSpy(Stage):
    """Records what the core was told about each message's signature."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def run(self, ctx: Context) -> None:
        self.seen.append(ctx.signed)


def _router(mode: str = "enforce", replays: bool = False, *extra: Stage) -> Router:
    config = parse_config(_identity_yaml(mode, replays=replays))
    return Router.from_config(config, Core([*default_stages(), *extra], State()))


def _wire(env: Envelope) -> bytes:
    return encode(env)


def _alerts(outcome: object) -> list[dict[str, object]]:
    outputs = outcome.outputs  # type: ignore[attr-defined]
    return [json.loads(o.value) for o in outputs if o.route is Route.ALERTS]


def _dead(outcome: object) -> tuple[str | None, str | None]:
    (dl,) = [o for o in outcome.outputs if o.route is Route.DEAD_LETTER]  # type: ignore[attr-defined]
    return header(dl.headers, H_ERROR), header(dl.headers, H_REASON)


def test_signed_message_is_delivered_and_reaches_the_core_as_signed() -> None:
    spy = SignedSpy()
    router = _router("enforce", False, spy)
    out = router.route(_wire(sign_ed25519(EXAMPLE, SEED)), b"q3", [], "in/0/1", NOW)
    assert out.decision is not None and out.decision.verdict.delivers
    assert spy.seen == [True] and not _alerts(out)


@pytest.mark.parametrize(
    ("env", "code", "alert", "severity"),
    [
        (EXAMPLE, "unsigned", "unsigned-message", Severity.WARNING),
        (msgspec.structs.replace(sign_ed25519(EXAMPLE, SEED), content="tampered"), "forged",
         "forged-message", Severity.CRITICAL),
        (sign_ed25519(msgspec.structs.replace(EXAMPLE, sender="sybil-7"), SEED), "unregistered",
         "unregistered-sender", Severity.WARNING),
        (sign_ed25519(msgspec.structs.replace(EXAMPLE, ts=NOW - 61), SEED), "stale",
         "stale-message", Severity.WARNING),
        (sign_ed25519(msgspec.structs.replace(EXAMPLE, ts=None), SEED), "stale",
         "stale-message", Severity.WARNING),
    ],
    ids=["unsigned", "forged", "sybil-unregistered", "stale", "no-ts"],
)  # fmt: skip
def test_enforce_dead_letters_with_reason_and_alert(
    env: Envelope, code: str, alert: str, severity: Severity
) -> None:
    router = _router()
    out = router.route(_wire(env), b"q3", [], "in/0/5", NOW)
    assert out.decision is None and out.error is not None and out.error.code == code
    assert _dead(out)[0] == code and _dead(out)[1]
    (raised,) = _alerts(out)
    assert raised["kind"] == alert and raised["severity"] == severity
    assert raised["agents"] == [env.sender] and raised["evidence"] == [env.id]
    assert out.outputs[-1].route is Route.DEAD_LETTER  # the alert goes first
    # A crash re-read of the same record: silent.
    assert router.route(_wire(env), b"q3", [], "in/0/5", NOW).duplicate


def test_sybil_identities_cannot_send_in_enforce_nor_count_as_registered() -> None:
    """Adversary: many fresh names, each with a valid-looking self-made key pair."""
    router = _router()
    identity = parse_config(_identity_yaml()).identity
    for i in range(5):
        name = f"sybil-{i}"
        seed, _ = keygen()
        env = Envelope(
            id=f"s-{i}", conversation="q3", sender=name, kind=Kind.ACCUSATION,
            content="alice lies", ts=NOW,
        )  # fmt: skip
        out = router.route(_wire(sign_ed25519(env, seed)), b"q3", [], f"in/0/{i}", NOW)
        assert out.error is not None and out.error.code == "unregistered"
        assert not identity.registered(name)
    assert not router.core.state.records


def test_replay_is_dead_lettered_but_a_crash_re_read_is_a_silent_duplicate() -> None:
    """Adversary: a validly signed message written again to the inbound topic."""
    router = _router(replays=True)
    wire = _wire(sign_ed25519(EXAMPLE, SEED))
    first = router.route(wire, b"q3", [], "in/0/1", NOW)
    assert first.decision is not None and first.decision.verdict.delivers
    reread = router.route(wire, b"q3", [], "in/0/1", NOW)  # same record after a crash
    assert reread.duplicate and not reread.outputs
    replay = router.route(wire, b"q3", [], "in/2/9", NOW)  # same bytes, another record
    assert replay.error is not None and replay.error.code == "replayed"
    assert _dead(replay) == ("replayed", "message id already seen at in/0/1")
    assert [a["kind"] for a in _alerts(replay)] == ["replayed-message"]
    # Counted against the sender (the signature proves it was hers), once even if the
    # replay's own record is re-read after a crash.
    assert router.core.state.records["alice"] == [1, 1]
    assert router.route(wire, b"q3", [], "in/2/9", NOW).duplicate
    assert router.core.state.records["alice"] == [1, 1]


def test_replays_are_not_counted_by_default_and_forgeries_never() -> None:
    router = _router()
    wire = _wire(sign_ed25519(EXAMPLE, SEED))
    router.route(wire, b"q3", [], "in/0/1", NOW)
    assert router.route(wire, b"q3", [], "in/0/2", NOW).error.code == "replayed"  # type: ignore[union-attr]
    assert "alice" not in router.core.state.records
    counting = _router(replays=True)
    forged = _wire(msgspec.structs.replace(sign_ed25519(EXAMPLE, SEED), content="x"))
    for i in range(3):
        counting.route(forged, b"q3", [], f"in/0/{i}", NOW)
    assert "alice" not in counting.core.state.records


def test_a_forgery_does_not_reserve_the_genuine_message_id() -> None:
    router = _router()
    genuine = sign_ed25519(EXAMPLE, SEED)
    forged = msgspec.structs.replace(genuine, content="send the funds to mallory")
    assert router.route(_wire(forged), b"q3", [], "in/0/1", NOW).error.code == "forged"  # type: ignore[union-attr]
    out = router.route(_wire(genuine), b"q3", [], "in/0/2", NOW)
    assert out.decision is not None and out.decision.verdict.delivers


def test_restored_window_keeps_sources_so_a_restart_tells_re_reads_from_replays() -> None:
    wire = _wire(sign_ed25519(EXAMPLE, SEED))
    first = _router().route(wire, b"q3", [], "in/0/1", NOW)
    did = first.key
    # What the Kafka shell restores from the output topics' headers: (dedupe key, source).
    (fwd,) = [o for o in first.outputs if o.route is Route.DELIVERED]
    restarted = _router()
    restarted.window.extend([(did, header(fwd.headers, H_SOURCE) or "")])
    assert restarted.route(wire, b"q3", [], "in/0/1", NOW).duplicate
    assert restarted.route(wire, b"q3", [], "in/0/7", NOW).error.code == "replayed"  # type: ignore[union-attr]


def test_permissive_alerts_but_lets_messages_on_unsigned() -> None:
    spy = SignedSpy()
    router = _router("permissive", False, spy)
    forged = msgspec.structs.replace(sign_ed25519(EXAMPLE, SEED), content="tampered")
    out = router.route(_wire(forged), b"q3", [], "in/0/1", NOW)
    assert out.decision is not None and out.decision.verdict.delivers
    assert [a["kind"] for a in _alerts(out)] == ["forged-message"]
    unsigned = msgspec.structs.replace(EXAMPLE, id="m-2")
    out = router.route(_wire(unsigned), b"q3", [], "in/0/2", NOW)
    assert out.decision is not None and not _alerts(out)
    stale = sign_ed25519(msgspec.structs.replace(EXAMPLE, id="m-3", ts=NOW + 3600), SEED)
    out = router.route(_wire(stale), b"q3", [], "in/0/3", NOW)
    assert out.decision is not None and [a["kind"] for a in _alerts(out)] == ["stale-message"]
    good = sign_ed25519(msgspec.structs.replace(EXAMPLE, id="m-4"), SEED)
    router.route(_wire(good), b"q3", [], "in/0/4", NOW)
    replay = router.route(_wire(good), b"q3", [], "in/0/5", NOW)
    assert replay.duplicate and [a["kind"] for a in _alerts(replay)] == ["replayed-message"]
    assert spy.seen == [False, False, False, True]  # only the verified one counts as signed


def test_off_mode_checks_nothing() -> None:
    router = Router(Core(default_stages(), State()), 1 << 20, DedupeWindow(100))
    assert router.identity is None
    out = router.route(_wire(msgspec.structs.replace(EXAMPLE, sig="ed25519:x")), b"q3", [], "a")
    assert out.decision is not None and out.decision.verdict.delivers


# --- CLI -------------------------------------------------------------------------------------


def test_cli_keygen_prints_a_config_that_loads_and_a_key_that_signs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["identity", "keygen", "--agent", "alice"])
    assert result.exit_code == 0, result.output
    var, seed = result.output.splitlines()[1].split("=", 1)
    assert var == "OSTRACON_KEY_ALICE"
    config_text = result.output.split("# ostracon.yaml\n", 1)[1]
    config_text = config_text.replace("identity:\n", "identity:\n  mode: enforce\n", 1)
    verifier = Verifier(parse_config(config_text).identity)
    monkeypatch.setenv(var, seed)
    signed = runner.invoke(app, ["identity", "sign", "--key-env", var], input=encode(EXAMPLE))
    assert signed.exit_code == 0, signed.output
    assert verifier.check(decode(signed.stdout.strip().encode(), 1 << 20)) == (None, "")


def test_cli_hmac_keygen_and_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["identity", "keygen", "--agent", "bob", "--hmac"])
    assert result.exit_code == 0
    var, secret = result.output.splitlines()[1].split("=", 1)
    assert "hmac_secret_env: OSTRACON_SECRET_BOB" in result.output
    monkeypatch.setenv(var, secret)
    bob = msgspec.structs.replace(EXAMPLE, sender="bob")
    signed = runner.invoke(
        app, ["identity", "sign", "--hmac", "--key-env", var], input=encode(bob) + b"\n"
    )
    assert json.loads(signed.stdout)["sig"] == sign_hmac(bob, secret).sig


def test_cli_sign_refuses_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    unset = runner.invoke(app, ["identity", "sign", "--key-env", "OSTRACON_TEST_NOPE"], input="")
    assert unset.exit_code == 2 and "OSTRACON_TEST_NOPE is unset" in unset.output
    monkeypatch.setenv("OSTRACON_TEST_KEY", SEED)
    bad = runner.invoke(app, ["identity", "sign", "--key-env", "OSTRACON_TEST_KEY"], input="{\n")
    assert bad.exit_code == 2 and "<stdin>:1: invalid-json" in bad.output
