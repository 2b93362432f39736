"""The agents table: one row per agent, updated cell by cell (no flicker), marks with ``space``."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from shared.api import Agent
from shared.enums import AgentActivity, AgentStatus
from tui import format as fmt

SPARK = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 8

#: (key, label, wide only, width): fixed widths, so columns never jump as values change.
COLUMNS: list[tuple[str, str, bool, int]] = [
    ("num", "#", False, 2),
    ("name", "Agent", False, 14),
    ("type", "Type", True, 6),
    ("status", "Status", False, 7),
    ("activity", "Activity", False, 11),
    ("queue", "Q", False, 3),
    ("cpu", "CPU", False, 5),
    ("mem", "Mem", False, 8),
    ("tokens", "Tokens", False, 6),
    ("cost", "Cost", True, 6),
    ("uptime", "Up", True, 8),
    ("host", "Host", True, 14),
]
WIDE_AT = 118
#: How often the uptime column moves on between the hub's announcements of an agent.
UPTIME_TICK_S = 1.0


def _uptime_cell(agent: Agent) -> str:
    """Online: how long it has been up (ticking); offline: when it was last seen."""
    if agent.status is AgentStatus.ONLINE:
        return fmt.uptime(agent.health.uptime_seconds, agent.last_seen)
    return fmt.clock(agent.last_seen)


def sparkline(values: deque[float]) -> str:
    if not values:
        return ""
    top = max(max(values), 100.0 if max(values) > 50 else 50.0)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


class AgentsTable(DataTable[Text | str]):
    DEFAULT_CSS = """
    AgentsTable { height: auto; max-height: 50%; }
    AgentsTable > .datatable--cursor { text-style: bold; }
    """
    BINDINGS = [
        Binding("space", "toggle_mark", "Mark", id="mark"),
    ]

    @dataclass
    class Highlighted(Message):
        table: AgentsTable
        agent_id: str | None

        @property
        def control(self) -> AgentsTable:
            return self.table

    @dataclass
    class MarksChanged(Message):
        table: AgentsTable
        marked: frozenset[str]

        @property
        def control(self) -> AgentsTable:
            return self.table

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.marked: set[str] = set()
        self.order: list[str] = []
        self.wide = False
        self._cpu: dict[str, deque[float]] = {}
        self._agents: dict[str, Agent] = {}

    def on_mount(self) -> None:
        self._build_columns()
        self.set_interval(UPTIME_TICK_S, self._tick_uptime)

    def _tick_uptime(self) -> None:
        if not self.wide:
            return  # the column is shown only in a wide table
        for agent_id in self.order:
            agent = self._agents.get(agent_id)
            if agent is not None and agent.status is AgentStatus.ONLINE:
                value = _uptime_cell(agent)
                if self.get_cell(agent_id, "uptime") != value:
                    self.update_cell(agent_id, "uptime", value)

    def on_resize(self) -> None:
        wide = self.app.size.width >= WIDE_AT
        if wide != self.wide:
            self.wide = wide
            self._build_columns()
            self.show(list(self._agents.values()))

    def _columns(self) -> list[tuple[str, str, bool, int]]:
        return [c for c in COLUMNS if self.wide or not c[2]]

    def _build_columns(self) -> None:
        self.clear(columns=True)
        self.order = []
        for key, label, _, width in self._columns():
            if key == "cpu" and self.wide:
                width += SPARK_POINTS + 1
            self.add_column(label, key=key, width=width)

    @property
    def selected_agent_id(self) -> str | None:
        if not self.order or self.cursor_row < 0 or self.cursor_row >= len(self.order):
            return None
        return self.order[self.cursor_row]

    def select_agent(self, agent_id: str) -> None:
        if agent_id in self.order:
            self.move_cursor(row=self.order.index(agent_id))

    def select_number(self, number: int) -> str | None:
        if 1 <= number <= len(self.order):
            self.move_cursor(row=number - 1)
            return self.order[number - 1]
        return None

    def show(self, agents: list[Agent]) -> None:
        """Bring the table to these agents (sorted by name): new rows added, gone rows removed,
        changed cells updated in place."""
        previous, self._agents = self._agents, {a.id: a for a in agents}
        for agent in agents:
            if previous.get(agent.id) is agent:
                continue  # no new status from the hub: no new sample
            if agent.status is not AgentStatus.ONLINE:
                continue
            history = self._cpu.get(agent.id)
            if history is None:
                # Start flat at the first sample, so the line always has its full width.
                cpu = agent.health.cpu_percent
                history = self._cpu[agent.id] = deque([cpu] * SPARK_POINTS, maxlen=SPARK_POINTS)
            else:
                history.append(agent.health.cpu_percent)
        wanted = [a.id for a in agents]
        if wanted != self.order:
            selected = self.selected_agent_id
            self.clear()
            self.order = wanted
            for index, agent in enumerate(agents):
                self.add_row(*self._cells(index, agent).values(), key=agent.id)
            if selected in self.order:
                self.move_cursor(row=self.order.index(selected))
            return
        for index, agent in enumerate(agents):
            for key, value in self._cells(index, agent).items():
                if self.get_cell(agent.id, key) != value:
                    self.update_cell(agent.id, key, value)

    def _cells(self, index: int, agent: Agent) -> dict[str, Text | str]:
        health = agent.health
        online = agent.status is AgentStatus.ONLINE
        mark = "●" if agent.id in self.marked else " "
        waiting = agent.activity is AgentActivity.WAITING_INPUT
        name_style = "bold black on yellow" if waiting else ("bold" if online else "dim")
        activity = "NEEDS INPUT" if waiting else agent.activity.value
        cpu = f"{health.cpu_percent:4.0f}%" if online else "   -"
        if self.wide and online:
            cpu = f"{sparkline(self._cpu.get(agent.id, deque()))} {cpu}"
        cells: dict[str, Text | str] = {
            "num": Text(f"{mark}{index + 1}" if index < 9 else f"{mark} ", style="bold magenta"),
            "name": Text(agent.name, style=name_style),
            "type": agent.agent_type.value.lower(),
            "status": Text(agent.status.value, style=fmt.STATUS_STYLE.get(agent.status, "")),
            "activity": Text(activity, style=fmt.ACTIVITY_STYLE.get(agent.activity, "") if online else "dim"),
            "queue": str(agent.queue_length) if agent.queue_length else "",
            "cpu": cpu,
            "mem": fmt.size(health.memory_bytes) if online and health.memory_bytes else "-",
            "tokens": fmt.tokens(health.tokens_used) if health.tokens_used else "-",
            "cost": fmt.cost(health.cost_usd),
            "uptime": _uptime_cell(agent),
            "host": agent.host_machine,
        }
        return {key: cells[key] for key, _, _, _ in self._columns()}

    def action_toggle_mark(self) -> None:
        agent_id = self.selected_agent_id
        if agent_id is None:
            return
        if agent_id in self.marked:
            self.marked.discard(agent_id)
        else:
            self.marked.add(agent_id)
        agent = self._agents.get(agent_id)
        if agent is not None:
            self.update_cell(agent_id, "num", self._cells(self.order.index(agent_id), agent)["num"])
        self.post_message(self.MarksChanged(self, frozenset(self.marked)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.post_message(self.Highlighted(self, event.row_key.value if event.row_key else None))
