"""The agent directory: durable records in the database, live state in Redis (the one source of
truth for status, so two hubs never disagree and a status never flickers between them)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import keys
from server.db.models import AgentRow
from server.redis_text import as_text
from shared.api import Agent, HealthMetrics
from shared.enums import AgentActivity, AgentStatus, AgentType
from shared.protocol import now_ms


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class AgentDirectory:
    def __init__(self, redis: aioredis.Redis, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.redis = redis
        self.sessions = sessions

    async def row(self, agent_id: str) -> AgentRow | None:
        async with self.sessions() as session:
            return await session.get(AgentRow, agent_id)

    async def by_name(self, name: str) -> AgentRow | None:
        async with self.sessions() as session:
            return (await session.execute(select(AgentRow).where(AgentRow.name == name))).scalar_one_or_none()

    async def ensure(self, name: str, agent_type: AgentType = AgentType.SHELL) -> AgentRow:
        return await ensure_agent(self.sessions, name, agent_type)

    async def all_rows(self, limit: int | None = None, offset: int = 0) -> list[AgentRow]:
        """The agents' records by name (a page of them with ``limit`` and ``offset``)."""
        query = select(AgentRow).order_by(AgentRow.name, AgentRow.id).offset(offset).limit(limit)
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def describe(self, rows: list[AgentRow]) -> list[Agent]:
        """The agents as the API shows them: records and live state, read in one round trip (this
        runs several times per command, for every status the TUIs are told of)."""
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.hgetall(keys.agent(row.id))
            pipe.scard(keys.agent_executions(row.id))
            pipe.sismember(keys.PAUSED_AGENTS, row.id)
            pipe.sismember(keys.STOPPED_AGENTS, row.id)
        values = await pipe.execute()
        return [
            build_agent(row, _decode(live), int(length), bool(paused), bool(stopped))
            for row, (live, length, paused, stopped) in zip(
                rows, (values[i : i + 4] for i in range(0, len(values), 4)), strict=True
            )
        ]

    async def get(self, agent_id: str) -> Agent | None:
        row = await self.row(agent_id)
        if row is None:
            return None
        return (await self.describe([row]))[0]

    async def list(self, limit: int | None = None, offset: int = 0) -> list[Agent]:
        return await self.describe(await self.all_rows(limit, offset))

    async def is_online(self, agent_id: str) -> bool:
        return await self.redis.zscore(keys.ONLINE_AGENTS, agent_id) is not None

    async def mark_online(self, row: AgentRow, hub_id: str, fields: dict[str, Any]) -> None:
        now = now_ms()
        mapping: dict[FieldT, EncodableT] = {
            "status": AgentStatus.ONLINE.value,
            "hub": hub_id,
            "connected_at": now,
            "last_seen": now,
            "name": row.name,
            **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in fields.items()},
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.agent(row.id), mapping=mapping)
        pipe.zadd(keys.ONLINE_AGENTS, {row.id: now})
        await pipe.execute()

    async def touch(self, agent_id: str, health: HealthMetrics | None = None) -> None:
        now = now_ms()
        pipe = self.redis.pipeline(transaction=True)
        mapping: dict[FieldT, EncodableT] = {"last_seen": now}
        if health is not None:
            mapping["health"] = health.model_dump_json(by_alias=True)
        pipe.hset(keys.agent(agent_id), mapping=mapping)
        pipe.zadd(keys.ONLINE_AGENTS, {agent_id: now}, xx=True)
        await pipe.execute()

    async def mark_offline(self, agent_id: str, hub_id: str) -> bool:
        """Mark OFFLINE unless another hub has taken the agent over since. True if marked."""
        current_hub = await self.redis.hget(keys.agent(agent_id), "hub")
        if current_hub is not None and as_text(current_hub) != hub_id:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.agent(agent_id),
            mapping={"status": AgentStatus.OFFLINE.value, "last_seen": now_ms(), "hub": ""},
        )
        pipe.zrem(keys.ONLINE_AGENTS, agent_id)
        await pipe.execute()
        return True

    async def set_current(self, agent_id: str, command_id: str | None) -> None:
        await self.redis.hset(keys.agent(agent_id), "current_command", command_id or "")

    async def add_usage(self, agent_id: str, response_ms: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(keys.agent(agent_id), "hub_commands", 1)
        pipe.hincrby(keys.agent(agent_id), "hub_response_ms_total", response_ms)
        await pipe.execute()


async def ensure_agent(
    sessions: async_sessionmaker[AsyncSession], name: str, agent_type: AgentType = AgentType.SHELL
) -> AgentRow:
    """The agent named ``name``, created on first use: the same name keeps its id."""
    async with sessions() as session:
        existing = (await session.execute(select(AgentRow).where(AgentRow.name == name))).scalar_one_or_none()
        if existing is not None:
            return existing
        row = AgentRow(
            id=str(uuid.uuid4()),
            name=name,
            agent_type=agent_type.value,
            status=AgentStatus.OFFLINE.value,
            created_at=now_ms(),
            capabilities={},
            health={},
        )
        session.add(row)
        await session.commit()
        return row


def build_agent(row: AgentRow, live: dict[str, str], queue_length: int, paused: bool, stopped: bool) -> Agent:
    status = AgentStatus(live.get("status") or AgentStatus.OFFLINE.value)
    current = live.get("current_command") or None
    if live.get("waiting_input"):
        activity = AgentActivity.WAITING_INPUT
    elif stopped:
        activity = AgentActivity.STOPPED
    elif paused:
        activity = AgentActivity.PAUSED
    elif current:
        activity = AgentActivity.PROCESSING
    elif queue_length:
        activity = AgentActivity.QUEUED
    else:
        activity = AgentActivity.IDLE
    health_raw = live.get("health")
    health = (
        HealthMetrics.model_validate_json(health_raw)
        if health_raw
        else HealthMetrics.model_validate(row.health or {})
    )
    last_seen = int(live["last_seen"]) if live.get("last_seen") else row.last_seen
    connected_at = (
        int(live["connected_at"]) if live.get("connected_at") and status is AgentStatus.ONLINE else None
    )
    capabilities = (
        json.loads(live["capabilities"]) if live.get("capabilities") else dict(row.capabilities or {})
    )
    return Agent(
        id=row.id,
        name=row.name,
        agent_type=AgentType(live.get("agent_type") or row.agent_type),
        status=status,
        activity=activity,
        host_machine=live.get("host_machine") or row.host_machine,
        version=live.get("version") or row.version,
        capabilities=capabilities,
        connected_at=connected_at,
        last_seen=last_seen,
        queue_length=max(0, queue_length - (1 if current else 0)),
        current_command_id=current,
        health=health,
    )
