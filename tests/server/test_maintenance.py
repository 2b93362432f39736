"""Audit retention: the scheduled prune removes records older than the retention, keeps the rest."""

from __future__ import annotations

from pathlib import Path

from server.db.models import AuditLogRow
from server.hub import Hub
from server.maintenance import prune_audit
from shared.config import Settings
from shared.protocol import now_ms

DAY_MS = 24 * 3600 * 1000


async def test_prune_audit_respects_retention(tmp_path: Path) -> None:
    hub = Hub(Settings(data_dir=tmp_path, audit_retention_days=30))
    await hub.start()
    try:
        now = now_ms()
        async with hub.sessions() as session, session.begin():
            for age_days in (0, 29, 31, 400):
                session.add(
                    AuditLogRow(at=now - age_days * DAY_MS, actor="t", action=f"age.{age_days}", details={})
                )
        assert await prune_audit(hub) == 2
        async with hub.sessions() as session:
            from sqlalchemy import select

            left = sorted((await session.execute(select(AuditLogRow.action))).scalars())
        assert left == ["age.0", "age.29"]
        assert await prune_audit(hub) == 0
    finally:
        await hub.stop()
