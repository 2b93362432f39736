"""The agents table's uptime column: it keeps counting between the hub's announcements of an agent,
which come when its health changes, not on every heartbeat."""

from __future__ import annotations

import time

import pytest
from textual.app import App, ComposeResult

from shared.api import Agent, HealthMetrics
from shared.enums import AgentActivity, AgentStatus, AgentType
from tui import format as fmt
from tui.widgets.agents_table import AgentsTable


def test_uptime_adds_the_time_since_the_report() -> None:
    now = 1_800_000_000.0
    assert fmt.uptime(30.0, int((now - 90) * 1000), now=now) == "2m"
    assert fmt.uptime(30.0, int((now - 89.5) * 1000), now=now) == "1m"
    assert fmt.uptime(3600.0 + 59 * 60 + 59, int(now * 1000), now=now) == "1h59m"
    assert fmt.uptime(49 * 3600.0, int(now * 1000), now=now) == "2d01h"
    assert fmt.uptime(12.6, int(now * 1000), now=now) == "12s"
    assert fmt.uptime(5.0, None, now=now) == "5s"  # no report time: what the agent said
    assert fmt.uptime(5.0, int((now + 3) * 1000), now=now) == "5s"  # a clock ahead adds nothing


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield AgentsTable()


def agent(status: AgentStatus, last_seen_s: float) -> Agent:
    return Agent(
        id="a-1",
        name="worker",
        agent_type=AgentType.SHELL,
        status=status,
        activity=AgentActivity.IDLE,
        last_seen=int(last_seen_s * 1000),
        health=HealthMetrics(uptime_seconds=30.0),
    )


async def test_the_uptime_column_ticks_for_online_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.time()
    app = TableApp()
    async with app.run_test(size=(140, 10)) as pilot:
        table = app.query_one(AgentsTable)
        monkeypatch.setattr(time, "time", lambda: start)  # however long the app took to start
        table.show([agent(AgentStatus.ONLINE, start - 90)])
        await pilot.pause()
        assert table.get_cell("a-1", "uptime") == "2m"
        # Within the minute the cell stays as it is: no update, no render of the table.
        monkeypatch.setattr(time, "time", lambda: start + 30)
        updates = table._update_count
        table._tick_uptime()
        assert table.get_cell("a-1", "uptime") == "2m" and table._update_count == updates
        monkeypatch.setattr(time, "time", lambda: start + 60)
        table._tick_uptime()
        assert table.get_cell("a-1", "uptime") == "3m"
        # An offline agent shows when it was last seen, and the tick leaves that alone.
        table.show([agent(AgentStatus.OFFLINE, start - 90)])
        table._tick_uptime()
        assert table.get_cell("a-1", "uptime") == fmt.clock(int((start - 90) * 1000))
