"""A fake OpenAI-compatible chat completions server on loopback, for the LLM-judge tests.

No real LLM can run in the test environment, so this stands in for one: a real HTTP server
(``http.server`` in a thread) that answers ``POST /v1/chat/completions`` with whatever the
test's ``respond`` function returns, and records every request it got.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (HTTP status, body: a dict is sent as JSON, a str as text, seconds to wait before answering)
Response = tuple[int, dict[str, Any] | str, float]
Responder = Callable[[dict[str, Any]], Response]


def completion(content: str) -> dict[str, Any]:
    """A chat completion response whose one choice says ``content``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


def answer(verdict: str, correct_value: object = None, rationale: str = "checked") -> Response:
    """A 200 reply with the judge's JSON verdict."""
    body = {"verdict": verdict, "correct_value": correct_value, "rationale": rationale}
    return 200, completion(json.dumps(body)), 0.0


def claim_key(request: dict[str, Any]) -> str:
    """The claim key the judge asked about (from its prompt)."""
    m = re.search(r"^Claim key: (.*)$", request["body"]["messages"][-1]["content"], re.M)
    return m.group(1) if m else ""


class FakeOpenAI:
    """``with FakeOpenAI(respond) as llm:`` serves on ``llm.url`` (an ``/v1`` base URL)."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or (lambda _req: answer("unknown"))
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                request = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw) if raw else None,
                }
                fake.requests.append(request)
                if self.path != "/v1/chat/completions":
                    status, body, delay = 404, {"error": "not found"}, 0.0
                else:
                    status, body, delay = fake.respond(request)
                if delay:
                    time.sleep(delay)
                data = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
