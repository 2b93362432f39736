"""The control center: header, agents table, output (combined or grid), command bar."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import ContentSwitcher, DataTable, Input, Static

from shared.api import Preset
from shared.enums import AgentStatus, ControlAction
from tui.screens.base import BaseScreen
from tui.state import Changes
from tui.widgets.agents_table import AgentsTable
from tui.widgets.command_bar import CommandBar, TargetMode
from tui.widgets.hub_header import HubHeader
from tui.widgets.output_grid import OutputGrid
from tui.widgets.output_log import OutputLog


class ControlCenterScreen(BaseScreen):
    DEFAULT_CSS = """
    ControlCenterScreen #main { height: 1fr; }
    ControlCenterScreen #outputs { height: 1fr; }
    ControlCenterScreen #combined { height: 1fr; }
    ControlCenterScreen #output-search { display: none; height: 1; }
    ControlCenterScreen #output-search.-visible { display: block; }
    ControlCenterScreen #output-status { height: 1; background: $boost; color: $text-muted; padding: 0 1; }
    ControlCenterScreen.-fullscreen AgentsTable { display: none; }
    ControlCenterScreen.-fullscreen CommandBar { display: none; }
    """
    BINDINGS = [
        Binding("i", "focus_command", "Command", id="focus_command"),
        Binding("ctrl+t", "cycle_target", "Target", id="cycle_target"),
        Binding("escape", "leave_bar", "Back", show=False, id="leave_bar"),
        Binding("enter", "queue", "Queue", id="queue", show=False),
        Binding("Q", "queue", "Queue", id="queue_view"),
        Binding("T", "trace", "Trace", id="trace"),
        Binding("D", "changes", "Diff", id="changes"),
        Binding("g", "toggle_grid", "Grid", id="toggle_grid"),
        Binding("o", "filter_output", "Only marked", id="filter_output"),
        Binding("s", "toggle_follow", "Follow", id="toggle_follow"),
        Binding("w", "toggle_wrap", "Wrap", id="toggle_wrap"),
        Binding("t", "toggle_timestamps", "Time", id="toggle_timestamps"),
        Binding("f", "toggle_fullscreen", "Full", id="toggle_fullscreen"),
        Binding("slash", "search", "Search", id="search_output"),
        Binding("y", "approve", "Approve", id="approve"),
        Binding("x", "control('STOP')", "Stop", id="agent_stop"),
        Binding("R", "control('RESTART')", "Restart", id="agent_restart"),
        Binding("p", "control('PAUSE')", "Pause", id="agent_pause"),
        Binding("r", "control('RESUME')", "Resume", id="agent_resume"),
        Binding("n", "new_session", "New session", id="agent_new_session"),
        *[
            Binding(str(n), f"select_number({n})", f"Agent {n}", show=False, id=f"agent_{n}")
            for n in range(1, 10)
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.follow = True
        self.grid_mode = False
        self.only_marked = False

    def compose_body(self) -> ComposeResult:
        app = self.onsembl
        settings = app.settings
        yield HubHeader()
        with Vertical(id="main"):
            yield AgentsTable(id="agents")
            with Vertical(id="output-column"):
                yield Input(
                    placeholder="search the output (enter to apply, empty to clear)", id="output-search"
                )
                with ContentSwitcher(initial="combined", id="outputs"):
                    yield OutputLog(
                        agent_label=app.agent_label,
                        max_lines=settings.scrollback,
                        timestamps=settings.timestamps,
                        wrap=settings.wrap,
                        id="combined",
                    )
                    yield OutputGrid(
                        max_lines=app.hub.pane_scrollback,
                        timestamps=settings.timestamps,
                        wrap=settings.wrap,
                        id="grid",
                    )
                yield Static("", id="output-status")
        yield CommandBar(
            agents=lambda: [a.name for a in app.hub.agents.values()],
            presets=lambda: [p.name for p in app.presets],
            history_file=settings.history_file,
            id="command-bar",
        )

    def on_mount(self) -> None:
        self.table.focus()
        self.refresh_agents()
        self.combined.reload(self.onsembl.hub.output)
        self.update_status_line()
        self.update_target()
        self.bar.set_profiles(self.onsembl.profiles)

    # -- parts -------------------------------------------------------------------------------------
    @property
    def table(self) -> AgentsTable:
        return self.query_one(AgentsTable)

    @property
    def bar(self) -> CommandBar:
        return self.query_one(CommandBar)

    @property
    def combined(self) -> OutputLog:
        return self.query_one("#combined", OutputLog)

    @property
    def grid(self) -> OutputGrid:
        return self.query_one(OutputGrid)

    def logs(self) -> list[OutputLog]:
        return [self.combined, *self.grid.panes.values()]

    # -- live updates ------------------------------------------------------------------------------
    def hub_changed(self, changes: Changes) -> None:
        if changes.agents:
            self.refresh_agents()
        if changes.output:
            self.combined.add(changes.output)
            if self.grid_mode:
                self.grid.add(changes.output)
        if changes.agents or changes.queues:
            self.update_target()

    def on_screen_resume(self) -> None:
        self.refresh_agents()

    def refresh_agents(self) -> None:
        hub = self.onsembl.hub
        agents = hub.sorted_agents()
        self.table.show(agents)
        self.onsembl.update_header(self.query_one(HubHeader))
        if self.grid_mode:
            self.grid.sync_agents([(a.id, a.name) for a in agents])

    def update_status_line(self) -> None:
        flags = [
            "follow" if self.follow else "paused (s)",
            "wrap" if self.combined.wrap else "nowrap",
            "time" if self.combined.timestamps else "notime",
        ]
        if self.combined.search:
            flags.append(f"search '{self.combined.search}'")
        if self.combined.agent_filter is not None:
            names = ", ".join(self.onsembl.hub.agent_name(a) for a in sorted(self.combined.agent_filter))
            flags.append(f"only {names}")
        self.query_one("#output-status", Static).update(" · ".join(flags))

    def update_target(self) -> None:
        hub = self.onsembl.hub
        mode = self.bar.mode
        if mode is TargetMode.ALL:
            label = f"all online ({hub.online})"
        elif mode is TargetMode.MARKED:
            label = f"{len(self.table.marked)} marked"
        else:
            selected = self.table.selected_agent_id
            label = hub.agent_name(selected) if selected else "-"
        self.bar.set_target_label(label)

    # -- events ------------------------------------------------------------------------------------
    @on(AgentsTable.Highlighted)
    def _highlighted(self, event: AgentsTable.Highlighted) -> None:
        self.update_target()

    @on(AgentsTable.MarksChanged)
    def _marks_changed(self, event: AgentsTable.MarksChanged) -> None:
        if event.marked and self.bar.mode is TargetMode.SELECTED:
            self.bar.mode = TargetMode.MARKED
        elif not event.marked and self.bar.mode is TargetMode.MARKED:
            self.bar.mode = TargetMode.SELECTED
        if self.only_marked:
            self._apply_filter()
        self.update_target()

    @on(CommandBar.TargetModeChanged)
    def _mode_changed(self, event: CommandBar.TargetModeChanged) -> None:
        self.update_target()

    @on(CommandBar.Submitted)
    def _submitted(self, event: CommandBar.Submitted) -> None:
        self.onsembl.submit_draft(event.draft, self.table.selected_agent_id, frozenset(self.table.marked))

    @on(DataTable.RowSelected, "#agents")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_queue()

    @on(Input.Submitted, "#output-search")
    def _search(self, event: Input.Submitted) -> None:
        event.stop()
        term = event.value.strip().lower()
        for log in self.logs():
            log.search = term
        self._reload_logs()
        event.input.remove_class("-visible")
        self.combined.focus()

    def load_preset(self, preset: Preset, text: str) -> None:
        """A preset, its variables filled, in the bar; its default targets marked."""
        self.bar.fill(text, preset.type, preset.priority, *self._limits(preset))
        known = [a for a in preset.target_agents if a in self.onsembl.hub.agents]
        if known:
            self.table.marked = set(known)
            self.table.show(self.onsembl.hub.sorted_agents())
            self.bar.mode = TargetMode.MARKED
            self.update_target()

    @staticmethod
    def _limits(preset: Preset) -> tuple[int | None, int | None]:
        constraints = preset.execution_constraints
        if constraints is None:
            return None, None
        return constraints.time_limit_ms, constraints.token_budget

    # -- actions -----------------------------------------------------------------------------------
    def action_cycle_target(self) -> None:
        self.bar.action_cycle_target()

    def action_focus_command(self) -> None:
        self.bar.focus_text()

    def action_leave_bar(self) -> None:
        search = self.query_one("#output-search", Input)
        if search.has_class("-visible"):
            search.remove_class("-visible")
        self.table.focus()

    def action_select_number(self, number: int) -> None:
        self.table.select_number(number)

    def _selected_or_warn(self) -> str | None:
        agent_id = self.table.selected_agent_id
        if agent_id is None:
            self.notify("no agent selected", severity="warning")
        return agent_id

    def action_queue(self) -> None:
        if (agent_id := self._selected_or_warn()) is not None:
            self.onsembl.open_queue(agent_id)

    def action_trace(self) -> None:
        if (agent_id := self._selected_or_warn()) is not None:
            command_id = self.onsembl.latest_command_of(agent_id)
            if command_id is None:
                self.notify("this agent has run nothing yet in this session", severity="warning")
            else:
                self.onsembl.open_trace(command_id)

    def action_changes(self) -> None:
        if (agent_id := self._selected_or_warn()) is not None:
            command_id = self.onsembl.latest_command_of(agent_id)
            if command_id is None:
                self.notify("this agent has run nothing yet in this session", severity="warning")
            else:
                self.onsembl.open_changes(command_id, agent_id)

    def action_toggle_grid(self) -> None:
        self.grid_mode = not self.grid_mode
        switcher = self.query_one(ContentSwitcher)
        if self.grid_mode:
            hub = self.onsembl.hub
            self.grid.sync_agents([(a.id, a.name) for a in hub.sorted_agents()])
            for agent_id, pane in self.grid.panes.items():
                pane.reload(hub.output_by_agent.get(agent_id, ()))
            switcher.current = "grid"
            # The panes get their size on this refresh: follow their ends once they have it.
            self.call_after_refresh(self._follow_ends)
        else:
            switcher.current = "combined"

    def _follow_ends(self) -> None:
        if self.follow:
            for log in self.logs():
                log.scroll_end(animate=False, immediate=True, force=True)

    def action_filter_output(self) -> None:
        self.only_marked = not self.only_marked
        self._apply_filter()

    def _apply_filter(self) -> None:
        chosen = set(self.table.marked)
        if not chosen and self.table.selected_agent_id:
            chosen = {self.table.selected_agent_id}
        self.combined.agent_filter = frozenset(chosen) if self.only_marked and chosen else None
        self.combined.reload(self.onsembl.hub.output)
        self.update_status_line()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        for log in self.logs():
            log.auto_scroll = self.follow
            if self.follow:
                log.follow_end()
        self.update_status_line()

    def action_toggle_wrap(self) -> None:
        for log in self.logs():
            log.wrap = not log.wrap
        self._reload_logs()

    def action_toggle_timestamps(self) -> None:
        for log in self.logs():
            log.timestamps = not log.timestamps
        self._reload_logs()

    def _reload_logs(self) -> None:
        hub = self.onsembl.hub
        self.combined.reload(hub.output)
        for agent_id, pane in self.grid.panes.items():
            pane.reload(hub.output_by_agent.get(agent_id, ()))
        self.update_status_line()

    def action_toggle_fullscreen(self) -> None:
        self.toggle_class("-fullscreen")

    def action_search(self) -> None:
        search = self.query_one("#output-search", Input)
        search.add_class("-visible")
        search.value = self.combined.search
        search.focus()

    def action_approve(self) -> None:
        agent_id = self._selected_or_warn()
        if agent_id is None:
            return
        request = self.onsembl.hub.waiting_input.get(agent_id)
        if request is None:
            waiting = list(self.onsembl.hub.waiting_input.values())
            if not waiting:
                self.notify("no agent is waiting for an approval", severity="information")
                return
            request = waiting[0]
        self.onsembl.ask_approval(request)

    def action_control(self, action: str) -> None:
        agent_id = self._selected_or_warn()
        if agent_id is not None:
            self.onsembl.control_agent(agent_id, ControlAction(action))

    def action_new_session(self) -> None:
        agent_id = self._selected_or_warn()
        if agent_id is not None:
            self.onsembl.control_agent(agent_id, ControlAction.RESTART, reason="new session")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("control", "new_session"):
            agent_id = self.table.selected_agent_id if self.is_mounted else None
            agent = self.onsembl.hub.agents.get(agent_id) if agent_id else None
            if agent is None or agent.status is not AgentStatus.ONLINE:
                return None  # shown dimmed: nothing to control
        return True
