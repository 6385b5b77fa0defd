"""Each user's own conversations: listed, read, renamed and deleted by their owner only.

Another user's conversation id answers 404, exactly as an id that does not exist."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from appliance.access.auth import Principal
from appliance.api.errors import ApiError
from appliance.api.schemas import ERRORS
from appliance.api.security import require_principal
from appliance.api.state import AppState

router = APIRouter(tags=["Conversations"])
Who = Annotated[Principal, Depends(require_principal)]


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=120)


def _store(request: Request) -> Any:
    state: AppState = request.app.state.appliance
    return state.services.conversations


@router.get("/v1/conversations", responses=ERRORS)
def list_conversations(request: Request, principal: Who) -> dict[str, Any]:
    return {"conversations": [{"id": c.id, "title": c.title, "created_at": c.created_at, "updated_at": c.updated_at}
                              for c in _store(request).list(principal.name)]}


@router.get("/v1/conversations/{cid}", responses=ERRORS)
def get_conversation(cid: str, request: Request, principal: Who) -> dict[str, Any]:
    found = _store(request).get(principal.name, cid)
    if found is None:
        raise ApiError(404, f"no conversation {cid!r}")
    return {"id": found.id, "title": found.title, "created_at": found.created_at, "updated_at": found.updated_at,
            "turns": [t.__dict__ for t in found.turns]}


@router.patch("/v1/conversations/{cid}", responses=ERRORS)
def rename_conversation(cid: str, body: Rename, request: Request, principal: Who) -> dict[str, str]:
    if not _store(request).rename(principal.name, cid, body.title):
        raise ApiError(404, f"no conversation {cid!r}")
    return {"id": cid, "title": body.title}


@router.delete("/v1/conversations/{cid}", responses=ERRORS)
def delete_conversation(cid: str, request: Request, principal: Who) -> dict[str, Any]:
    if not _store(request).delete(principal.name, cid):
        raise ApiError(404, f"no conversation {cid!r}")
    return {"id": cid, "deleted": True}
