from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from server.api.deps import HubDep, Limit, Offset, UserDep, errors
from server.db.models import AuditLogRow
from shared.api import AuditLog, Page
from shared.model import MAX_INT

router = APIRouter(prefix="/audit-logs", tags=["audit"], responses=errors(401, 403, 422))


@router.get("", response_model=Page[AuditLog])
async def list_audit_logs(
    hub: HubDep,
    _: UserDep,
    limit: Limit = 50,
    offset: Offset = 0,
    action: Annotated[str | None, Query(max_length=100, description="prefix, e.g. 'command.'")] = None,
    actor: Annotated[str | None, Query(max_length=320)] = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    command_id: Annotated[str | None, Query(alias="commandId")] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    until: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
) -> Page[AuditLog]:
    stmt = select(AuditLogRow)
    if action:
        stmt = stmt.where(AuditLogRow.action.startswith(action))
    if actor:
        stmt = stmt.where(AuditLogRow.actor == actor)
    if agent_id:
        stmt = stmt.where(AuditLogRow.agent_id == agent_id)
    if command_id:
        stmt = stmt.where(AuditLogRow.command_id == command_id)
    if since is not None:
        stmt = stmt.where(AuditLogRow.at >= since)
    if until is not None:
        stmt = stmt.where(AuditLogRow.at < until)
    async with hub.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (
            await session.execute(
                stmt.order_by(AuditLogRow.at.desc(), AuditLogRow.id.desc()).limit(limit).offset(offset)
            )
        ).scalars()
        items = [
            AuditLog(
                id=r.id,
                at=r.at,
                actor=r.actor,
                action=r.action,
                agent_id=r.agent_id,
                command_id=r.command_id,
                details=r.details or {},
            )
            for r in rows
        ]
    return Page[AuditLog](items=items, total=total, limit=limit, offset=offset)
