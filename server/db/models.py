"""The hub's records (SQLAlchemy 2). Times are milliseconds since the epoch, as on the wire."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def without_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class _WithoutNul(TypeDecorator[str]):
    """Text as PostgreSQL can hold it: a NUL character, which its text types refuse (one in an agent's
    output line stopped the store: the batch was retried forever), is stored as U+FFFD. The same on
    every database, so that they read back alike."""

    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return without_nul(value)


class CleanText(_WithoutNul):
    impl = Text
    cache_ok = True


class CleanString(_WithoutNul):
    impl = String
    cache_ok = True


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, Any: JSON}


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(200), unique=True)
    agent_type: Mapped[str] = mapped_column(CleanString(20), default="SHELL")
    status: Mapped[str] = mapped_column(CleanString(20), default="OFFLINE")
    host_machine: Mapped[str] = mapped_column(CleanString(255), default="")
    version: Mapped[str] = mapped_column(CleanString(200), default="")
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_seen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class UserRow(Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(CleanString(320), primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_login: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class LoginCodeRow(Base):
    """A pending magic link / one-time code. Only hashes are stored."""

    __tablename__ = "login_codes"

    id: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    email: Mapped[str] = mapped_column(CleanString(320), index=True)
    code_hash: Mapped[str] = mapped_column(CleanString(128))
    token_hash: Mapped[str] = mapped_column(CleanString(128), unique=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RefreshTokenRow(Base):
    """Rotating refresh tokens; a reused (already rotated) token revokes its whole family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    email: Mapped[str] = mapped_column(CleanString(320), index=True)
    token_hash: Mapped[str] = mapped_column(CleanString(128), unique=True)
    family_id: Mapped[str] = mapped_column(CleanString(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class CommandRow(Base):
    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    content: Mapped[str] = mapped_column(CleanText)
    type: Mapped[str] = mapped_column(CleanString(20))
    priority: Mapped[int] = mapped_column(Integer)
    broadcast: Mapped[bool] = mapped_column(Boolean, default=False)
    target_agents: Mapped[list[str]] = mapped_column(JSON, default=list)
    time_limit_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    token_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    preset_id: Mapped[str | None] = mapped_column(CleanString(64), nullable=True)
    created_by: Mapped[str] = mapped_column(CleanString(320), default="")
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)


class ExecutionRow(Base):
    """One command on one agent; its id is the RQ job id."""

    __tablename__ = "executions"
    __table_args__ = (
        UniqueConstraint("command_id", "agent_id", name="uq_execution_command_agent"),
        Index("ix_executions_agent_status", "agent_id", "status"),
    )

    id: Mapped[str] = mapped_column(CleanString(140), primary_key=True)
    command_id: Mapped[str] = mapped_column(ForeignKey("commands.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[str] = mapped_column(CleanString(64))
    status: Mapped[str] = mapped_column(CleanString(20))
    status_rank: Mapped[int] = mapped_column(Integer, default=0)
    end_reason: Mapped[str | None] = mapped_column(CleanString(30), nullable=True)
    error: Mapped[str | None] = mapped_column(CleanText, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    output_lines: Mapped[int] = mapped_column(Integer, default=0)
    #: What the command changed in the agent's working tree (shared.api.ChangeSet), if recorded.
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class OutputLineRow(Base):
    __tablename__ = "output_lines"
    __table_args__ = (UniqueConstraint("command_id", "agent_id", "sequence", name="uq_output_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(CleanString(64))
    agent_id: Mapped[str] = mapped_column(CleanString(64))
    sequence: Mapped[int] = mapped_column(Integer)
    stream_type: Mapped[str] = mapped_column(CleanString(10))
    content: Mapped[str] = mapped_column(CleanText)
    ansi_codes: Mapped[bool] = mapped_column(Boolean, default=False)
    emitted_at: Mapped[int] = mapped_column(BigInteger)


class TraceRow(Base):
    __tablename__ = "traces"
    __table_args__ = (UniqueConstraint("command_id", "agent_id", "trace_id", name="uq_trace"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(CleanString(64), index=True)
    agent_id: Mapped[str] = mapped_column(CleanString(64))
    trace_id: Mapped[str] = mapped_column(CleanString(128))
    parent_id: Mapped[str | None] = mapped_column(CleanString(128), nullable=True)
    type: Mapped[str] = mapped_column(CleanString(20))
    name: Mapped[str] = mapped_column(CleanString(500))
    # None is stored as SQL NULL, so a later update without content keeps the earlier one.
    content: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(CleanText, nullable=True)


class ReportRow(Base):
    __tablename__ = "reports"

    id: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    command_id: Mapped[str] = mapped_column(CleanString(64), index=True)
    agent_id: Mapped[str] = mapped_column(CleanString(64))
    status: Mapped[str] = mapped_column(CleanString(20))
    title: Mapped[str] = mapped_column(CleanString(500))
    summary: Mapped[str] = mapped_column(CleanText, default="")
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)


class PresetRow(Base):
    __tablename__ = "presets"

    id: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(200), unique=True)
    description: Mapped[str] = mapped_column(CleanText, default="")
    type: Mapped[str] = mapped_column(CleanString(20))
    content: Mapped[str] = mapped_column(CleanText)
    target_agents: Mapped[list[str]] = mapped_column(JSON, default=list)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    time_limit_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    token_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ConstraintProfileRow(Base):
    __tablename__ = "constraint_profiles"

    id: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(200), unique=True)
    description: Mapped[str] = mapped_column(CleanText, default="")
    time_limit_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    token_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)


class AuditLogRow(Base):
    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(CleanString(320))
    action: Mapped[str] = mapped_column(CleanString(100), index=True)
    agent_id: Mapped[str | None] = mapped_column(CleanString(64), nullable=True, index=True)
    command_id: Mapped[str | None] = mapped_column(CleanString(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
