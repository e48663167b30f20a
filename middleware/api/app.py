"""The admin HTTP API (FastAPI, OpenAPI at /openapi.json) and the review UI it serves.

Routes under ``/api`` need ``Authorization: Bearer <api.token>``; ``/health``, ``/ready``, the
OpenAPI document and the UI's static files do not (the page holds no data: it asks for the
token and calls the API with it). Every human decision names who made it: the token's user
(``api.user``) or an ``X-Ostracon-User`` header, and why (a required ``reason``).
"""

import re
import secrets
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, field_validator

from .. import __version__
from . import views
from .backend import Backend, Unavailable
from .service import AdminService, Conflict, NotFound

_USER = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
Limit = Annotated[int, Query(ge=1, le=10_000, description="Most items returned.")]


class Reason(BaseModel):
    """Why a human made this decision (kept in the audit log)."""

    reason: str = Field(min_length=1, max_length=1000)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("reason must not be blank")
        return value.strip()


class BlockRequest(Reason):
    agent: str = Field(min_length=1, max_length=256, description="The agent's sender name.")

    @field_validator("agent")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():  # kept as sent otherwise: it must equal the sender exactly
            raise ValueError("agent must not be blank")
        return value


class Status(BaseModel):
    status: str
    version: str = __version__


class HeldList(BaseModel):
    items: list[dict[str, Any]]
    total: int = Field(description="Unresolved held records matching the filter.")
    dropped: int = Field(description="Held records pushed out of the index (api.max_held).")


class BlockEntry(BaseModel):
    agent: str
    reason: str


def create_app(backend: Backend, token: str | None, user: str = "admin") -> FastAPI:
    """The ASGI app over ``backend``; ``token`` None serves ``/api`` without auth."""
    service = AdminService(backend)
    bearer = HTTPBearer(auto_error=False, description="api.token from the sidecar config")

    def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), token.encode()
        ):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def who(
        x_ostracon_user: Annotated[
            str | None,
            Header(description="Who is acting (audited); default: the token's api.user."),
        ] = None,
    ) -> str:
        if x_ostracon_user is None:
            return user
        if not _USER.fullmatch(x_ostracon_user):
            raise HTTPException(400, "X-Ostracon-User: 1-64 of A-Z a-z 0-9 . _ @ + -")
        return x_ostracon_user

    Who = Annotated[str, Depends(who)]
    app = FastAPI(
        title="ostracon admin API",
        version=__version__,
        description="Review queue, blocklist, accusations, agreement and genealogy of the "
        "ostracon sidecar. Human decisions are audited on the state topic.",
        docs_url=None,  # Swagger UI loads from a CDN; the review UI is at /ui/
        redoc_url=None,
    )

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 409)

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 503)

    @app.get("/health", tags=["service"])
    async def health() -> Status:
        """The process serves HTTP (no auth)."""
        return Status(status="ok")

    @app.get("/ready", tags=["service"], responses={503: {"model": Status}})
    async def ready() -> Any:
        """The sidecar is connected and the review queue has read the quarantine topic."""
        if backend.ready():
            return Status(status="ready")
        return JSONResponse(Status(status="starting").model_dump(), 503)

    api = APIRouter(
        prefix="/api",
        dependencies=[Depends(authorize)],
        responses={401: {"description": "Missing or wrong bearer token"}},
    )
    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "Not found"}}
    writes: dict[int | str, dict[str, Any]] = {
        400: {"description": "Bad X-Ostracon-User"},
        503: {"description": "The bus is unreachable"},
    }

    @api.get("/quarantine", tags=["quarantine"])
    async def quarantine_list(conversation: str | None = None, limit: Limit = 500) -> HeldList:
        """Held records not yet released or denied, oldest first."""
        return HeldList(**service.held(conversation, limit))

    @api.get("/quarantine/{decision_id}", tags=["quarantine"], responses=not_found)
    async def quarantine_show(decision_id: str) -> dict[str, Any]:
        """One held record: who sent it, what it says (preview), why it was held."""
        return service.show(decision_id)

    @api.post(
        "/quarantine/{decision_id}/release",
        tags=["quarantine"],
        responses={**not_found, **writes, 409: {"description": "Already resolved"}},
    )
    async def quarantine_release(decision_id: str, body: Reason, by: Who) -> dict[str, Any]:
        """Deliver the held record to its recipients (``ostracon-released-by``) and record
        the decision; returns the QuarantineResolved event."""
        return await service.resolve(decision_id, "release", by, body.reason)

    @api.post(
        "/quarantine/{decision_id}/deny",
        tags=["quarantine"],
        responses={**not_found, **writes, 409: {"description": "Already resolved"}},
    )
    async def quarantine_deny(decision_id: str, body: Reason, by: Who) -> dict[str, Any]:
        """Keep the record from its recipients for good; returns the event."""
        return await service.resolve(decision_id, "deny", by, body.reason)

    @api.get("/blocklist", tags=["blocklist"])
    async def blocklist() -> list[BlockEntry]:
        """Blocklisted agents and why."""
        return [BlockEntry(**e) for e in service.blocklist()]

    @api.post("/blocklist", tags=["blocklist"], responses=writes)
    async def block(body: BlockRequest, by: Who) -> dict[str, Any]:
        """Put an agent on the blocklist (every instance); returns the AgentBlocked event."""
        return await service.block(body.agent, by, body.reason)

    @api.delete("/blocklist/{agent:path}", tags=["blocklist"], responses={**not_found, **writes})
    async def unblock(agent: str, body: Reason, by: Who) -> dict[str, Any]:
        """Take an agent off the blocklist; returns the AgentUnblocked event."""
        return await service.unblock(agent, by, body.reason)

    @api.get("/accusations", tags=["byzantine"], responses=writes)
    async def accusations(
        conversation: str | None = None, agent: str | None = None, limit: Limit = 500
    ) -> list[dict[str, Any]]:
        """Accusations on the state topic, newest first (filter by conversation or agent)."""
        return await service.accusations(conversation, agent, limit)

    @api.get("/audit", tags=["audit"], responses=writes)
    async def audit(limit: Limit = 500) -> list[dict[str, Any]]:
        """Human decisions (who, when, what, why) from the state topic, newest first."""
        return await service.audit(limit)

    @api.get("/conversations", tags=["genealogy"])
    async def conversations(limit: Limit = 200) -> list[dict[str, Any]]:
        """Conversations, most recently active first."""
        return views.conversations(backend.core.state, limit)

    @api.get("/agreement", tags=["genealogy"], responses=not_found)
    async def agreement(conversation: str) -> dict[str, Any]:
        """Per claim key: which agents hold which value, the agreement ratio; and R."""
        found = views.agreement(backend.core.state, conversation)
        if found is None:
            raise NotFound(f"no genealogy for conversation {conversation!r}")
        return found

    @api.get("/genealogy", tags=["genealogy"], responses=not_found)
    async def genealogy(
        conversation: str,
        around: Annotated[
            str | None,
            Query(
                description="A message id, m:<message id> or c:<message id>#<n>; "
                "omitted: the newest messages."
            ),
        ] = None,
        depth: Annotated[int, Query(ge=0, le=50)] = 3,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> dict[str, Any]:
        """A bounded genealogy subgraph: nodes (messages, claims with Green/Yellow/Red
        labels and origins) and edges (asserts, derives, answers, contradicts)."""
        lin = backend.core.state.genealogy.lineage(conversation)
        if lin is None:
            raise NotFound(f"no genealogy for conversation {conversation!r}")
        cap = min(limit or backend.config.api.max_graph_nodes, backend.config.api.max_graph_nodes)
        if around is None:
            graph = views.recent_graph(lin, cap)
        else:
            found = views.graph_around(lin, views.resolve_node(lin, around), depth, cap)
            if found is None:
                raise NotFound(f"no node {around!r} in conversation {conversation!r}")
            graph = found
        return {"conversation": conversation, **graph}

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    static = resources.files("ostracon.api") / "static"
    app.mount("/ui", StaticFiles(directory=str(static), html=True), name="ui")
    return app
