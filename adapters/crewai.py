"""CrewAI adapter: put a crew behind ostracon with one import and one call.

Wiring::

    from ostracon.adapters.crewai import governed
    from ostracon.adapters.governor import InProcessGovernor

    with governed(InProcessGovernor()):   # or SidecarGovernor(config), same interface
        crew.kickoff()

or ``handle = install(governor)`` ... ``handle.uninstall()``. The adapter registers process-wide
CrewAI interception hooks (``crewai.hooks``), so every crew kicked off while it is installed is
governed; uninstall (or leave the ``with`` block) to remove them.

What becomes an envelope (conversation: one per kickoff, ``<prefix>:<n>``; message ids ``m<n>``):

- a task's output (``post_step``): ``chat`` from the agent's role, to everyone, with the
  upstream outputs in its context and the tool results it read as ``parents``;
- a tool call / its result: ``tool_call`` from the agent to ``tool:<name>`` and ``tool_result``
  from ``tool:<name>`` back to the agent (tool results are grounding sources);
- a delegation ("Delegate work to coworker", "Ask question to coworker"): ``chat`` from the
  delegator to the coworker (task/question + context), and the coworker's answer as ``chat``
  from the coworker back (an agent's answer, never a grounding tool result).

How each verdict is applied:

- ``deliver`` / ``deliver-tagged``: passes unchanged; with ``show_tags=True`` a line
  ``[ostracon: unverified: <keys>]`` is appended so the receiving agent sees the tag.
- ``hold`` / ``quarantine`` / ``block`` on a task output: with ``retries > 0`` the output goes
  back to its agent through CrewAI's task-guardrail retry, with ostracon's feedback, at most
  ``retries`` times (and never more than the task's ``guardrail_max_retries``); after that (or
  for a blocklisted agent, which gets no retry) the output is *replaced* by :func:`~ostracon.
  adapters.governor.notice` (why, and the decision id), so the next tasks' context and the
  crew's final output never contain the withheld text; only the sender reads the feedback.
  Replacing, not aborting: a ``HookAborted`` would end the whole kickoff.
- on a tool call or delegation: the call is refused (the tool or coworker never runs) and the
  caller reads the notice and the feedback as the tool's result. ``tool_calls="block-only"``
  refuses only ``block`` verdicts (Red claims, blocklisted senders) and lets held/quarantined
  calls run: under policy strict, arguments such as ``year=2024`` are unverified claims.
- on a tool result or a coworker's answer: the result is replaced by the notice.
- a blocklisted agent (``ruling.blocklisted``): its outputs are replaced without retry, and its
  tool calls and delegations are refused, so it can neither send nor delegate.

Options: ``conversation`` (id prefix), ``show_tags``, ``retries`` (default 1), ``tool_calls``,
``on_ruling(envelope, ruling)`` (a callback for logs and tests).

Errors: CrewAI swallows exceptions raised by hooks (fail-open), so the adapter never raises
from a hook; a governor that raises is treated like one that timed out, per its ``fail`` mode
(closed: quarantine, the default; open: deliver tagged ``ungoverned``).

Limits:

- CrewAI offers no way to skip a task from a hook, so a blocklisted agent still runs (and
  spends model calls); only what it produces is replaced.
- The guardrail retry re-runs the agent with CrewAI's "previous attempt failed validation"
  prompt as its only context (CrewAI's behaviour): the upstream task outputs are not repeated.
  The retry attaches a guardrail to the task for the duration of the step.
- With crew ``memory`` enabled, CrewAI stores an agent's output before ``post_step`` runs, so a
  withheld output may still reach the memory store; keep memory off for governed crews.
- Streaming output (``stream=True``) shows tokens before the task output is ruled.
- Hooks are process-wide: two adapters installed at once would both rule every message.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from crewai.hooks.dispatch import InterceptionPoint, register, unregister
from crewai.tasks.task_output import TaskOutput

from ostracon.adapters.governor import Governor, Ruling, notice
from ostracon.decision import Verdict, decision_id
from ostracon.envelope import Envelope, Kind

__all__ = ["DELEGATION_TOOLS", "CrewAIAdapter", "governed", "install"]

# CrewAI's delegation tools, as the hooks see them (sanitized tool names).
DELEGATION_TOOLS = frozenset({"delegate_work_to_coworker", "ask_question_to_coworker"})

_MAX_PARENTS = 32  # upstream outputs named as parents of one message (bounds per-message work)

RulingCallback = Callable[[Envelope, Ruling], None]


@dataclass(slots=True)
class _Call:
    """A tool call between its before and after hooks."""

    args: dict[str, Any]  # kept so its id() cannot be reused while the call is pending
    msg_id: str
    ruling: Ruling
    refused: bool
    coworker: str | None  # set for delegations
    coworker_agent: Any = None


@dataclass(slots=True)
class _Step:
    """One task execution between ``pre_step`` and ``post_step``."""

    task: Any
    parents: list[str]
    attempts: int = 0
    ruled: tuple[str, str] | None = None  # (output text the guardrail settled on, message id)
    guard: Callable[[TaskOutput], tuple[bool, Any]] | None = None


@dataclass(slots=True)
class _Run:
    """Per-kickoff state: the conversation and the message ids that later ones point to."""

    conversation: str
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    outputs: list[str] = field(default_factory=list)  # task output ids, in order
    out_ids: dict[int, str] = field(default_factory=dict)  # id(task) -> its output's id
    read: dict[str, list[str]] = field(default_factory=dict)  # role -> results it read
    steps: dict[int, _Step] = field(default_factory=dict)  # id(task) -> running step
    calls: dict[int, _Call] = field(default_factory=dict)  # id(tool args) -> pending call
    meta: dict[int, dict[str, Any]] = field(default_factory=dict)  # id(agent) -> envelope meta

    def next_id(self) -> str:
        return f"m{next(self.seq)}"


class CrewAIAdapter:
    """Process-wide CrewAI hooks that rule every inter-agent message through a Governor."""

    def __init__(
        self,
        governor: Governor,
        *,
        conversation: str | None = None,
        show_tags: bool = False,
        retries: int = 1,
        tool_calls: Literal["enforce", "block-only"] = "enforce",
        on_ruling: RulingCallback | None = None,
    ) -> None:
        """``conversation``: prefix of the conversation ids (default ``crewai-<crew id>``);
        each kickoff is ``<prefix>:<n>``. ``retries``: feedback retries of a withheld task
        output (0 disables the guardrail retry). ``on_ruling``: called with every envelope and
        its ruling (for logs, tests, the example)."""
        self.governor = governor
        self.prefix = conversation
        self.show_tags = show_tags
        self.retries = max(0, retries)
        self.tool_calls = tool_calls
        self.on_ruling = on_ruling
        self.conversations: collections.deque[str] = collections.deque(maxlen=1000)  # recent
        self._runs: dict[str, _Run] = {}
        self._kickoffs: dict[str, int] = {}
        self._lock = threading.Lock()  # tasks with async_execution run on threads
        self._hooks: list[tuple[InterceptionPoint, Callable[[Any], Any]]] = []

    # ------------------------------------------------------------------ wiring

    def install(self) -> CrewAIAdapter:
        """Register the hooks (idempotent)."""
        if self._hooks:
            return self
        self._hooks = [
            (InterceptionPoint.EXECUTION_START, self._on_start),
            (InterceptionPoint.EXECUTION_END, self._on_end),
            (InterceptionPoint.PRE_STEP, self._on_pre_step),
            (InterceptionPoint.POST_STEP, self._on_post_step),
            (InterceptionPoint.PRE_TOOL_CALL, self._on_pre_tool),
            (InterceptionPoint.POST_TOOL_CALL, self._on_post_tool),
        ]
        for point, hook in self._hooks:
            register(point, hook)
        return self

    def uninstall(self) -> None:
        """Remove the hooks and any guardrail still attached to a running task."""
        for point, hook in self._hooks:
            unregister(point, hook)
        self._hooks = []
        with self._lock:
            runs, self._runs = list(self._runs.values()), {}
        for run in runs:
            for step in run.steps.values():
                guard, step.guard = step.guard, None  # a detached guard passes outputs through
                with contextlib.suppress(AttributeError, ValueError):
                    step.task._guardrails.remove(guard)

    def __enter__(self) -> CrewAIAdapter:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # ------------------------------------------------------------------ runs

    def _run(self, crew: Any, new: bool = False) -> _Run:
        key = str(getattr(crew, "id", "")) if crew is not None else "-"
        with self._lock:
            run = None if new else self._runs.get(key)
            if run is None:
                if key not in self._kickoffs and crew is not None:
                    with contextlib.suppress(TypeError):  # forget the count with the crew
                        weakref.finalize(crew, self._kickoffs.pop, key, None)
                n = self._kickoffs[key] = self._kickoffs.get(key, 0) + 1
                prefix = self.prefix or (f"crewai-{key}" if crew is not None else "crewai")
                run = self._runs[key] = _Run(f"{prefix}:{n}")
                self.conversations.append(run.conversation)
            return run

    @staticmethod
    def _crew(ctx: Any) -> Any:
        # Step contexts carry no crew; the agent does (delegated coworkers included).
        return getattr(ctx, "crew", None) or getattr(getattr(ctx, "agent", None), "crew", None)

    def _on_start(self, ctx: Any) -> None:
        if ctx.crew is not None:  # flows start and end too; their crews kick off on their own
            self._run(ctx.crew, new=True)

    def _on_end(self, ctx: Any) -> None:
        if ctx.crew is not None:
            with self._lock:
                self._runs.pop(str(ctx.crew.id), None)

    # ------------------------------------------------------------------ ruling

    @staticmethod
    def _envelope_meta(run: _Run, agent: Any) -> dict[str, Any]:
        """Per-agent meta, built once a run: the model (correlated failures) and hub role."""
        meta = run.meta.get(id(agent))
        if meta is None:
            meta = {"framework": "crewai"}
            model = getattr(getattr(agent, "llm", None), "model", None)
            if isinstance(model, str) and model:
                meta["model_family"] = model
            crew = getattr(agent, "crew", None)
            if crew is not None and getattr(crew, "manager_agent", None) is agent:
                meta["role"] = "manager"
            run.meta[id(agent)] = meta
        return meta

    def _rule(
        self,
        run: _Run,
        sender: str,
        kind: Kind,
        content: str,
        recipients: list[str],
        parents: list[str],
        meta: dict[str, Any] | None = None,
    ) -> tuple[str, Ruling]:
        msg_id = run.next_id()
        env = Envelope(
            id=msg_id,
            conversation=run.conversation,
            sender=sender or "unknown-agent",
            kind=kind,
            content=content,
            recipients=recipients,
            parents=parents[-_MAX_PARENTS:],
            meta=meta or {},
        )
        try:
            ruling = self.governor.rule_sync(env)
        except Exception as exc:  # a hook must not raise: CrewAI would fail open
            ruling = self._failed(env, exc)
        if self.on_ruling is not None:
            self.on_ruling(env, ruling)
        return msg_id, ruling

    def _failed(self, env: Envelope, exc: Exception) -> Ruling:
        did = decision_id(env.conversation, env.id)
        why = f"governor error: {exc!r}"
        if getattr(self.governor, "fail", "closed") == "open":
            tags = {"ungoverned": "1"}
            return Ruling(Verdict.DELIVER_TAGGED, did, f"{why} (fail-open)", tags=tags)
        return Ruling(Verdict.QUARANTINE, did, f"{why} (fail-closed)")

    def _tagged(self, text: str, ruling: Ruling) -> str:
        if not (self.show_tags and ruling.tags):
            return text
        tags = "; ".join(f"{k}: {v}" for k, v in sorted(ruling.tags.items()))
        return f"{text}\n[ostracon: {tags}]"

    @staticmethod
    def _withheld(ruling: Ruling, sender: str, to_sender: bool = False) -> str:
        text = notice(ruling, sender)
        if to_sender and ruling.feedback:  # the sender reads why, and what to do
            text = f"{text}\n{ruling.feedback}"
        return text

    # ------------------------------------------------------------------ steps (tasks)

    def _on_pre_step(self, ctx: Any) -> None:
        task = ctx.task
        if task is None or getattr(ctx, "kind", "task") != "task":
            return
        run = self._run(self._crew(ctx))
        upstream = getattr(task, "context", None)
        if isinstance(upstream, list):
            parents = [run.out_ids[id(t)] for t in upstream if id(t) in run.out_ids]
        else:  # NOT_SPECIFIED: CrewAI passes every earlier output; None/empty: none
            parents = list(run.outputs) if upstream else []
        step = _Step(task, parents)
        run.steps[id(task)] = step
        guardrails = getattr(task, "_guardrails", None)
        if isinstance(guardrails, list):  # a step that raised never reached post_step
            guardrails[:] = [g for g in guardrails if not getattr(g, "_ostracon", False)]
        if self.retries and isinstance(guardrails, list):
            # CrewAI's own retry-with-feedback: a task guardrail returning (False, why) makes
            # the agent run the task again with ``why``. Attached for this step only.
            agent = ctx.agent

            def guard(output: TaskOutput) -> tuple[bool, Any]:
                return self._guard(run, step, task, agent, output)

            guard._ostracon = True  # type: ignore[attr-defined]
            step.guard = guard
            guardrails.append(guard)

    def _guard(
        self, run: _Run, step: _Step, task: Any, agent: Any, output: TaskOutput
    ) -> tuple[bool, Any]:
        if step.guard is None:  # uninstalled mid-step
            return True, output.raw
        try:
            role = getattr(agent, "role", None) or output.agent
            msg_id, ruling = self._rule_output(run, step, agent, role, output)
            if ruling.delivers:
                text = self._tagged(output.raw, ruling)
                step.ruled = (text, msg_id)
                return True, text  # a string: CrewAI re-exports pydantic/json from it
            cap = min(self.retries, int(getattr(task, "guardrail_max_retries", 0)))
            if not ruling.blocklisted and step.attempts < cap:
                step.attempts += 1
                return False, self._withheld(ruling, role, to_sender=True)
            replaced = self._replace(output, notice(ruling, role))
            step.ruled = (replaced.raw, msg_id)
            return True, replaced  # a TaskOutput: no conversion of the notice is attempted
        except Exception as exc:  # a guardrail that raises ends the kickoff
            return True, self._replace(output, f"[ostracon] adapter error: {exc!r}")

    def _rule_output(
        self, run: _Run, step: _Step, agent: Any, role: str, output: TaskOutput
    ) -> tuple[str, Ruling]:
        parents = step.parents + run.read.pop(role, [])
        step.parents = parents  # a retry builds on the same inputs
        meta = self._envelope_meta(run, agent)
        return self._rule(run, role, Kind.CHAT, output.raw, [], parents, meta)

    @staticmethod
    def _replace(output: TaskOutput, text: str) -> TaskOutput:
        # The agent's own messages would carry the withheld text: drop them.
        return output.model_copy(
            update={"raw": text, "pydantic": None, "json_dict": None, "messages": []}
        )

    def _on_post_step(self, ctx: Any) -> TaskOutput | None:
        task, output = ctx.task, ctx.payload
        if task is None or not isinstance(output, TaskOutput):
            return None
        run = self._run(self._crew(ctx))
        step = run.steps.pop(id(task), None) or _Step(task, [])
        guard, step.guard = step.guard, None
        guardrails = getattr(task, "_guardrails", None)
        if guard is not None and isinstance(guardrails, list) and guard in guardrails:
            guardrails.remove(guard)
        replaced: TaskOutput | None = None
        if step.ruled is not None and step.ruled[0] == output.raw:
            msg_id = step.ruled[1]  # the guardrail already ruled exactly this text
        else:  # no guardrail, or another one changed the output after ours
            try:
                role = getattr(ctx.agent, "role", None) or output.agent
                msg_id, ruling = self._rule_output(run, step, ctx.agent, role, output)
                if ruling.delivers:
                    text = self._tagged(output.raw, ruling)
                    if text != output.raw:
                        replaced = output.model_copy(update={"raw": text})
                else:
                    replaced = self._replace(output, notice(ruling, role))
            except Exception as exc:
                msg_id = run.next_id()
                replaced = self._replace(output, f"[ostracon] adapter error: {exc!r}")
        run.out_ids[id(task)] = msg_id
        run.outputs.append(msg_id)
        return replaced

    # ------------------------------------------------------------------ tools and delegation

    def _on_pre_tool(self, ctx: Any) -> bool | None:
        try:
            run = self._run(self._crew(ctx))
            role = getattr(ctx.agent, "role", None) or "unknown-agent"
            name = ctx.tool_name
            args = ctx.tool_input if isinstance(ctx.tool_input, dict) else {}
            coworker: str | None = None
            coworker_agent: Any = None
            parents = run.read.get(role, [])[-_MAX_PARENTS:]
            meta = self._envelope_meta(run, ctx.agent)
            if name in DELEGATION_TOOLS:
                coworker, coworker_agent = self._coworker(ctx, str(args.get("coworker") or ""))
                asked = args.get("task") or args.get("question") or ""
                content = f"{asked}\n\n{args.get('context') or ''}".strip()
                msg_id, ruling = self._rule(
                    run, role, Kind.CHAT, content, [coworker], parents, meta
                )
            else:
                call = ", ".join(f"{k}={v!r}" for k, v in args.items())
                msg_id, ruling = self._rule(
                    run, role, Kind.TOOL_CALL, f"{name}({call})", [f"tool:{name}"], parents, meta
                )
            # A delegation is a message to another agent: every withheld verdict refuses it.
            refused = not ruling.delivers and (
                coworker is not None
                or self.tool_calls == "enforce"
                or ruling.verdict is Verdict.BLOCK
            )
            run.calls[id(ctx.tool_input)] = _Call(
                ctx.tool_input, msg_id, ruling, refused, coworker, coworker_agent
            )
            return False if refused else None  # False: CrewAI skips the call
        except Exception:  # never raise from a hook; refuse instead (fail closed)
            return False

    def _on_post_tool(self, ctx: Any) -> str | None:
        try:
            run = self._run(self._crew(ctx))
            role = getattr(ctx.agent, "role", None) or "unknown-agent"
            name = ctx.tool_name
            call = run.calls.pop(id(ctx.tool_input), None)
            if call is not None and call.args is not ctx.tool_input:
                call = None
            if call is not None and call.refused:
                return self._withheld(call.ruling, role, to_sender=True)
            result = "" if ctx.tool_result is None else str(ctx.tool_result)
            parents = [call.msg_id] if call is not None else []
            if name in DELEGATION_TOOLS:
                # The coworker's answer is an agent's message, not a grounding tool result.
                sender = (call.coworker if call else None) or "unknown-coworker"
                parents += run.read.pop(sender, [])  # the tool results it worked from
                meta = self._envelope_meta(run, call.coworker_agent) if call else None
                msg_id, ruling = self._rule(run, sender, Kind.CHAT, result, [role], parents, meta)
            else:
                sender = f"tool:{name}"
                msg_id, ruling = self._rule(run, sender, Kind.TOOL_RESULT, result, [role], parents)
            run.read.setdefault(role, []).append(msg_id)
            if not ruling.delivers:
                return notice(ruling, sender)
            text = self._tagged(result, ruling)
            return text if text != result else None
        except Exception as exc:
            return f"[ostracon] adapter error, result withheld: {exc!r}"

    @staticmethod
    def _coworker(ctx: Any, asked: str) -> tuple[str, Any]:
        """The coworker's role as the crew spells it (CrewAI matches names loosely), and it."""
        want = " ".join(asked.split()).replace('"', "").casefold()
        tool = getattr(ctx, "tool", None)
        agents = getattr(tool, "agents", None) or getattr(
            getattr(tool, "_original_tool", None), "agents", None
        )
        if not agents:
            agents = getattr(CrewAIAdapter._crew(ctx), "agents", None) or []
        for agent in agents:
            role = getattr(agent, "role", "")
            if " ".join(role.split()).replace('"', "").casefold() == want:
                return str(role), agent
        return asked or "unknown-coworker", None


def install(
    governor: Governor,
    *,
    conversation: str | None = None,
    show_tags: bool = False,
    retries: int = 1,
    tool_calls: Literal["enforce", "block-only"] = "enforce",
    on_ruling: RulingCallback | None = None,
) -> CrewAIAdapter:
    """Govern every crew kicked off from now on; ``.uninstall()`` the returned handle."""
    return CrewAIAdapter(
        governor,
        conversation=conversation,
        show_tags=show_tags,
        retries=retries,
        tool_calls=tool_calls,
        on_ruling=on_ruling,
    ).install()


@contextmanager
def governed(
    governor: Governor,
    *,
    conversation: str | None = None,
    show_tags: bool = False,
    retries: int = 1,
    tool_calls: Literal["enforce", "block-only"] = "enforce",
    on_ruling: RulingCallback | None = None,
) -> Iterator[CrewAIAdapter]:
    """``with governed(governor): crew.kickoff()``: the hooks live for the block only."""
    adapter = install(
        governor,
        conversation=conversation,
        show_tags=show_tags,
        retries=retries,
        tool_calls=tool_calls,
        on_ruling=on_ruling,
    )
    try:
        yield adapter
    finally:
        adapter.uninstall()
