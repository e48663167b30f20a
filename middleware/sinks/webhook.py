"""A generic webhook whose body Slack's incoming webhooks accept: ``{"text", "blocks"}``.

``text`` is the one-line summary (Slack's notification and fallback); ``blocks`` lay out the
kind, severity, conversation, agents, claims, rules and ids. With ``body: full`` the alert
itself (docs/protocol.md's JSON shape, plus ``count``) is added under ``"alert"`` for
receivers that are programs. One POST per notification.
"""

from __future__ import annotations

from typing import Any

from ..config import WebhookSinkConfig
from .grouping import Notification
from .http import HttpSink

_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


class WebhookSink(HttpSink):
    def __init__(self, cfg: WebhookSinkConfig) -> None:
        super().__init__("webhook", cfg, cfg.url, cfg.headers)
        self.full = cfg.body == "full"

    async def send(self, batch: list[Notification]) -> None:
        while batch:  # remove each as it is acknowledged: a retry resends only the rest
            await self.post(self.body(batch[0]))
            batch.pop(0)

    def body(self, n: Notification) -> dict[str, Any]:
        return slack_body(n, self.full)


def slack_body(n: Notification, full: bool = False) -> dict[str, Any]:
    a = n.alert
    fields = [
        ("Conversation", a.conversation),
        ("Agents", ", ".join(a.agents)),
        ("Rules", ", ".join(a.rules)),
        ("Claims", "; ".join(a.claims)),
        ("Count", str(n.count) if n.repeat else ""),
    ]
    summary = f"{_EMOJI[a.severity]} {a.summary}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"ostracon: {a.kind} ({a.severity})"[:150]},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": summary[:3000]},
        },
    ]
    shown = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in fields if v]
    if shown:
        blocks.append({"type": "section", "fields": shown})
    ids = (
        f"alert {a.id} · decision {a.decision_id or '-'} · evidence {', '.join(a.evidence) or '-'}"
    )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ids[:3000]}]})
    body: dict[str, Any] = {"text": n.title()[:3000], "blocks": blocks}
    if full:
        body["alert"] = n.as_dict()
    return body
