from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

from server import services
from server.api.deps import HubDep, Limit, Offset, OptionalLimit, UserDep, errors
from server.db.models import CommandRow, ExecutionRow, OutputLineRow, TraceRow
from server.errors import not_found
from shared.api import CancelRequest, Command, CommandCreate, InputAnswer, OutputLine, Page, TraceEventRecord
from shared.enums import CommandType, ExecutionStatus, StreamType, TraceType
from shared.model import MAX_INT

router = APIRouter(prefix="/commands", tags=["commands"], responses=errors(400, 401, 403, 404, 409, 422))


@router.post("", response_model=Command, status_code=201)
async def create_command(body: CommandCreate, hub: HubDep, user: UserDep) -> Command:
    return await services.create_command(hub, user.subject, body)


@router.get("", response_model=Page[Command])
async def list_commands(
    hub: HubDep,
    _: UserDep,
    limit: Limit = 50,
    offset: Offset = 0,
    q: Annotated[str | None, Query(max_length=500, description="text in the command")] = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    status: ExecutionStatus | None = None,
    type: CommandType | None = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_INT, description="created at or after (ms)")] = None,
    until: Annotated[int | None, Query(ge=0, le=MAX_INT, description="created before (ms)")] = None,
) -> Page[Command]:
    stmt = select(CommandRow)
    if q:
        stmt = stmt.where(CommandRow.content.ilike(f"%{q}%"))
    if agent_id or status:
        sub = select(ExecutionRow.command_id)
        if agent_id:
            sub = sub.where(ExecutionRow.agent_id == agent_id)
        if status:
            sub = sub.where(ExecutionRow.status == status.value)
        stmt = stmt.where(CommandRow.id.in_(sub))
    if type:
        stmt = stmt.where(CommandRow.type == type.value)
    if since is not None:
        stmt = stmt.where(CommandRow.created_at >= since)
    if until is not None:
        stmt = stmt.where(CommandRow.created_at < until)
    async with hub.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (
            await session.execute(stmt.order_by(CommandRow.created_at.desc()).limit(limit).offset(offset))
        ).scalars()
        items = [await services.command_record(hub, session, row) for row in rows]
    return Page[Command](items=items, total=total, limit=limit, offset=offset)


@router.get("/{command_id}", response_model=Command)
async def get_command(command_id: str, hub: HubDep, _: UserDep) -> Command:
    return await services.get_command(hub, command_id)


@router.post("/{command_id}/cancel", response_model=Command)
async def cancel_command(
    command_id: str, hub: HubDep, user: UserDep, body: CancelRequest | None = None
) -> Command:
    body = body or CancelRequest()
    return await services.cancel_command(hub, user.subject, command_id, body.agent_id, body.reason)


@router.post("/{command_id}/input", status_code=204)
async def answer_input(command_id: str, body: InputAnswer, hub: HubDep, user: UserDep) -> Response:
    """Allow or deny what an agent waits for on this command (Claude's permission prompt)."""
    await services.answer_input(hub, user.subject, command_id, body)
    return Response(status_code=204)


@router.get("/{command_id}/output", response_model=Page[OutputLine])
async def get_output(
    command_id: str,
    hub: HubDep,
    _: UserDep,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    after: Annotated[
        int, Query(ge=-1, le=MAX_INT, description="return lines with a sequence above this")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    offset: Offset = 0,
) -> Page[OutputLine]:
    async with hub.sessions() as session:
        if await session.get(CommandRow, command_id) is None:
            raise not_found("command", command_id)
        stmt = select(OutputLineRow).where(
            OutputLineRow.command_id == command_id, OutputLineRow.sequence > after
        )
        if agent_id:
            stmt = stmt.where(OutputLineRow.agent_id == agent_id)
        total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (
            await session.execute(
                stmt.order_by(OutputLineRow.agent_id, OutputLineRow.sequence).limit(limit).offset(offset)
            )
        ).scalars()
        items = [
            OutputLine(
                command_id=r.command_id,
                agent_id=r.agent_id,
                sequence=r.sequence,
                stream_type=StreamType(r.stream_type),
                content=r.content,
                ansi_codes=r.ansi_codes,
                emitted_at=r.emitted_at,
            )
            for r in rows
        ]
    return Page[OutputLine](items=items, total=total, limit=limit, offset=offset)


@router.get("/{command_id}/traces", response_model=list[TraceEventRecord])
async def get_traces(
    command_id: str, hub: HubDep, _: UserDep, limit: OptionalLimit = None, offset: Offset = 0
) -> list[TraceEventRecord]:
    """The command's trace events in the order they came; ``limit`` and ``offset`` page them."""
    async with hub.sessions() as session:
        if await session.get(CommandRow, command_id) is None:
            raise not_found("command", command_id)
        query = select(TraceRow).where(TraceRow.command_id == command_id).order_by(TraceRow.id)
        rows = (await session.execute(query.offset(offset).limit(limit))).scalars()
        return [
            TraceEventRecord(
                command_id=r.command_id,
                agent_id=r.agent_id,
                trace_id=r.trace_id,
                parent_id=r.parent_id,
                type=TraceType(r.type),
                name=r.name,
                content=r.content,
                started_at=r.started_at,
                completed_at=r.completed_at,
                duration_ms=r.duration_ms,
                tokens_used=r.tokens_used,
                error=r.error,
            )
            for r in rows
        ]
