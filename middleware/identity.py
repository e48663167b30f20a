"""Signed agent identities: canonical signing bytes, HMAC-SHA256 and Ed25519 signatures, and
the per-message check the router runs before the core (see docs/protocol.md, Identity).

The signing bytes are RFC 8785 (JSON Canonicalization Scheme) of the envelope's ten signed
fields with their defaults filled in and ``sig`` left out, so an agent in any language with a
JCS library can reproduce them, and no field (recipients and claims included) can be altered
without breaking the signature. ``sig`` is ``"<alg>:<base64 signature>"``; the algorithm must
be the one of the key registered for the sender, so a sender cannot pick a weaker check.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .config import AgentKeyConfig, IdentityConfig
from .core import State
from .decision import Alert, Severity
from .envelope import Envelope

HMAC = "hmac-sha256"
ED25519 = "ed25519"

# The signed fields, in the order JCS sorts them (UTF-16 code units; all ASCII here).
SIGNED_FIELDS = (
    "claims",
    "content",
    "conversation",
    "id",
    "kind",
    "meta",
    "parents",
    "recipients",
    "sender",
    "ts",
)

_encode = msgspec.json.encode  # escapes strings exactly as RFC 8785 section 3.2.2.2 does


# --- canonical bytes -----------------------------------------------------------------------


def canonical(envelope: Envelope) -> bytes:
    """The bytes a sender signs: RFC 8785 JSON of the signed fields (``sig`` excluded).

    Absent optional fields count with their defaults (``[]``, ``{}``, ``null``), so omitting
    ``recipients`` and sending ``"recipients": []`` sign the same. Raises ValueError for
    values JSON cannot carry canonically (a lone surrogate, a non-finite number).
    """
    e = envelope
    # Built in JCS member order and encoded once: msgspec keeps insertion order, and numbers
    # that JCS writes differently from msgspec are pre-rendered (see _prep).
    return _encode(
        {
            "claims": [
                {"key": c.key, "sources": c.sources, "value": _prep(c.value)} for c in e.claims
            ],
            "content": e.content,
            "conversation": e.conversation,
            "id": e.id,
            "kind": e.kind,
            "meta": _prep(e.meta) if e.meta else {},
            "parents": e.parents,
            "recipients": e.recipients,
            "sender": e.sender,
            "ts": None if e.ts is None else msgspec.Raw(_number(e.ts).encode()),
        }
    )


def canonical_json(value: Any) -> str:
    """RFC 8785 serialization of a JSON value (dict, list, str, int, float, bool, None)."""
    return _encode(_prep(value)).decode()


def _prep(value: Any) -> Any:
    """``value`` ready for msgspec to write as JCS: objects with their members sorted by
    UTF-16 code units, floats (and integers beyond 2**53) as ECMAScript prints them."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        # JSON numbers are IEEE doubles in JCS: integers beyond 2**53 are written as the
        # double they round to, as every JCS implementation reads them.
        if -(2**53) <= value <= 2**53:
            return value
        try:
            return msgspec.Raw(_number(float(value)).encode())
        except OverflowError:  # beyond a double: no JSON number a JCS reader can hold
            raise ValueError(f"integer of {value.bit_length()} bits has no JSON form") from None
    if isinstance(value, float):
        return msgspec.Raw(_number(value).encode())
    if isinstance(value, dict):
        return {k: _prep(value[k]) for k in sorted(value, key=_utf16)}
    if isinstance(value, list | tuple):
        return [_prep(v) for v in value]
    raise ValueError(f"not a JSON value: {type(value).__name__}")


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _number(x: float) -> str:
    """ECMAScript Number::toString (RFC 8785 section 3.2.2.3) from Python's shortest repr."""
    if not math.isfinite(x):
        raise ValueError(f"{x} has no JSON form")
    if x.is_integer():
        if -(2**53) <= x <= 2**53:
            return str(int(x))  # exact, and the shortest digits (also -0.0 -> "0")
    else:
        r = repr(x)
        if "e" not in r:  # a fraction in fixed notation: 1e-4 <= |x| < 2**53, as ECMAScript
            return r
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)  # value = 0.<digits> * 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    s = stripped.rstrip("0")
    k, n = len(s), point
    if k <= n <= 21:
        return sign + s + "0" * (n - k)
    if 0 < n <= 21:
        return sign + s[:n] + "." + s[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + s
    e = n - 1
    head = s if k == 1 else s[0] + "." + s[1:]
    return f"{sign}{head}e{'+' if e > 0 else '-'}{abs(e)}"


# --- signing (agents, adapters, the demo) ----------------------------------------------------


class Signer(Protocol):
    """Signs canonical bytes; ``alg`` is the prefix of the ``sig`` it makes."""

    alg: str

    def signature(self, data: bytes) -> bytes: ...


class HmacSigner:
    """HMAC-SHA256 with a shared secret (its UTF-8 bytes are the key)."""

    alg = HMAC

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("HMAC secret is empty")
        self._key = secret.encode()

    def signature(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, hashlib.sha256)


class Ed25519Signer:
    """Ed25519 with a private key: the raw 32-byte seed, base64 (as ``keygen`` prints it)."""

    alg = ED25519

    def __init__(self, private_key: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(_b64(private_key, 32, "private key"))

    def signature(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @property
    def public_key(self) -> str:
        """The matching ``ed25519_public_key`` for the config, base64."""
        return base64.b64encode(self._key.public_key().public_bytes_raw()).decode()


def sign(envelope: Envelope, signer: Signer) -> Envelope:
    """The envelope with ``sig`` set over its canonical bytes."""
    sig = base64.b64encode(signer.signature(canonical(envelope))).decode()
    return msgspec.structs.replace(envelope, sig=f"{signer.alg}:{sig}")


def sign_hmac(envelope: Envelope, secret: str) -> Envelope:
    """``sign`` with HMAC-SHA256 and a shared secret (for one-off use; keep a signer)."""
    return sign(envelope, HmacSigner(secret))


def sign_ed25519(envelope: Envelope, private_key: str) -> Envelope:
    """``sign`` with Ed25519 and a base64 private key (for one-off use; keep a signer)."""
    return sign(envelope, Ed25519Signer(private_key))


def keygen(alg: str = ED25519) -> tuple[str, str]:
    """A new (secret, public) pair, base64: Ed25519 (private seed, public key), or for HMAC
    (secret, same secret) — a random 32-byte secret shared by the agent and ostracon."""
    if alg == HMAC:
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        return secret, secret
    private = Ed25519PrivateKey.generate()
    seed = base64.b64encode(private.private_bytes_raw()).decode()
    return seed, base64.b64encode(private.public_key().public_bytes_raw()).decode()


# --- verification ----------------------------------------------------------------------------


class Key(Protocol):
    """A registered agent's verification key (loaded once, at start)."""

    alg: str

    def verify(self, data: bytes, signature: bytes) -> bool: ...


class HmacKey:
    alg = HMAC

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def verify(self, data: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(hmac.digest(self._key, data, hashlib.sha256), signature)


class Ed25519Key:
    alg = ED25519

    def __init__(self, public_key: bytes) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


class KeyProblem(Exception):
    """A registered key that cannot be loaded; config turns it into a positioned error."""

    def __init__(self, agent: str, field: str, problem: str) -> None:
        super().__init__(f"identity.agents.{agent}.{field}: {problem}")
        self.agent, self.field, self.problem = agent, field, problem


def load_keys(identity: IdentityConfig, env: Mapping[str, str] | None = None) -> dict[str, Key]:
    """Every registered agent's key object; raises :class:`KeyProblem` for the first bad one
    (no key or two keys, an unset env var, bad base64, a wrong key length)."""
    env = os.environ if env is None else env
    return {name: _load_key(name, spec, env) for name, spec in identity.agents.items()}


def _load_key(name: str, spec: AgentKeyConfig, env: Mapping[str, str]) -> Key:
    given = [
        f
        for f in ("hmac_secret", "hmac_secret_env", "ed25519_public_key")
        if getattr(spec, f) is not None
    ]
    if len(given) != 1:
        field = given[1] if given else ""
        raise KeyProblem(
            name,
            field,
            "give exactly one of hmac_secret, hmac_secret_env, ed25519_public_key"
            + (f" (got {', '.join(given)})" if given else ""),
        )
    if spec.ed25519_public_key is not None:
        try:
            return Ed25519Key(_b64(spec.ed25519_public_key, 32, "public key"))
        except ValueError as exc:
            raise KeyProblem(name, "ed25519_public_key", str(exc)) from None
    if spec.hmac_secret_env is not None:
        secret = env.get(spec.hmac_secret_env)
        if not secret:
            problem = f"environment variable {spec.hmac_secret_env} is unset or empty"
            raise KeyProblem(name, "hmac_secret_env", problem)
        return HmacKey(secret)
    if not spec.hmac_secret:
        raise KeyProblem(name, "hmac_secret", "empty secret")
    return HmacKey(spec.hmac_secret)


def _b64(text: str, length: int, what: str) -> bytes:
    """Standard or URL-safe base64 of exactly ``length`` bytes, or ValueError saying why."""
    try:
        raw = base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        raise ValueError(f"{what} is not valid base64") from None
    if len(raw) != length:
        raise ValueError(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


class Failure(enum.StrEnum):
    """Why a message failed the identity check: its dead-letter code (docs/protocol.md)."""

    UNSIGNED = "unsigned"
    FORGED = "forged"
    UNREGISTERED = "unregistered"
    REPLAYED = "replayed"
    STALE = "stale"

    @property
    def alert_kind(self) -> str:
        return _ALERT_KIND[self]


_ALERT_KIND = {
    Failure.UNSIGNED: "unsigned-message",
    Failure.FORGED: "forged-message",
    Failure.UNREGISTERED: "unregistered-sender",
    Failure.REPLAYED: "replayed-message",
    Failure.STALE: "stale-message",
}
# Forgery and replay are attacks; the others are as often a misconfigured agent.
_SEVERITY = {
    Failure.UNSIGNED: Severity.WARNING,
    Failure.FORGED: Severity.CRITICAL,
    Failure.UNREGISTERED: Severity.WARNING,
    Failure.REPLAYED: Severity.CRITICAL,
    Failure.STALE: Severity.WARNING,
}


class Verifier:
    """The router's identity check for one configuration; keys are loaded once."""

    __slots__ = ("count_replays", "enforce", "keys", "window_s")

    def __init__(self, identity: IdentityConfig, keys: dict[str, Key] | None = None) -> None:
        self.enforce = identity.mode == "enforce"
        self.window_s = identity.window_s
        self.count_replays = identity.count_replays
        self.keys = load_keys(identity) if keys is None else keys

    @classmethod
    def from_config(cls, identity: IdentityConfig) -> Verifier | None:
        """None when identity checks are off (the router then skips them entirely)."""
        return None if identity.mode == "off" else cls(identity)

    def check(self, envelope: Envelope) -> tuple[Failure | None, str]:
        """(None, "") when the signature verifies; else the failure and a reason.

        Only the signature: replay and the time window are the router's (they depend on what
        was seen before and on the clock).
        """
        key = self.keys.get(envelope.sender)
        if key is None:
            return Failure.UNREGISTERED, f"sender {envelope.sender!r} is not a registered agent"
        sig = envelope.sig
        if not sig:
            return Failure.UNSIGNED, f"message from {envelope.sender!r} has no sig"
        alg, _, b64 = sig.partition(":")
        if alg != key.alg:
            return Failure.FORGED, f"sig algorithm {alg!r} is not {envelope.sender!r}'s ({key.alg})"
        try:
            ok = key.verify(canonical(envelope), base64.b64decode(b64, validate=True))
        except ValueError:  # bad base64, or content with no canonical form
            ok = False
        if not ok:
            return Failure.FORGED, f"signature does not verify with {envelope.sender!r}'s key"
        return None, ""

    def stale(self, envelope: Envelope, now: float | None) -> str:
        """Why ``envelope``'s ts is outside the window around ``now`` ("" when it is not;
        always "" without a clock, which only a shell can give)."""
        if now is None:
            return ""
        ts = envelope.ts
        if ts is None:
            return "message has no ts"
        if abs(ts - now) > self.window_s:
            return f"ts is {ts - now:+.0f} s from now; the window is ±{self.window_s:g} s"
        return ""


def failure_alert(failure: Failure, envelope: Envelope, reason: str, did: str) -> Alert:
    """The alert raised with an identity dead letter (or, permissive, instead of one)."""
    return Alert(
        kind=failure.alert_kind,
        severity=_SEVERITY[failure],
        summary=f"{failure.value} message {envelope.id!r} claiming sender {envelope.sender!r}: "
        f"{reason}",
        conversation=envelope.conversation,
        agents=[envelope.sender],
        evidence=[envelope.id],
        decision_id=did,
        ts=envelope.ts,
    )


def count_against(state: State, sender: str) -> None:
    """Count a proven offence (a replayed or stale message whose signature verified) against
    ``sender``'s observed record: one claim asserted and found Red (see ostracon.containment),
    so it weighs on reputation like a lie. Never called for forged or unsigned messages."""
    record = state.records.setdefault(sender, [0, 0])
    record[0] += 1
    record[1] += 1
