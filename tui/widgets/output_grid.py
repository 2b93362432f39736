"""A grid of per-agent output panes, one per agent, two to four columns by width."""

from __future__ import annotations

from collections.abc import Iterable

from textual.containers import Grid

from tui.state import OutputEntry
from tui.widgets.output_log import OutputLog


class OutputGrid(Grid):
    DEFAULT_CSS = """
    OutputGrid {
        grid-size: 2;
        grid-gutter: 0 1;
        & OutputLog { border: round $primary 40%; border-title-color: $accent; height: 1fr; min-height: 5; }
        & OutputLog:focus { border: round $accent; }
    }
    """

    def __init__(self, *, max_lines: int, timestamps: bool, wrap: bool, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_lines = max_lines
        self.timestamps = timestamps
        self.wrap = wrap
        self.panes: dict[str, OutputLog] = {}

    def on_resize(self) -> None:
        columns = 2 if self.size.width < 150 else (3 if self.size.width < 220 else 4)
        self.styles.grid_size_columns = columns

    def sync_agents(self, agents: list[tuple[str, str]]) -> None:
        """(agent id, name) in display order: a pane for each."""
        for agent_id, name in agents:
            pane = self.panes.get(agent_id)
            if pane is None:
                pane = OutputLog(max_lines=self.max_lines, timestamps=self.timestamps, wrap=self.wrap)
                pane.border_title = name
                self.panes[agent_id] = pane
                self.mount(pane)
            elif pane.border_title != name:
                pane.border_title = name

    def add(self, entries: Iterable[OutputEntry]) -> None:
        by_agent: dict[str, list[OutputEntry]] = {}
        for entry in entries:
            by_agent.setdefault(entry.agent_id, []).append(entry)
        for agent_id, lines in by_agent.items():
            pane = self.panes.get(agent_id)
            if pane is not None:
                pane.add(lines)
