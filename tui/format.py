"""How values look on screen: short ids, times, durations, sizes, token counts."""

from __future__ import annotations

import time
from datetime import datetime

from shared.enums import AgentActivity, AgentStatus, ExecutionStatus

STATUS_STYLE = {
    AgentStatus.ONLINE: "green",
    AgentStatus.OFFLINE: "bright_black",
    AgentStatus.CONNECTING: "yellow",
    AgentStatus.ERROR: "red",
}
ACTIVITY_STYLE = {
    AgentActivity.IDLE: "",
    AgentActivity.PROCESSING: "cyan",
    AgentActivity.QUEUED: "blue",
    AgentActivity.PAUSED: "yellow",
    AgentActivity.STOPPED: "bright_black",
    AgentActivity.WAITING_INPUT: "bold black on yellow",
}
EXECUTION_STYLE = {
    ExecutionStatus.PENDING: "bright_black",
    ExecutionStatus.QUEUED: "blue",
    ExecutionStatus.DISPATCHED: "cyan",
    ExecutionStatus.EXECUTING: "bold cyan",
    ExecutionStatus.COMPLETED: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.CANCELLED: "yellow",
}
#: Per-agent colours of the combined output stream, picked by the agent's position.
AGENT_COLORS = [
    "cyan",
    "magenta",
    "green",
    "yellow",
    "bright_blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "orange1",
    "deep_sky_blue1",
    "plum2",
]


def short_id(value: str | None) -> str:
    return (value or "")[:8]


def full_id(value: str) -> str:
    """An id shown whole, to be copied (``:trace ID``)."""
    return value


def clock(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


def stamp(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def short_stamp(ms: int | None) -> str:
    """Time of day for today, month-day and minute for older records (14 columns at most)."""
    if not ms:
        return "-"
    when = datetime.fromtimestamp(ms / 1000)
    if when.date() == datetime.now().date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    return _hours(minutes)


def _hours(minutes: int) -> str:
    """An hour or more, to the minute (to the hour past two days)."""
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def uptime(seconds: float, reported_ms: int | None, now: float | None = None) -> str:
    """An agent's uptime now: what its last health report said, plus the time since that report
    (the hub announces health when it changes, not on every heartbeat). Whole seconds in the first
    minute, whole minutes after: the column ticks, and a DataTable renders all of its cells again on
    any change, which once a second for 20 agents cost the idle TUI 4 % of a core."""
    elapsed = max(0.0, (now or time.time()) - reported_ms / 1000) if reported_ms else 0.0
    total = int(seconds + elapsed)
    if total < 60:
        return f"{total}s"
    minutes = total // 60
    return f"{minutes}m" if minutes < 60 else _hours(minutes)


def duration_ms(ms: int | None) -> str:
    return "-" if ms is None else duration(ms / 1000)


def since(ms: int | None, now: float | None = None) -> str:
    if not ms:
        return "-"
    return duration((now or time.time()) - ms / 1000) + " ago"


def size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f}{unit}" if unit in ("B", "KB") else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GB"


def tokens(count: int) -> str:
    if count < 1000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.2f}M"


def cost(usd: float) -> str:
    return f"${usd:.2f}" if usd else "-"


def parse_duration(text: str) -> int | None:
    """``90``, ``90s``, ``15m``, ``2h`` -> milliseconds; empty -> None. ValueError when unreadable."""
    text = text.strip().lower()
    if not text:
        return None
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            number = float(text[: -len(suffix)])
            break
    else:
        number, suffix = float(text), "s"
    if number <= 0:
        raise ValueError("must be positive")
    return int(number * units[suffix])


def parse_count(text: str) -> int | None:
    """``5000``, ``20k``, ``1.5M`` -> int; empty -> None."""
    text = text.strip().lower().replace("_", "").replace(",", "")
    if not text:
        return None
    factor = 1
    if text.endswith("k"):
        factor, text = 1000, text[:-1]
    elif text.endswith("m"):
        factor, text = 1_000_000, text[:-1]
    value = int(float(text) * factor)
    if value <= 0:
        raise ValueError("must be positive")
    return value
