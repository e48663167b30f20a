"""LangGraph adapter: every node of a ``StateGraph`` is an agent whose output ostracon rules on.

One import and one call, before ``compile()``::

    from ostracon.adapters.governor import InProcessGovernor
    from ostracon.adapters.langgraph import govern

    graph = govern(builder, InProcessGovernor()).compile()

(or ``builder.add_node("analyst", governed_node(analyst, "analyst", gov))`` node by node).

LangGraph has no central message hook, so each node is wrapped. The wrapper runs the node, turns
the new messages of its update (the ``messages`` key of a dict update or of
``Command(update=...)``) into envelopes, asks the :class:`~ostracon.adapters.governor.Governor`
once per message, and returns the update with the rulings applied, before any reducer or
downstream node sees it:

- sender: the node name; recipients: none (graph state is shared: every later node reads
  the message, and the genealogy must know that, or a node repeating what it read would count
  as independent confirmation). A ``Command(goto=...)`` handoff is itself an ``action``
  envelope ("<node> hands off to <targets>", recipients the targets), and so is a turn that
  writes only other state keys ("<node> writes <keys>", e.g. a supervisor's ``next``): rules
  and the blocklist govern delegation too.
- kind: ``ToolMessage`` -> ``tool_result`` (a grounding source), ``AIMessage`` with
  ``tool_calls`` -> ``tool_call`` (its text plus ``name({json args})`` per call), a
  ``HumanMessage`` from a node listed in ``human_nodes`` -> ``human``, anything else ->
  ``chat``.
- conversation: ``config["configurable"]["thread_id"]``; without one, one per invocation
  (``lg-`` + the id of the first message in the state, the run's input message).
- message id: the LangChain message ``.id`` when set, else ``<node>:<step>:<task id>:<n>``
  (LangGraph's task id is deterministic for a step of a checkpoint, so a resumed run reuses
  it; a regeneration always takes this form plus ``:r<k>``, a LangGraph ``RetryPolicy``
  attempt adds ``:a<k>``); the id is
  written back on the message, so the state and the genealogy agree and the next node's
  envelope can cite it in ``parents`` (the last message the node was given).

Verdicts:

- deliver / deliver-tagged: the message passes; with ``show_tags=True`` a tagged one gets a
  last line ``[ostracon: unverified: <keys>]`` so the receiving model knows.
- hold / quarantine / block: when the ruling carries feedback (the core gives it for a
  contained claim, not after its circuit breaker gave up, not on a timeout) and ``retries``
  allows (default 1), the node runs again with the feedback appended to its input messages
  (a ``HumanMessage`` named ``ostracon``, seen only by that node); what it says then is ruled
  afresh. A blocklisted sender gets no retry. Still withheld, the message is replaced, in
  place and with the same id and name, by :func:`~ostracon.adapters.governor.notice` text
  (an ``AIMessage``; a ``ToolMessage`` stays a ``ToolMessage`` with its ``tool_call_id`` and
  ``status="error"``, so the calling model's tool call is still answered). A replaced
  ``AIMessage`` loses its ``tool_calls``: a withheld call is not executed. Downstream nodes
  never receive the withheld text; the run goes on. A held message's handoff still happens
  (the next agent reads the notice).
- blocklisted sender (``ruling.blocklisted``): no retry; its whole update is replaced by the
  notice (other state keys it wrote are dropped) and its ``Command(goto=...)`` handoff, Sends
  included, is refused: the graph follows the node's own static/conditional edges, and a node
  routed only by ``Command`` ends its branch there (END). A handoff whose ``action`` ruling
  does not deliver is refused the same way; a refused state write is replaced by its notice.

Every message the adapter passed on carries ``response_metadata["ostracon"]`` (verdict,
decision id, tags); messages already carrying it (from a governed subgraph) and messages that
were already in the node's input are not ruled again. ``on_ruling(envelope, ruling)`` sees
every decision.

Limits: message updates, handoffs and message-less state writes are governed; the values of
other state keys written alongside messages, ``Send`` payloads, tokens streamed to the caller
(``stream_mode="messages"``) and a node's own side effects (it runs before it is ruled) are
not. A blocklisted supervisor that routes through a state key (``{"next": ...}``) has its
write dropped, so a conditional edge reads the previous value; if that loops, the recursion
limit ends the run. A ``ToolMessage`` from any node counts as a tool result (grounding): keep
tool execution in tool nodes. Graph input (the user's messages) is not submitted; rule it
yourself as ``Kind.HUMAN`` if it should ground claims. Retries re-run the whole node (its
model call included). Sync graphs (``invoke``) call ``governor.rule_sync``, async ones
(``ainvoke``) ``await governor.rule``. Built on ``langgraph._internal`` ``RunnableCallable``
(the wrapper ``add_node`` itself uses), checked against langgraph 1.2.22.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.runnables import Runnable, RunnableConfig

# LangGraph's own node wrapper: keeps config/runtime injection and sync+async execution exactly
# as add_node() does (the langgraph version is pinned in the extras).
from langgraph._internal._runnable import RunnableCallable, coerce_to_runnable
from langgraph.graph import END, StateGraph
from langgraph.types import Command, Overwrite, Send

from ostracon.adapters.governor import Governor, Ruling, notice
from ostracon.envelope import MAX_ID_LENGTH, Envelope, Kind

__all__ = ["GovernedNode", "conversation_id", "govern", "governed_node"]

META_KEY = "ostracon"  # response_metadata key marking a message the adapter already ruled
FEEDBACK_NAME = "ostracon"

OnRuling = Callable[[Envelope, Ruling], None]


def govern(
    builder: StateGraph[Any, Any, Any, Any],
    governor: Governor,
    *,
    nodes: Collection[str] | None = None,
    retries: int = 1,
    show_tags: bool = False,
    messages_key: str = "messages",
    agent_meta: Mapping[str, Mapping[str, Any]] | None = None,
    human_nodes: Collection[str] = (),
    on_ruling: OnRuling | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Wrap every node of ``builder`` (or those named in ``nodes``) in place; returns it.

    Call it after the nodes are added and before ``compile()``. ``agent_meta`` gives a node's
    envelope ``meta`` (``role``, ``model_family``: see docs/risk.md). Wrapping twice is a no-op.
    """
    if builder.compiled:
        raise ValueError("govern() must run before builder.compile(): compiled graphs copy nodes")
    unknown = set(nodes or ()) - builder.nodes.keys()
    if unknown:
        raise ValueError(f"no such nodes: {sorted(unknown)}")
    for name, spec in builder.nodes.items():
        if (nodes is not None and name not in nodes) or isinstance(spec.runnable, GovernedNode):
            continue
        inner = spec.runnable  # add_node() stored a Runnable already
        spec.runnable = GovernedNode(
            inner
            if isinstance(inner, Runnable)
            else coerce_to_runnable(cast(Any, inner), name=name, trace=False),
            name,
            governor,
            retries=retries,
            show_tags=show_tags,
            messages_key=messages_key,
            meta=(agent_meta or {}).get(name),
            human=name in human_nodes,
            on_ruling=on_ruling,
        )
    return builder


def governed_node(
    node: Callable[..., Any] | Runnable[Any, Any],
    name: str,
    governor: Governor,
    *,
    retries: int = 1,
    show_tags: bool = False,
    messages_key: str = "messages",
    meta: Mapping[str, Any] | None = None,
    human: bool = False,
    on_ruling: OnRuling | None = None,
) -> GovernedNode:
    """One governed node for ``builder.add_node(name, governed_node(fn, name, gov))``.

    Prefer :func:`govern`: ``add_node`` infers a function's input schema and ``Command``
    destinations from its type hints, which it cannot see through this wrapper.
    """
    return GovernedNode(
        coerce_to_runnable(node, name=name, trace=False),
        name,
        governor,
        retries=retries,
        show_tags=show_tags,
        messages_key=messages_key,
        meta=meta,
        human=human,
        on_ruling=on_ruling,
    )


def conversation_id(config: RunnableConfig, state: Any, messages_key: str = "messages") -> str:
    """The conversation of a node call: the thread id, else one per invocation."""
    conf = config.get("configurable") or {}
    thread = conf.get("thread_id")
    if thread is not None and str(thread):
        return _fit(str(thread), 256)
    msgs = _state_messages(state, messages_key)
    if msgs and isinstance(msgs[0], BaseMessage) and msgs[0].id:
        return _fit(f"lg-{msgs[0].id}", 256)
    # No thread and no messages: nothing ties the steps of this run together; per task.
    return f"lg-{conf.get('__pregel_task_id') or 'run'}"


# --------------------------------------------------------------------------- internals


@dataclasses.dataclass(slots=True)
class _Call:
    """What one node execution knows about itself."""

    node: str
    conversation: str
    prefix: str  # message id prefix: node, step, task, LangGraph attempt
    parents: list[str]
    input_ids: set[str] | None  # ids already in the node's input (lazily built)
    state: Any


@dataclasses.dataclass(slots=True)
class _Part:
    """One update of the node's output (a dict, or a Command's update) and its messages."""

    command: Command[Any] | None
    update: Mapping[str, Any] | None
    messages: list[Any]  # as normalized; items not ruled stay as they are
    overwrite: bool  # the messages were wrapped in Overwrite(...)
    targets: list[str]  # handoff targets (END left out)
    items: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (msg idx, ruling)
    action: int = -1  # ruling index of the handoff's action envelope


class GovernedNode(RunnableCallable):
    """A LangGraph node whose output messages are ruled on before anything reads them."""

    def __init__(
        self,
        inner: Runnable[Any, Any],
        name: str,
        governor: Governor,
        *,
        retries: int = 1,
        show_tags: bool = False,
        messages_key: str = "messages",
        meta: Mapping[str, Any] | None = None,
        human: bool = False,
        on_ruling: OnRuling | None = None,
    ) -> None:
        super().__init__(self._run, self._arun, name=name, trace=False)
        self.inner = inner
        self.node = name
        self.governor = governor
        self.retries = max(0, retries)
        self.show_tags = show_tags
        self.key = messages_key
        self.meta = dict(meta or {})
        self.human = human
        self.on_ruling = on_ruling

    # The two entry points differ only in how the node runs and how rulings are asked for.

    def _run(self, state: Any, config: RunnableConfig) -> Any:
        call = self._call(state, config)
        for retry in range(self.retries + 1):
            out = self.inner.invoke(call.state, config)
            parts, envs = self._plan(out, call, retry)
            if parts is None:
                return out
            rulings = [self._ruled(e, self.governor.rule_sync(e)) for e in envs]
            if retry < self.retries and self._retry_with_feedback(call, parts, rulings):
                continue
            return self._apply(out, parts, rulings, envs)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _arun(self, state: Any, config: RunnableConfig) -> Any:
        call = self._call(state, config)
        for retry in range(self.retries + 1):
            out = await self.inner.ainvoke(call.state, config)
            parts, envs = self._plan(out, call, retry)
            if parts is None:
                return out
            # One at a time, in order: a later message may build on an earlier one.
            rulings = [self._ruled(e, await self.governor.rule(e)) for e in envs]
            if retry < self.retries and self._retry_with_feedback(call, parts, rulings):
                continue
            return self._apply(out, parts, rulings, envs)
        raise AssertionError("unreachable")  # pragma: no cover

    def _ruled(self, env: Envelope, ruling: Ruling) -> Ruling:
        if self.on_ruling is not None:
            self.on_ruling(env, ruling)
        return ruling

    # ------------------------------------------------------------------ per call

    def _call(self, state: Any, config: RunnableConfig) -> _Call:
        conf = config.get("configurable") or {}
        info = getattr(conf.get("__pregel_runtime"), "execution_info", None)
        task = getattr(info, "task_id", None) or conf.get("__pregel_task_id") or "t"
        attempt = getattr(info, "node_attempt", 1) or 1  # LangGraph RetryPolicy attempts
        step = (config.get("metadata") or {}).get("langgraph_step", 0)
        prefix = f"{self.node[:40]}:{step}:{task}" + (f":a{attempt}" if attempt > 1 else "")
        msgs = _state_messages(state, self.key)
        last = msgs[-1] if msgs else None
        parents = (
            [last.id]
            if isinstance(last, BaseMessage) and last.id and len(last.id) <= MAX_ID_LENGTH
            else []
        )
        return _Call(
            self.node, conversation_id(config, state, self.key), prefix, parents, None, state
        )

    def _plan(self, out: Any, call: _Call, retry: int) -> tuple[list[_Part] | None, list[Envelope]]:
        """The parts of the output and the envelopes to rule (None: nothing to govern)."""
        if isinstance(out, Command):
            raw: list[Any] = [out]
        elif isinstance(out, Mapping):
            raw = [out]
        elif isinstance(out, (list, tuple)) and out and all(isinstance(o, Command) for o in out):
            raw = list(out)
        else:  # None, a state object: no messages to govern
            return None, []
        parts: list[_Part] = []
        envs: list[Envelope] = []
        suffix = f":r{retry}" if retry else ""
        for p, o in enumerate(raw):
            cmd = o if isinstance(o, Command) else None
            update = cmd.update if cmd is not None else o
            if not isinstance(update, Mapping):
                update = self._from_pairs(update)
            messages, overwrite = _normalize(update.get(self.key) if update else None)
            targets = _targets(cmd.goto) if cmd is not None else []
            part = _Part(cmd, update, messages, overwrite, targets)
            for i, msg in enumerate(messages):
                if not self._governs(msg, call):
                    continue
                mid = msg.id if (msg.id and not retry) else ""
                if not mid or len(mid) > MAX_ID_LENGTH:
                    mid = _fit(f"{call.prefix}{suffix}:{p}.{i}", MAX_ID_LENGTH)
                kind, content = self._kind_content(msg)
                part.items.append((i, len(envs)))
                envs.append(self._envelope(call, mid, kind, content, msg))
            # A handoff, or a turn that only writes other state keys (a supervisor's
            # {"next": ...}), is an action of its own: rules and the blocklist see delegation.
            writes = (
                []
                if targets or part.items or not update
                else sorted(k for k in update if k != self.key)
            )
            if targets or writes:
                part.action = len(envs)
                envs.append(
                    Envelope(
                        id=_fit(f"{call.prefix}{suffix}:{p}.act", MAX_ID_LENGTH),
                        conversation=call.conversation,
                        sender=self.node,
                        kind=Kind.ACTION,
                        content=f"{self.node} hands off to {', '.join(targets)}"
                        if targets
                        else f"{self.node} writes {', '.join(writes)}",
                        recipients=targets,
                        parents=call.parents,
                        meta={**self.meta, "handoff": targets} if targets else self.meta,
                    )
                )
            parts.append(part)
        return (parts, envs) if envs else (None, [])

    def _from_pairs(self, update: Any) -> dict[str, Any] | None:
        """``Command(update=[(key, value), ...])`` as a dict (repeated message writes joined)."""
        if not isinstance(update, (list, tuple)) or not all(
            isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in update
        ):
            return None
        out: dict[str, Any] = {}
        for k, v in update:
            if k == self.key and k in out:
                out[k] = [*_normalize(out[k])[0], *_normalize(v)[0]]
            else:
                out[k] = v
        return out

    def _governs(self, msg: Any, call: _Call) -> bool:
        if not isinstance(msg, BaseMessage) or isinstance(msg, RemoveMessage):
            return False
        if META_KEY in msg.response_metadata:
            return False  # ruled already (a governed subgraph, or passed through)
        if msg.id:
            if call.input_ids is None:  # a subgraph node returns its whole state
                msgs = _state_messages(call.state, self.key) or []
                call.input_ids = {m.id for m in msgs if isinstance(m, BaseMessage) and m.id}
            if msg.id in call.input_ids:
                return False
        return True

    def _kind_content(self, msg: BaseMessage) -> tuple[Kind, str]:
        text = str(msg.text)  # a str subclass (TextAccessor) that msgspec will not encode
        if isinstance(msg, ToolMessage):
            return Kind.TOOL_RESULT, text
        if isinstance(msg, AIMessage) and msg.tool_calls:
            calls = "\n".join(
                f"{c['name']}({json.dumps(c['args'], sort_keys=True, default=str)})"
                for c in msg.tool_calls
            )
            return Kind.TOOL_CALL, f"{text}\n{calls}" if text else calls
        if self.human and isinstance(msg, HumanMessage):
            return Kind.HUMAN, text
        return Kind.CHAT, text

    def _envelope(
        self, call: _Call, mid: str, kind: Kind, content: str, msg: BaseMessage
    ) -> Envelope:
        meta = self.meta
        if isinstance(msg, ToolMessage):
            meta = {**meta, "tool": msg.name or "", "tool_call_id": msg.tool_call_id}
        return Envelope(
            id=mid,
            conversation=call.conversation,
            sender=self.node,
            kind=kind,
            content=content,
            parents=call.parents,
            meta=meta,
        )

    def _retry_with_feedback(self, call: _Call, parts: list[_Part], rulings: list[Ruling]) -> bool:
        """Put the feedback of withheld messages into the node's next input; False: no retry."""
        feedback: list[str] = []
        for r in rulings:
            if r.blocklisted:
                return False  # a blocked agent gets no second chance
            if not r.delivers and r.feedback and r.feedback not in feedback:
                feedback.append(r.feedback)
        if not feedback:
            return False
        note = HumanMessage(
            content="[ostracon feedback] " + "\n".join(feedback), name=FEEDBACK_NAME
        )
        state = _with_message(call.state, self.key, note)
        if state is None:
            return False  # no message list to carry the feedback: retrying would repeat itself
        call.state = state
        return True

    # ------------------------------------------------------------------ apply

    def _apply(
        self, out: Any, parts: list[_Part], rulings: list[Ruling], envs: list[Envelope]
    ) -> Any:
        blocked = next((r for r in rulings if r.blocklisted), None)
        new: list[Any] = []
        for part in parts:
            if blocked is not None:
                # The whole turn is replaced: a notice per ruled message (or one for a bare
                # handoff), nothing else it wrote, no goto.
                if part.items:
                    notes = [
                        self._withheld(part.messages[i], envs[r], _worst(rulings[r], blocked))
                        for i, r in part.items
                    ]
                elif part.action >= 0:
                    a = part.action
                    notes = [self._withheld(None, envs[a], _worst(rulings[a], blocked))]
                else:
                    notes = []
                new.append(self._rebuild(part, {self.key: notes} if notes else None, True))
                continue
            messages = list(part.messages)
            for i, r in part.items:
                ruling = rulings[r]
                if ruling.delivers:
                    messages[i] = self._passed(messages[i], envs[r].id, ruling)
                else:
                    messages[i] = self._withheld(messages[i], envs[r], ruling)
            update = dict(part.update) if part.update is not None else None
            if update is not None and part.items:
                update[self.key] = Overwrite(messages) if part.overwrite else messages
            refuse = part.action >= 0 and not rulings[part.action].delivers
            if refuse and not part.targets:  # a refused state write: only its notice remains
                a = part.action
                update = {self.key: [self._withheld(None, envs[a], rulings[a])]}
            new.append(self._rebuild(part, update, refuse=refuse))
        if isinstance(out, (list, tuple)):
            return new
        return new[0]

    def _rebuild(self, part: _Part, update: Mapping[str, Any] | None, refuse: bool) -> Any:
        if part.command is None:
            return update
        return dataclasses.replace(
            part.command, update=update, goto=() if refuse else part.command.goto
        )

    def _mark(self, ruling: Ruling, msg: BaseMessage | None) -> dict[str, Any]:
        meta = dict(msg.response_metadata) if msg is not None else {}
        meta[META_KEY] = {
            "verdict": ruling.verdict.value,
            "decision_id": ruling.decision_id,
            "tags": dict(ruling.tags),
        }
        return meta

    def _passed(self, msg: BaseMessage, mid: str, ruling: Ruling) -> BaseMessage:
        upd: dict[str, Any] = {"id": mid, "response_metadata": self._mark(ruling, msg)}
        if self.show_tags and ruling.tags:
            line = "[ostracon: " + "; ".join(f"{k}: {v}" for k, v in ruling.tags.items()) + "]"
            if isinstance(msg.content, str):
                upd["content"] = f"{msg.content}\n{line}" if msg.content else line
            else:
                upd["content"] = [*msg.content, {"type": "text", "text": line}]
        return msg.model_copy(update=upd)

    def _withheld(self, msg: BaseMessage | None, env: Envelope, ruling: Ruling) -> BaseMessage:
        text = notice(ruling, self.node)
        meta = self._mark(ruling, msg)
        if isinstance(msg, ToolMessage):  # the tool call must still be answered
            return ToolMessage(
                content=text,
                tool_call_id=msg.tool_call_id,
                name=msg.name,
                id=env.id,
                status="error",
                response_metadata=meta,
            )
        if msg is None or isinstance(msg, AIMessage):  # no tool_calls: a withheld call won't run
            name = msg.name if msg is not None else self.node
            return AIMessage(content=text, name=name, id=env.id, response_metadata=meta)
        return msg.model_copy(update={"content": text, "id": env.id, "response_metadata": meta})


def _worst(own: Ruling, blocked: Ruling) -> Ruling:
    """The ruling a blocklisted turn's message is replaced under (its own if it withholds)."""
    return blocked if own.delivers else own


def _state_messages(state: Any, key: str) -> Sequence[Any] | None:
    value = state.get(key) if isinstance(state, Mapping) else getattr(state, key, None)
    return value if isinstance(value, (list, tuple)) else None


def _with_message(state: Any, key: str, msg: BaseMessage) -> Any:
    """A copy of the state with ``msg`` appended to its messages, or None if it has none."""
    msgs = _state_messages(state, key)
    if msgs is None:
        return None
    if isinstance(state, Mapping):
        return {**state, key: [*msgs, msg]}
    copy = getattr(state, "model_copy", None)  # a pydantic state
    if copy is not None:
        return copy(update={key: [*msgs, msg]})
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return dataclasses.replace(state, **{key: [*msgs, msg]})
    return None


def _normalize(value: Any) -> tuple[list[Any], bool]:
    """The update's messages as a list (what add_messages accepts, converted like it does)."""
    overwrite = isinstance(value, Overwrite)
    if overwrite:
        value = value.value
    if value is None:
        return [], overwrite
    if isinstance(value, BaseMessage):
        return [value], overwrite
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if all(isinstance(m, BaseMessage) for m in items):
        return items, overwrite
    return list(convert_to_messages(items)), overwrite


def _targets(goto: Any) -> list[str]:
    gotos = goto if isinstance(goto, (list, tuple)) else [goto]
    out: list[str] = []
    for g in gotos:
        name = g.node if isinstance(g, Send) else g
        if isinstance(name, str) and name and name != END and name not in out:
            out.append(name)
    return out


def _fit(text: str, limit: int) -> str:
    """``text`` if it fits, else a prefix plus a short hash (still unique, still stable)."""
    if len(text) <= limit:
        return text
    digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    return f"{text[: limit - 17]}~{digest}"
