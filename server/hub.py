"""The hub process's runtime: its connections to Redis and the database, the event publisher, the
store, the relay to TUI clients, the router to agent sockets, and the sweeper. The FastAPI lifespan
creates one Hub and closes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from server import keys
from server.agents import AgentDirectory
from server.db.models import AgentRow
from server.db.session import (
    make_engine,
    make_sessionmaker,
    make_thread_engine,
    make_thread_sessionmaker,
    upgrade_async,
)
from server.events import EventPublisher
from server.metrics import HubMetrics
from server.queue import executions
from server.redis_embedded import EmbeddedRedis, ensure_redis_url
from server.redis_text import as_text, as_texts, stream_entries
from server.store import Store
from server.worker import spawn_pool
from shared import protocol
from shared.api import AuditLog, ExecutionConstraints
from shared.config import Settings
from shared.protocol import AgentStatusMessage, AuditEvent, now_ms, stream_frame
from shared.sequences import HighestSequences

log = logging.getLogger(__name__)

Position = tuple[int, int]
T = TypeVar("T")
#: A supervising job beats every 2 s; this long without a beat means its worker is gone.
SUPERVISOR_STALE_MS = 10_000
#: How often the hub checks on the processes it started (embedded Redis, worker pool).
CHILD_CHECK_S = 1.0


async def _own_thread(call: Callable[[], T]) -> T:
    """``asyncio.to_thread`` on a thread of its own: the default executor's few threads may all be
    blocked on calls to a Redis that is gone, which is when the hub needs this to run."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = call()
        except Exception as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="hub-own-thread", daemon=True).start()
    return await done


def store_consumer_name(data_dir: Path) -> str:
    """The store's name in the consumer group, kept in the data dir: a hub that restarts (or is
    killed and started again) takes back, first thing, the events it had read and not yet written.
    A new name each start would leave them to be claimed after they sat idle for a minute."""
    path = data_dir / "store-consumer"
    try:
        name = path.read_text().strip()
        if name:
            return name
    except OSError:
        pass
    name = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    path.write_text(name + "\n")
    return name


#: A relayed event: its stream position, its frame for the TUIs, and its local number when this hub
#: handed it to its own TUIs before it reached the stream (``Hub.deliver_local``), else None.
RelayItem = tuple[Position, str, int | None]


def relay_items(response: Any, local_prefix: bytes = b"") -> list[RelayItem]:
    """The events of a raw XREAD reply on the event stream (RESP3: ``{stream: entries}``, RESP2:
    ``[[stream, entries]]``) as relay items. Written by the hubs and jobs through the protocol
    models, events are relayed as they are, with their position added. ``local_prefix``: this hub's
    local tags (``b"hub-id:"``)."""
    if not response:
        return []
    entries = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
    items: list[RelayItem] = []
    for entry_id, fields in entries:
        text_id = entry_id.decode()
        position = parse_position(text_id)
        # Fields as Redis sent them: [b"m", data] or [b"m", data, b"l", tag] (a trimmed entry has none).
        if isinstance(fields, dict):
            data, tag = fields.get(b"m"), fields.get(b"l")
        else:
            data = fields[1] if fields and fields[0] == b"m" else None
            tag = fields[3] if len(fields) >= 4 and fields[2] == b"l" else None
        if data is not None:
            local = None
            if tag is not None and local_prefix and tag.startswith(local_prefix):
                local = int(tag[len(local_prefix) :])
            items.append((position, stream_frame(data, text_id), local))
    return items


def parse_position(value: str | bytes) -> Position:
    text_value = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text_value.partition("-")
    return int(ms), int(seq or 0)


class StreamClient(Protocol):
    def deliver_many(self, items: list[RelayItem], local_relayed: int) -> None: ...

    def deliver_local(self, frame: str) -> None: ...

    def local_caught_up(self, local_relayed: int) -> None: ...


class AgentSink(Protocol):
    #: The agent's record, read when it connected (agents are never renamed; what changes is in Redis).
    row: AgentRow

    def forward(self, raw: str) -> None: ...

    async def close_stale(self) -> None: ...


#: Executions whose highest output sequence a hub remembers (the oldest are forgotten, and read
#: again from Redis if their output comes back).
OUTPUT_SEQUENCES_KEPT = 10_000

#: Redis connections per hub process: every agent socket may have a call in flight at once (redis-py's
#: default refused past 100).
REDIS_POOL_SIZE = 4096
#: Past REDIS_POOL_SIZE calls in flight, a call waits this long for a connection to come free. (The
#: pool refused at once before: with 10,000 agents connected, a busy hub's sockets failed with
#: "Too many connections".)
REDIS_POOL_WAIT_S = 30


def redis_clients(url: str) -> tuple[aioredis.Redis, redis.Redis]:
    # redis-py retries a failed call 10 times over several seconds by default: while Redis restarts
    # that held every hub loop (and /health) for ~7 s after it was back. A short retry fails fast;
    # the loops have their own retry schedules.
    opts: dict[str, Any] = {
        "health_check_interval": 30,
        "max_connections": REDIS_POOL_SIZE,
        "socket_connect_timeout": 2,
    }
    pool = aioredis.BlockingConnectionPool.from_url(
        url, timeout=REDIS_POOL_WAIT_S, retry=AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), 3), **opts
    )
    return (
        aioredis.Redis(connection_pool=pool),
        redis.Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 3), **opts),
    )


class Hub:
    def __init__(self, settings: Settings, *, embedded_workers: int = 0) -> None:
        self.settings = settings
        self.embedded_workers = embedded_workers
        self._pool: subprocess.Popen[bytes] | None = None
        # An id (shared/model.py): it goes into Redis keys and the event stream's local tags.
        host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:64] or "hub"
        self.hub_id = f"{host}-{uuid.uuid4().hex[:8]}"
        self.embedded_redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.redis: aioredis.Redis
        self.redis_sync: redis.Redis
        self.engine: AsyncEngine
        self.sessions: async_sessionmaker[AsyncSession]
        #: SQLite only: see ``make_thread_engine``.
        self.thread_engine: Engine | None = None
        self.thread_sessions: sessionmaker[Session] | None = None
        self.publisher: EventPublisher
        self.store: Store
        self.agents: AgentDirectory
        self.dashboards: set[StreamClient] = set()
        self.agent_sockets: dict[str, AgentSink] = {}
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.relay_position: Position = (0, 0)
        #: Output of the agents connected here goes to this hub's TUIs as it arrives, before it reaches
        #: the stream (``deliver_local``), numbered: the next number, and the highest the relay has
        #: read back from the stream (or known gone: dropped by the stream as a replay).
        self.local_next = 0
        self.local_relayed = -1
        self.local_prefix = f"{self.hub_id}:".encode()
        #: execution id -> the highest output sequence handed to this hub's TUIs.
        self.output_sequences: HighestSequences[str] = HighestSequences(OUTPUT_SEQUENCES_KEPT)
        #: (PROFILES_VERSION it was read at, the default profile's limits): see services.
        self.default_constraints: tuple[bytes | None, ExecutionConstraints | None] | None = None
        self.metrics = HubMetrics()

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        protocol.prepare()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis_url, self.embedded_redis = await asyncio.to_thread(
            partial(ensure_redis_url, s.redis_url, s.data_dir, s.embedded_redis_socket, adopt=True)
        )
        self.redis, self.redis_sync = redis_clients(self.redis_url)
        if self.embedded_workers > 0:
            env = dict(os.environ, ONSEMBL_REDIS_URL=self.redis_url)
            self._pool = spawn_pool(self.embedded_workers, env)
        await upgrade_async(s.sqlalchemy_url)
        self.engine = make_engine(s.sqlalchemy_url)
        self.sessions = make_sessionmaker(self.engine)
        self.thread_engine = make_thread_engine(s.sqlalchemy_url)
        self.thread_sessions = (
            make_thread_sessionmaker(self.thread_engine) if self.thread_engine is not None else None
        )
        self.agents = AgentDirectory(self.redis, self.sessions)
        self.publisher = EventPublisher(self.redis, s.event_stream_maxlen, s.event_stream_max_bytes)
        self.publisher.start()
        self.store = Store(self.redis, self.sessions, consumer=store_consumer_name(s.data_dir))
        self.store.status_counter = self.metrics.command_status
        await self.store.ensure_group()
        self.store.start()
        last = stream_entries(await self.redis.xrevrange(keys.EVENTS_STREAM, count=1))
        self.relay_position = parse_position(last[0][0]) if last else (0, 0)
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        # A placeholder subscription keeps the pubsub connection open before any agent connects.
        await self._pubsub.subscribe(keys.PREFIX + "hub:" + self.hub_id)
        self.metrics.attach(self)
        self._spawn(self._relay, "relay")
        self._spawn(self._route_to_agents, "agent-router")
        self._spawn(self._sweep, "sweeper")
        self._spawn(self._mind_children, "children")
        log.info(
            "hub %s started (redis %s, database %s)",
            self.hub_id,
            _safe_url(self.redis_url),
            _safe_url(s.sqlalchemy_url),
        )

    def _spawn(self, factory: Callable[[], Awaitable[None]], name: str) -> None:
        """Run a hub loop for the hub's life; a crash is logged and the loop restarted."""

        async def guarded() -> None:
            while True:
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("hub task %s failed; restarting", name)
                    await asyncio.sleep(0.5)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for agent_id in list(self.agent_sockets):
            await self.agents.mark_offline(agent_id, self.hub_id)
        await self.publisher.stop()
        await self.store.stop()
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self.redis.zrem(keys.HUBS, self.hub_id)
        await self.redis.aclose()
        self.redis_sync.close()
        await self.engine.dispose()
        if self.thread_engine is not None:
            await asyncio.to_thread(self.thread_engine.dispose)
        if self._pool is not None:
            await asyncio.to_thread(_stop_process, self._pool)
        if self.embedded_redis is not None:
            await asyncio.to_thread(self.embedded_redis.stop)

    # ---- events --------------------------------------------------------------------------------

    async def publish(self, event: BaseModel, *, dedupe_key: str = "", sequence: int = 0) -> None:
        await self.publisher.publish(event, dedupe_key=dedupe_key, sequence=sequence)

    async def audit(
        self,
        actor: str,
        action: str,
        *,
        agent_id: str | None = None,
        command_id: str | None = None,
        **details: Any,
    ) -> None:
        entry = AuditLog(
            at=now_ms(), actor=actor, action=action, agent_id=agent_id, command_id=command_id, details=details
        )
        await self.publish(AuditEvent(payload=entry))

    async def publish_agent(self, agent_id: str, row: AgentRow | None = None) -> None:
        """Announce the agent's current state. Give the row when at hand: it saves a database read."""
        if row is None and (sink := self.agent_sockets.get(agent_id)) is not None:
            # Connected here: its session holds the record. This runs on every queue change, also
            # while a new command's job dispatches on this hub's loop.
            row = sink.row
        agent = (await self.agents.describe([row]))[0] if row is not None else await self.agents.get(agent_id)
        if agent is not None:
            await self.publish(AgentStatusMessage(payload=agent))

    def deliver_local(self, frame: str) -> str:
        """Hand an output event to this hub's live TUIs now, before it reaches the stream: one loop
        turn instead of the four of publisher, Redis, relay and socket. Returns the local tag to
        publish it with, by which the relay knows not to send it again."""
        number = self.local_next
        self.local_next += 1
        for client in self.dashboards:
            client.deliver_local(frame)
        return f"{self.hub_id}:{number}"

    async def _relay(self) -> None:
        """Read the event stream and hand every event to this hub's TUI clients, in order."""
        reader = aioredis.Redis.from_url(self.redis_url)
        # The reply as Redis sent it: redis-py's conversion built a dict per entry, for every event.
        reader.set_response_callback("XREAD", lambda response, **_: response)
        try:
            while True:
                try:
                    last = f"{self.relay_position[0]}-{self.relay_position[1]}"
                    published = self.publisher.published
                    response = await reader.xread({keys.EVENTS_STREAM: last}, count=1000, block=1000)
                except (redis.RedisError, OSError) as exc:
                    log.warning("relay lost Redis (%s); retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                items = relay_items(response, self.local_prefix)
                if not items:
                    if not self.publisher.pending and self.publisher.published == published:
                        # Nothing of ours waits for Redis, and nothing was appended while this read
                        # waited: what was numbered and never read back was dropped as a replay.
                        self._local_caught_up(self.local_next - 1)
                    continue
                self.relay_position = items[-1][0]
                for _, _, local in items:
                    if local is not None and local > self.local_relayed:
                        self.local_relayed = local
                # One observation per read, of its oldest event: the lag is what the metric is for.
                self.metrics.relay_latency.observe(max(0, now_ms() - items[0][0][0]) / 1000)
                self.metrics.events_relayed.inc(len(items))
                for client in list(self.dashboards):
                    client.deliver_many(items, self.local_relayed)
        finally:
            await reader.aclose()

    def _local_caught_up(self, number: int) -> None:
        if number > self.local_relayed:
            self.local_relayed = number
            for client in list(self.dashboards):
                client.local_caught_up(number)

    # ---- agent sockets -------------------------------------------------------------------------

    async def attach_agent(self, agent_id: str, sink: AgentSink) -> None:
        old = self.agent_sockets.get(agent_id)
        self.agent_sockets[agent_id] = sink
        if old is not None and old is not sink:
            await old.close_stale()
        await self._pubsub.subscribe(keys.agent_channel(agent_id))

    async def detach_agent(self, agent_id: str, sink: AgentSink) -> bool:
        if self.agent_sockets.get(agent_id) is not sink:
            return False
        del self.agent_sockets[agent_id]
        await self._pubsub.unsubscribe(keys.agent_channel(agent_id))
        return True

    async def send_to_agent(self, agent_id: str, message: BaseModel) -> int:
        """Deliver a hub->agent message through whichever hub holds the agent. Returns receivers."""
        return int(
            await self.redis.publish(keys.agent_channel(agent_id), message.model_dump_json(by_alias=True))
        )

    def forward_to_agent(self, agent_id: str, frame: str) -> None:
        """Hand a hub->agent frame to the agent's socket if it is on this hub. (Should the agent have
        just gone, whoever waits for its answer sends again: the supervising job does.)"""
        if (sink := self.agent_sockets.get(agent_id)) is not None:
            sink.forward(frame)

    async def _route_to_agents(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (redis.RedisError, OSError) as exc:
                log.warning("agent router lost Redis (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
                try:
                    channels = [keys.agent_channel(a) for a in self.agent_sockets] or [
                        keys.PREFIX + "hub:" + self.hub_id
                    ]
                    await self._pubsub.subscribe(*channels)
                except (redis.RedisError, OSError):
                    pass
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            self.forward_to_agent(channel.rsplit(":", 1)[1], message["data"].decode())

    # ---- liveness ------------------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Beat for this hub; mark OFFLINE agents that missed their heartbeats, or whose hub died."""
        s = self.settings
        interval = max(0.5, min(s.heartbeat_interval_s, 10.0))
        while True:
            now = now_ms()
            try:
                await self.redis.zadd(keys.HUBS, {self.hub_id: now})
                stale_before = now - int(s.heartbeat_interval_s * s.missed_heartbeats * 1000)
                stale = await self.redis.zrangebyscore(keys.ONLINE_AGENTS, 0, stale_before)
                for agent_id in as_texts(stale):
                    sink = self.agent_sockets.get(agent_id)
                    if sink is not None:
                        log.warning(
                            "agent %s missed %d heartbeats; closing its socket", agent_id, s.missed_heartbeats
                        )
                        await sink.close_stale()
                    hub = await self.redis.hget(keys.agent(agent_id), "hub")
                    owner = as_text(hub) if hub else ""
                    if sink is not None or not owner or not await self._hub_alive(owner):
                        if await self.agents.mark_offline(agent_id, owner):
                            await self.publish_agent(agent_id)
                            await self.audit(
                                "hub", "agent.offline", agent_id=agent_id, reason="missed heartbeats"
                            )
                await self._resume_lost_supervisors(now)
            except (redis.RedisError, OSError) as exc:
                log.warning("sweeper lost Redis (%s)", exc)
            await asyncio.sleep(interval)

    async def _mind_children(self) -> None:
        """Restart what this hub started and lost: the embedded redis-server (its append-only file
        brings the queue back) and the embedded worker pool (lost supervisions resume in the new one)."""
        redis_misses = 0
        while True:
            await asyncio.sleep(CHILD_CHECK_S)
            embedded = self.embedded_redis
            if embedded is not None:
                # Two checks in a row: one slow answer under load is not a death.
                # Our own child: a poll, no I/O. Adopted from an earlier hub: a ping, off the loop (not
                # in the default executor, whose threads may all be stuck on calls to the dead Redis).
                gone = embedded.died() if embedded.process is not None else await _own_thread(embedded.died)
                redis_misses = redis_misses + 1 if gone else 0
                if redis_misses >= 2:
                    log.error("embedded redis-server gone; restarting it (its append-only file has the data)")
                    try:
                        await _own_thread(embedded.ensure)
                        redis_misses = 0
                        log.info("embedded redis-server is back")
                    except (RuntimeError, OSError) as exc:
                        log.error("cannot restart the embedded redis-server: %s", exc)
            pool = self._pool
            if pool is not None and pool.poll() is not None:
                log.error("the embedded worker pool exited with %s; starting a new one", pool.returncode)
                env = dict(os.environ, ONSEMBL_REDIS_URL=self.redis_url)
                self._pool = spawn_pool(self.embedded_workers, env)

    async def _resume_lost_supervisors(self, now: int) -> None:
        """Executions whose supervising job stopped beating (its worker was killed) get a new one."""
        stale = await self.redis.zrangebyscore(keys.SUPERVISED, 0, now - SUPERVISOR_STALE_MS)
        for execution_id in as_texts(stale):
            # One hub takes it.
            if not await self.redis.set(
                keys.PREFIX + f"resume-lock:{execution_id}", self.hub_id, nx=True, ex=10
            ):
                continue
            if await asyncio.to_thread(executions.resume_supervision, self.redis_sync, execution_id):
                log.warning("the worker supervising %s stopped; a new one takes over", execution_id)

    async def _hub_alive(self, hub_id: str) -> bool:
        beat = await self.redis.zscore(keys.HUBS, hub_id)
        return beat is not None and now_ms() - float(beat) < 30_000

    # ---- health --------------------------------------------------------------------------------

    async def health(self) -> dict[str, tuple[bool, str]]:
        result: dict[str, tuple[bool, str]] = {}
        try:
            info = await asyncio.wait_for(self.redis.info("server"), 2)
            result["redis"] = (True, f"redis {info.get('redis_version', '?')}")
        except Exception as exc:
            result["redis"] = (False, str(exc)[:200])
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 2)
            detail = self.engine.dialect.name
            if self.store.last_error:
                result["database"] = (False, self.store.last_error)
            else:
                result["database"] = (True, detail)
        except Exception as exc:
            result["database"] = (False, str(exc)[:200])
        try:
            from rq import Worker

            workers = await asyncio.to_thread(Worker.count, connection=self.redis_sync)
            result["workers"] = (workers > 0, f"{workers} RQ workers")
        except Exception as exc:
            result["workers"] = (False, str(exc)[:200])
        return result


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    """Stop the worker pool. Jobs still supervising commands are killed: their commands go on on the
    agents, and the next hub's sweeper resumes their supervision."""
    import psutil

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
