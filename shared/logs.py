"""Logging for every process: one format, and no token ever written (query strings and bearer
headers are redacted, and so is anything shaped like a JWT).

Lines carry the context they were logged in: ``log_context(agent_id=..., command_id=...)`` (or
``bind_log_context`` for the rest of a task) adds those fields to every line logged inside it, as
JSON keys when logs are JSON (not a terminal), as ``key=value`` after the message otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar

#: The fields every line logged in the current task (or request) carries.
_context: ContextVar[dict[str, str]] = ContextVar("onsembl_log_context", default={})  # noqa: B039 - never mutated


def bind_log_context(**fields: str | None) -> None:
    """Add fields for the rest of the current task (each asyncio task has its own copy)."""
    _context.set(_context.get() | {k: v for k, v in fields.items() if v})


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add fields to the lines logged inside the block."""
    token = _context.set(_context.get() | {k: v for k, v in fields.items() if v})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, str]:
    return _context.get()


_SECRETS = [
    (re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE), r"\1***"),
    (re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1***"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"), "***jwt***"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts secrets and attaches the log context (``record.context``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            record.context = _context.get()
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context: dict[str, str] = getattr(record, "context", None) or {}
        for key, value in context.items():
            entry.setdefault(key, redact(value))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """``12:00:00 INFO    server.hub: message  agent_id=... command_id=...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context: dict[str, str] = getattr(record, "context", None) or {}
        if not context:
            return line
        first, newline, rest = line.partition("\n")
        fields = " ".join(f"{k}={redact(v)}" for k, v in context.items())
        return f"{first}  {fields}{newline}{rest}"


def setup_logging(level: str = "INFO", *, json_logs: bool | None = None) -> None:
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "rq.worker"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
