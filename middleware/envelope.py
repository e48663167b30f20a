"""The envelope contract: one inter-agent message as it travels on the bus.

Envelopes are JSON on the wire and decoded with msgspec into typed structs. Decoding never
raises anything but :class:`InvalidEnvelope`, whose ``code`` and ``reason`` go into the
dead-letter record. Unknown fields are accepted (ignored by the struct) and survive because
forwarded records carry the original bytes, never a re-encoding. See docs/protocol.md.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

MAX_ID_LENGTH = 128

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class Kind(enum.StrEnum):
    """What a message is; later stages treat tool results and humans as grounding sources."""

    CHAT = "chat"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    ACTION = "action"
    VOTE = "vote"
    ACCUSATION = "accusation"
    HUMAN = "human"
    SYSTEM = "system"


ClaimValue = str | int | float | bool | None


class Claim(msgspec.Struct, frozen=True):
    """A structured claim the sender states explicitly: ``key`` has ``value``."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    value: ClaimValue
    sources: list[str] = []


class Envelope(msgspec.Struct, frozen=True):
    """One message between agents. ``conversation`` is also the Kafka record key."""

    id: Id
    conversation: Name
    sender: Name
    kind: Kind
    content: str
    recipients: list[Name] = []
    parents: list[Id] = []
    claims: list[Claim] = []
    ts: float | None = None
    meta: dict[str, Any] = {}
    sig: str | None = None


class InvalidEnvelope(Exception):
    """Bytes that are not a valid envelope. ``code`` is a short, stable machine tag."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


_decoder = msgspec.json.Decoder(Envelope)
_encoder = msgspec.json.Encoder()


def decode(data: bytes | None, max_bytes: int) -> Envelope:
    """Decode and validate wire bytes, or raise :class:`InvalidEnvelope` with a reason."""
    if data is None:
        raise InvalidEnvelope("empty", "record has no value (tombstone)")
    if len(data) > max_bytes:
        raise InvalidEnvelope("too-large", f"record is {len(data)} bytes, limit is {max_bytes}")
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise InvalidEnvelope("invalid-utf8", f"not valid UTF-8 at byte {exc.start}") from None
    except msgspec.ValidationError as exc:
        text = str(exc)
        code = "unknown-kind" if text.endswith("`$.kind`") and "enum" in text else "schema"
        raise InvalidEnvelope(code, text) from None
    except RecursionError:
        raise InvalidEnvelope("invalid-json", "nested too deeply") from None
    except msgspec.DecodeError as exc:
        # Error path only: tell "not UTF-8 at all" apart from "UTF-8 but not JSON".
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidEnvelope("invalid-utf8", f"not valid UTF-8 at byte {bad.start}") from None
        raise InvalidEnvelope("invalid-json", str(exc)) from None


def encode(envelope: Envelope) -> bytes:
    """Encode an envelope to its JSON wire form (used by agents, adapters and the demo)."""
    return _encoder.encode(envelope)
