from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from server.api.deps import HubDep, Limit, Offset, UserDep, errors
from server.db.models import PresetRow
from server.errors import conflict, not_found
from shared.api import ExecutionConstraints, Page, Preset, PresetCreate
from shared.enums import CommandType
from shared.presets import variables_of
from shared.protocol import now_ms

router = APIRouter(prefix="/presets", tags=["presets"], responses=errors(400, 401, 403, 404, 409, 422))


def _record(row: PresetRow) -> Preset:
    return Preset(
        id=row.id,
        name=row.name,
        description=row.description,
        type=CommandType(row.type),
        content=row.content,
        target_agents=list(row.target_agents),
        priority=row.priority,
        execution_constraints=ExecutionConstraints(
            time_limit_ms=row.time_limit_ms, token_budget=row.token_budget
        ),
        variables=variables_of(row.content),
        usage_count=row.usage_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _apply(row: PresetRow, body: PresetCreate) -> None:
    constraints = body.execution_constraints or ExecutionConstraints()
    row.name = body.name
    row.description = body.description
    row.type = body.type.value
    row.content = body.content
    row.target_agents = list(body.target_agents)
    row.priority = body.priority
    row.time_limit_ms = constraints.time_limit_ms
    row.token_budget = constraints.token_budget
    row.updated_at = now_ms()


@router.get("", response_model=Page[Preset])
async def list_presets(hub: HubDep, _: UserDep, limit: Limit = 100, offset: Offset = 0) -> Page[Preset]:
    async with hub.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(PresetRow))).scalar_one()
        rows = (
            await session.execute(select(PresetRow).order_by(PresetRow.name).limit(limit).offset(offset))
        ).scalars()
        return Page[Preset](items=[_record(r) for r in rows], total=total, limit=limit, offset=offset)


@router.post("", response_model=Preset, status_code=201)
async def create_preset(body: PresetCreate, hub: HubDep, user: UserDep) -> Preset:
    row = PresetRow(id=str(uuid.uuid4()), created_at=now_ms(), usage_count=0)
    _apply(row, body)
    try:
        async with hub.sessions() as session, session.begin():
            session.add(row)
    except IntegrityError as exc:
        raise conflict(f"a preset named {body.name!r} exists") from exc
    await hub.audit(user.subject, "preset.created", preset=row.id, name=row.name)
    return _record(row)


@router.get("/{preset_id}", response_model=Preset)
async def get_preset(preset_id: str, hub: HubDep, _: UserDep) -> Preset:
    async with hub.sessions() as session:
        row = await session.get(PresetRow, preset_id)
        if row is None:
            raise not_found("preset", preset_id)
        return _record(row)


@router.put("/{preset_id}", response_model=Preset)
async def update_preset(preset_id: str, body: PresetCreate, hub: HubDep, user: UserDep) -> Preset:
    try:
        async with hub.sessions() as session, session.begin():
            row = await session.get(PresetRow, preset_id)
            if row is None:
                raise not_found("preset", preset_id)
            _apply(row, body)
    except IntegrityError as exc:
        raise conflict(f"a preset named {body.name!r} exists") from exc
    await hub.audit(user.subject, "preset.updated", preset=preset_id)
    return _record(row)


@router.delete("/{preset_id}", status_code=204)
async def delete_preset(preset_id: str, hub: HubDep, user: UserDep) -> Response:
    async with hub.sessions() as session, session.begin():
        row = await session.get(PresetRow, preset_id)
        if row is None:
            raise not_found("preset", preset_id)
        await session.delete(row)
    await hub.audit(user.subject, "preset.deleted", preset=preset_id)
    return Response(status_code=204)
