from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from server import keys
from server.api.deps import HubDep, Limit, Offset, UserDep, errors
from server.db.models import ConstraintProfileRow
from server.errors import conflict
from shared.api import ConstraintProfile, ConstraintProfileCreate, Page
from shared.protocol import now_ms

router = APIRouter(prefix="/constraints", tags=["constraints"], responses=errors(400, 401, 403, 409, 422))


def _record(row: ConstraintProfileRow) -> ConstraintProfile:
    return ConstraintProfile(
        id=row.id,
        name=row.name,
        description=row.description,
        time_limit_ms=row.time_limit_ms,
        token_budget=row.token_budget,
        is_default=row.is_default,
        created_at=row.created_at,
    )


@router.get("", response_model=Page[ConstraintProfile])
async def list_profiles(
    hub: HubDep, _: UserDep, limit: Limit = 100, offset: Offset = 0
) -> Page[ConstraintProfile]:
    async with hub.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(ConstraintProfileRow))).scalar_one()
        rows = (
            await session.execute(
                select(ConstraintProfileRow).order_by(ConstraintProfileRow.name).limit(limit).offset(offset)
            )
        ).scalars()
        return Page[ConstraintProfile](
            items=[_record(r) for r in rows], total=total, limit=limit, offset=offset
        )


@router.post("", response_model=ConstraintProfile, status_code=201)
async def create_profile(body: ConstraintProfileCreate, hub: HubDep, user: UserDep) -> ConstraintProfile:
    row = ConstraintProfileRow(
        id=str(uuid.uuid4()),
        name=body.name,
        description=body.description,
        time_limit_ms=body.time_limit_ms,
        token_budget=body.token_budget,
        is_default=body.is_default,
        created_at=now_ms(),
    )
    try:
        async with hub.sessions() as session, session.begin():
            if body.is_default:
                # One default at a time: it fills the limits a command does not give.
                await session.execute(update(ConstraintProfileRow).values(is_default=False))
            session.add(row)
    except IntegrityError as exc:
        raise conflict(f"a constraint profile named {body.name!r} exists") from exc
    await hub.redis.incr(keys.PROFILES_VERSION)
    await hub.audit(user.subject, "constraints.created", profile=row.id, name=row.name)
    return _record(row)
