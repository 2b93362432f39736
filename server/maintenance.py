"""Scheduled work of the hub: audit retention. One hub at a time does it (a Redis lock)."""

from __future__ import annotations

import asyncio
import logging

import redis
from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError

from server import keys
from server.db.models import AuditLogRow
from server.hub import Hub
from shared.protocol import now_ms

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0
LOCK = keys.PREFIX + "maintenance-lock"


async def prune_audit(hub: Hub) -> int:
    cutoff = now_ms() - hub.settings.audit_retention_days * 24 * 3600 * 1000
    async with hub.sessions() as session, session.begin():
        result = await session.execute(delete(AuditLogRow).where(AuditLogRow.at < cutoff))
    removed = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if removed:
        log.info("pruned %d audit records older than %d days", removed, hub.settings.audit_retention_days)
    return removed


async def run_maintenance(hub: Hub) -> None:
    await asyncio.sleep(5)
    while True:
        try:
            if await hub.redis.set(LOCK, hub.hub_id, nx=True, ex=int(INTERVAL_S * 0.9)):
                await prune_audit(hub)
        except (redis.RedisError, SQLAlchemyError, OSError) as exc:
            log.warning("maintenance failed: %s", exc)
        await asyncio.sleep(INTERVAL_S)
