"""Put an AutoGen (AgentChat 0.7) team behind ostracon: one import, one call.

Wiring::

    from ostracon.adapters.autogen import governed

    async with governed(governor) as runtime:  # any ostracon.adapters.governor.Governor
        team = RoundRobinGroupChat(agents, runtime=runtime, termination_condition=...)
        result = await team.run(task="...")

``governed()`` starts a governed ``SingleThreadedAgentRuntime`` and drains it on exit;
``governed_runtime(governor)`` returns one unstarted (``runtime.start()`` before the run,
``await runtime.stop_when_idle()`` after); with a runtime of your own, install
``OstraconIntervention(governor, runtime=rt)`` in ``intervention_handlers``. Every team given
the runtime (RoundRobinGroupChat, SelectorGroupChat, Swarm, GraphFlow, ...) is governed; a team
built without ``runtime=`` runs on a private runtime that ostracon does not see.

How it works: AutoGen's ``SingleThreadedAgentRuntime`` passes every published and sent message
through its intervention handlers before delivering it. A team turn arrives twice: as a
``GroupChatMessage`` on the team's output topic (the caller's stream) and as a
``GroupChatAgentResponse`` on the group topic (what the other participants and the manager
read). Both carry the same chat message id, so each message is ruled once (envelope id = the
AutoGen message id) and the same outcome is applied to both copies. Envelopes:

- sender = the message's ``source``; conversation = ``autogen-<team id>`` (the team id is the
  key of every agent and topic of one team, so one team instance is one conversation, across
  its runs; pass ``conversation=`` to fix it); recipients = everyone, except tool events,
  which only the calling agent sees;
- kind: ``human`` for task messages from a source in ``human_sources`` (default ``user``),
  ``tool_call`` / ``tool_result`` for ``ToolCallRequestEvent`` / ``ToolCallExecutionEvent``,
  ``chat`` for every other chat message (a ``ToolCallSummaryMessage`` then derives from the
  agent's own tool result, so it is grounded); a handoff's content includes the model context
  it hands to its target; list code-executor agents, whose replies are facts, in
  ``containment.trusted_sources``;
- parents = the messages the sender received since its previous turn (its input).

What each verdict does here:

- deliver: the message passes unchanged;
- deliver-tagged: passes; with ``show_tags=True`` a line ``[ostracon: unverified: <keys>]`` is
  appended to text messages, so the receiving agents see it;
- hold / quarantine / block: the content is replaced by :func:`~ostracon.adapters.governor.
  notice` (reason + decision id), in the group chat, the manager's thread (and so a selector
  model) and the caller's stream. Nothing is dropped: a dropped message never completes in
  AutoGen's runtime (``stop_when_idle`` hangs and the team waits for the turn forever). The
  ruling's feedback goes to the sender alone: it is published to the sender's own participant
  topic, so it is in the sender's input on its next turn (the retry); the retry cap is the
  core's (``containment.max_retries``, then the circuit breaker). A withheld handoff still
  hands off (the team keeps moving) but without its text and model context;
- blocklisted sender: every turn it takes is replaced by the notice, and it cannot delegate:
  a ``HandoffMessage`` from it becomes a plain notice, or, when a reroute target exists
  (``reroute_to=``, else the agent that handed off to it), a handoff to that target, so a
  Swarm does not keep asking the blocked agent.

Limits: the handler sees a turn after the agent produced it, so the agent's own tool calls
have already run (a blocked agent's tools still execute; their results are withheld), and the
sender keeps its own text in its model context. An immediate re-ask within the same turn is
not possible from a runtime hook: the retry is the sender's next turn. Streaming chunks
(``model_client_stream=True``) reach the caller's stream before the turn is ruled; they never
reach other agents; the same holds for thoughts (``ThoughtEvent``) and other events, which are
not ruled (a handoff's context, which does reach its target, is). Tags are shown only on text
messages. A governor error fails as the
governor's ``fail`` mode says (closed by default): the turn is quarantined, never raised,
because an exception in an intervention handler also stalls the runtime (a bug in the
adapter itself is logged and the message passes unchanged, for the same reason). The feedback
needs the runtime (``runtime=`` or :func:`governed_runtime`); without it, withheld turns carry
the notice only. The runtime handles one message at a time and waits for the handler, so with
the sidecar backend each team message waits one broker round trip for its ruling.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from autogen_agentchat.base import Response
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    BaseTextChatMessage,
    HandoffMessage,
    MultiModalMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
)
from autogen_agentchat.teams._group_chat._events import (
    GroupChatAgentResponse,
    GroupChatMessage,
    GroupChatStart,
    GroupChatTeamResponse,
)
from autogen_core import (
    AgentId,
    AgentRuntime,
    DefaultInterventionHandler,
    DropMessage,
    FunctionCall,
    MessageContext,
    SingleThreadedAgentRuntime,
    TopicId,
)
from autogen_core.models import FunctionExecutionResult

from ostracon.adapters.governor import Governor, Ruling, notice
from ostracon.decision import Verdict, decision_id
from ostracon.envelope import Envelope, Kind

__all__ = ["OstraconIntervention", "governed", "governed_runtime"]

log = logging.getLogger(__name__)

# AutoGen warns whenever an intervention handler passes on a None RPC result, and most team
# RPCs return None: with any handler installed that is expected, not a bug.
warnings.filterwarnings(
    "ignore", message="Intervention handler on_response returned None", category=RuntimeWarning
)

OSTRACON = "ostracon"  # the source of feedback messages
MAX_PARENTS = 16
_RECENT = 64  # delivered messages remembered per conversation, for parents
_MAX_DECIDED = 4096  # rulings kept to apply to the second copy of a turn (arrives right after)
_MAX_CONVERSATIONS = 1024

AgentMessage = BaseChatMessage | BaseAgentEvent


class _Outcome:
    """One ruled message: the ruling and what travels instead of the original."""

    __slots__ = ("message", "ruling")

    def __init__(self, ruling: Ruling, message: AgentMessage) -> None:
        self.ruling = ruling
        self.message = message


class _Conversation:
    """What the adapter remembers of one team: recent deliveries, turns and handoffs."""

    __slots__ = ("handed_by", "last_call", "last_turn", "recent", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.recent: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=_RECENT)
        self.last_turn: dict[str, int] = {}  # sender -> seq of its last chat message
        self.last_call: dict[str, str] = {}  # sender -> id of its last tool call event
        self.handed_by: dict[str, str] = {}  # handoff target -> who handed off to it

    def parents(self, sender: str) -> list[str]:
        since = self.last_turn.get(sender, -1)
        ids = [i for seq, i, s in self.recent if seq > since and s != sender]
        return ids[-MAX_PARENTS:]


class OstraconIntervention(DefaultInterventionHandler):
    """An AutoGen intervention handler that rules every team message through a Governor.

    Args:
        governor: the backend (in-process or sidecar); reused for every message.
        runtime: the runtime this handler is installed in; needed to send feedback to senders.
        conversation: a fixed conversation id for every team on the runtime (default: one per
            team, ``autogen-<team id>``).
        show_tags: append ``[ostracon: <tag>: <value>]`` to delivered-tagged text messages.
        human_sources: sources whose task messages are ``human`` (grounding) envelopes.
        reroute_to: a participant that receives the turn when a blocklisted agent speaks
            (as a handoff; for Swarm teams). Default: the agent that handed off to it, if any.
        on_ruling: called with each envelope and its ruling (logging, UIs, tests).
    """

    def __init__(
        self,
        governor: Governor,
        *,
        runtime: AgentRuntime | None = None,
        conversation: str | None = None,
        show_tags: bool = False,
        human_sources: Collection[str] = ("user",),
        reroute_to: str | None = None,
        on_ruling: Callable[[Envelope, Ruling], None] | None = None,
    ) -> None:
        self.governor = governor
        self.runtime = runtime
        self.conversation = conversation
        self.show_tags = show_tags
        self.human_sources = frozenset(human_sources)
        self.reroute_to = reroute_to
        self.on_ruling = on_ruling
        self._fail: str = getattr(governor, "fail", "closed")
        self._decided: collections.OrderedDict[str, _Outcome] = collections.OrderedDict()
        self._conversations: collections.OrderedDict[str, _Conversation] = collections.OrderedDict()
        self._sent: set[str] = set()  # ids of feedback messages in flight (not ruled)

    # ------------------------------------------------------------------ runtime hooks

    async def on_send(
        self, message: Any, *, message_context: MessageContext, recipient: AgentId
    ) -> Any | type[DropMessage]:
        # team.run() sends the task to the manager, which puts it in its thread and the
        # caller's stream before publishing it: rule it here already.
        if isinstance(message, GroupChatStart) and message.messages:
            return await self._guard(message, self._conversation_id(recipient.key), None)
        return message

    async def on_publish(
        self, message: Any, *, message_context: MessageContext
    ) -> Any | type[DropMessage]:
        if not isinstance(
            message,
            GroupChatAgentResponse | GroupChatMessage | GroupChatStart | GroupChatTeamResponse,
        ):
            return message
        topic = message_context.topic_id
        key = topic.source if topic is not None else "default"
        return await self._guard(message, self._conversation_id(key), message_context.sender)

    # ------------------------------------------------------------------ per event type

    async def _guard(self, message: Any, conv: str, sender: AgentId | None) -> Any:
        try:
            return await self._apply(message, conv, sender)
        except Exception:  # an exception here would stall the runtime: log, pass unchanged
            log.exception(
                "ostracon: could not govern a %s: passed on unchanged", type(message).__name__
            )
            return message

    async def _apply(self, message: Any, conv: str, sender: AgentId | None) -> Any:
        if isinstance(message, GroupChatAgentResponse):
            if message.name == OSTRACON and message.response.chat_message.id in self._sent:
                self._sent.discard(message.response.chat_message.id)  # our own feedback
                return message
            resp = message.response
            chat = await self._one(resp.chat_message, conv, sender)
            inner = resp.inner_messages
            new_inner = [await self._one(m, conv, sender) for m in inner] if inner else inner
            if chat is resp.chat_message and (
                not inner or all(a is b for a, b in zip(inner, new_inner or (), strict=True))
            ):
                return message
            assert isinstance(chat, BaseChatMessage)
            return GroupChatAgentResponse(
                response=Response(chat_message=chat, inner_messages=new_inner), name=message.name
            )
        if isinstance(message, GroupChatMessage):
            new = await self._one(message.message, conv, sender)
            return message if new is message.message else GroupChatMessage(message=new)
        if isinstance(message, GroupChatStart):
            if not message.messages:
                return message
            msgs = [await self._one(m, conv, None) for m in message.messages]
            if all(a is b for a, b in zip(msgs, message.messages, strict=True)):
                return message
            return message.model_copy(update={"messages": msgs})
        if isinstance(message, GroupChatTeamResponse):
            result = message.result
            msgs = [await self._one(m, conv, sender) for m in result.messages]
            if all(a is b for a, b in zip(msgs, result.messages, strict=True)):
                return message
            return message.model_copy(
                update={"result": result.model_copy(update={"messages": msgs})}
            )
        return message

    async def _one(self, msg: Any, conv: str, publisher: AgentId | None) -> Any:
        """Rule one AgentChat message (once per id) and return what travels instead."""
        if not isinstance(msg, BaseChatMessage | BaseAgentEvent):
            return msg
        done = self._decided.get(msg.id)
        if done is not None:
            return done.message
        env = self._envelope(msg, conv)
        if env is None:  # an event that is not inter-agent traffic (thoughts, chunks, ...)
            return msg
        ruling = await self._rule(env)
        out = self._outcome(msg, env, ruling)
        self._decided[msg.id] = _Outcome(ruling, out)
        if len(self._decided) > _MAX_DECIDED:
            self._decided.popitem(last=False)
        self._record(conv, env, ruling, out)
        try:  # side effects must not undo the ruling (``_guard`` would pass the original)
            if self.on_ruling is not None:
                self.on_ruling(env, ruling)
            if ruling.feedback and not ruling.delivers and publisher is not None:
                await self._feedback(publisher, ruling.feedback)
        except Exception:
            log.exception("ostracon: on_ruling or feedback failed for %s", env.id)
        return out

    # ------------------------------------------------------------------ envelopes

    def _envelope(self, msg: AgentMessage, conv: str) -> Envelope | None:
        c = self._state(conv)
        source = msg.source
        if isinstance(msg, BaseChatMessage):
            kind = Kind.HUMAN if source in self.human_sources else Kind.CHAT
            return Envelope(
                id=msg.id,
                conversation=conv,
                sender=source,
                kind=kind,
                content=_handoff_text(msg)
                if isinstance(msg, HandoffMessage)
                else msg.to_model_text(),
                parents=c.parents(source),
                ts=msg.created_at.timestamp(),
            )
        if isinstance(msg, ToolCallRequestEvent):
            text = "\n".join(f"{f.name}({f.arguments})" for f in msg.content)
            return Envelope(
                id=msg.id,
                conversation=conv,
                sender=source,
                kind=Kind.TOOL_CALL,
                content=text,
                recipients=[source],
                parents=c.parents(source),
                ts=msg.created_at.timestamp(),
                meta={"tools": [f.name for f in msg.content]},
            )
        if isinstance(msg, ToolCallExecutionEvent):
            call = c.last_call.get(source)
            return Envelope(
                id=msg.id,
                conversation=conv,
                sender=source,
                kind=Kind.TOOL_RESULT,
                content="\n".join(r.content for r in msg.content),
                recipients=[source],
                parents=[call] if call else [],
                ts=msg.created_at.timestamp(),
                meta={"tools": [r.name for r in msg.content]},
            )
        return None

    async def _rule(self, env: Envelope) -> Ruling:
        try:
            return await self.governor.rule(env)
        except Exception as exc:  # never raise into the runtime; the governor's fail mode
            did = decision_id(env.conversation, env.id)
            why = f"governor error: {exc!r}"
            log.warning("ostracon: %s", why)
            if self._fail == "open":
                return Ruling(
                    Verdict.DELIVER_TAGGED, did, f"{why} (fail-open)", tags={"ungoverned": "1"}
                )
            return Ruling(Verdict.QUARANTINE, did, f"{why} (fail-closed)")

    # ------------------------------------------------------------------ applying rulings

    def _outcome(self, msg: AgentMessage, env: Envelope, ruling: Ruling) -> AgentMessage:
        if ruling.delivers and not ruling.blocklisted:
            if self.show_tags and ruling.tags and ruling.verdict is Verdict.DELIVER_TAGGED:
                return _tagged(msg, ruling.tags)
            return msg
        text = notice(ruling, env.sender)
        if ruling.blocklisted and isinstance(msg, BaseChatMessage):
            # It may not steer the team: no handoff of its own; hand the turn on if we can.
            conv = self._state(env.conversation)
            target = self.reroute_to or conv.handed_by.get(env.sender)
            if target and target != env.sender:
                return HandoffMessage(
                    id=msg.id, source=msg.source, target=target, content=text, context=[]
                )
            return TextMessage(id=msg.id, source=msg.source, content=text, metadata=msg.metadata)
        return _replaced(msg, text)

    def _record(self, conv: str, env: Envelope, ruling: Ruling, out: AgentMessage) -> None:
        c = self._state(conv)
        c.seq += 1
        if env.kind is Kind.TOOL_CALL:
            c.last_call[env.sender] = env.id
            return
        if env.kind is Kind.TOOL_RESULT:
            return
        c.last_turn[env.sender] = c.seq
        if ruling.delivers:  # a withheld message was seen by nobody: no one builds on it
            c.recent.append((c.seq, env.id, env.sender))
        if isinstance(out, HandoffMessage) and not ruling.blocklisted:
            c.handed_by[out.target] = env.sender

    async def _feedback(self, publisher: AgentId, text: str) -> None:
        """Put the feedback in the sender's input for its next turn (its participant topic)."""
        if self.runtime is None:
            return
        reply = TextMessage(source=OSTRACON, content=text)
        self._sent.add(reply.id)
        await self.runtime.publish_message(
            GroupChatAgentResponse(response=Response(chat_message=reply), name=OSTRACON),
            topic_id=TopicId(type=publisher.type, source=publisher.key),
        )

    # ------------------------------------------------------------------ state

    def _conversation_id(self, key: str) -> str:
        return self.conversation or f"autogen-{key}"

    def _state(self, conv: str) -> _Conversation:
        c = self._conversations.get(conv)
        if c is None:
            c = self._conversations[conv] = _Conversation()
            if len(self._conversations) > _MAX_CONVERSATIONS:
                self._conversations.popitem(last=False)
        else:
            self._conversations.move_to_end(conv)
        return c


def _replaced(msg: AgentMessage, text: str) -> AgentMessage:
    """The same message (type, id, source) with its content withheld."""
    if isinstance(msg, HandoffMessage):  # keep the target (liveness), drop text and context
        return msg.model_copy(update={"content": text, "context": []})
    if isinstance(msg, ToolCallSummaryMessage):
        return msg.model_copy(update={"content": text, "tool_calls": [], "results": []})
    if isinstance(msg, BaseTextChatMessage):
        return msg.model_copy(update={"content": text})
    if isinstance(msg, MultiModalMessage):
        return msg.model_copy(update={"content": [text]})
    if isinstance(msg, ToolCallRequestEvent):
        args = json.dumps({"withheld": text})
        calls = [FunctionCall(id=f.id, arguments=args, name=f.name) for f in msg.content]
        return msg.model_copy(update={"content": calls})
    if isinstance(msg, ToolCallExecutionEvent):
        res = [r.model_copy(update={"content": text, "is_error": True}) for r in msg.content]
        return msg.model_copy(update={"content": res})
    if isinstance(msg, BaseChatMessage):  # structured or custom content: a text stand-in
        return TextMessage(id=msg.id, source=msg.source, content=text, metadata=msg.metadata)
    return msg


def _handoff_text(msg: HandoffMessage) -> str:
    """A handoff's text and the model context it hands over (the target's model reads it)."""
    parts = [msg.content]
    for m in msg.context:
        thought = getattr(m, "thought", None)
        if thought:
            parts.append(thought)
        content = m.content
        if isinstance(content, str):
            parts.append(content)
            continue
        for x in content:
            if isinstance(x, str):
                parts.append(x)
            elif isinstance(x, FunctionExecutionResult):
                parts.append(x.content)
    return "\n".join(parts)


def _tagged(msg: AgentMessage, tags: dict[str, str]) -> AgentMessage:
    line = "[ostracon: " + "; ".join(f"{k}: {v}" for k, v in sorted(tags.items())) + "]"
    if isinstance(msg, BaseTextChatMessage):
        return msg.model_copy(update={"content": f"{msg.content}\n{line}"})
    if isinstance(msg, MultiModalMessage):
        return msg.model_copy(update={"content": [*msg.content, line]})
    return msg


# ---------------------------------------------------------------------- one-call wiring


def governed_runtime(governor: Governor, **options: Any) -> SingleThreadedAgentRuntime:
    """A new ``SingleThreadedAgentRuntime`` whose messages are ruled by ``governor``.

    ``options`` are :class:`OstraconIntervention`'s. Start it (``runtime.start()``) before
    ``team.run()`` and ``await runtime.stop_when_idle()`` after, as for any runtime passed to
    a team. The handler is ``runtime.ostracon`` (an attribute set here).
    """
    handler = OstraconIntervention(governor, **options)
    runtime = SingleThreadedAgentRuntime(intervention_handlers=[handler])
    handler.runtime = runtime
    runtime.ostracon = handler  # type: ignore[attr-defined]
    return runtime


@contextlib.asynccontextmanager
async def governed(governor: Governor, **options: Any) -> AsyncIterator[SingleThreadedAgentRuntime]:
    """:func:`governed_runtime`, started, and drained (``stop_when_idle``) on exit."""
    runtime = governed_runtime(governor, **options)
    runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop_when_idle()
