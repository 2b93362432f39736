"""The Onsembl TUI application: owns the hub connection, the state, and navigation between screens.

All network I/O runs in workers on the app's event loop (the stream is one long-running worker), so
the UI never waits on the hub. Screens read :attr:`OnsemblApp.hub` and subscribe to
:attr:`hub_signal` for what changed.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Sequence
from typing import ClassVar

from textual import events, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.signal import Signal

from shared.api import (
    CommandCreate,
    ConstraintProfile,
    EmergencyStopResult,
    ExecutionConstraints,
    InputAnswer,
    Preset,
)
from shared.enums import AgentStatus, ControlAction, ExecutionStatus
from shared.protocol import CommandStatusPayload, DashboardReady, Error, InputRequiredPayload, StreamEnvelope
from tui import format as fmt
from tui import messages
from tui.client.auth import TokenSource
from tui.client.rest import HubApi, HubError
from tui.client.stream import EventStream, LinkState, LinkStatus
from tui.config import TuiSettings
from tui.palette import OnsemblCommands
from tui.state import Changes, Gap, HubState
from tui.widgets.command_bar import CommandDraft, TargetMode
from tui.widgets.hub_header import HubHeader

#: Full collections run from a timer, and only when no key came in the last seconds.
FULL_GC_EVERY_S = 60.0
QUIET_BEFORE_GC_S = 2.0
#: ... but at least this often, however busy the keyboard (cyclic garbage must not pile up).
FULL_GC_AT_LEAST_S = 120.0


class OnsemblApp(App[None]):
    TITLE = "Onsembl"
    CSS_PATH = "onsembl.tcss"
    COMMANDS = App.COMMANDS | {OnsemblCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+x", "emergency_stop", "E-STOP", priority=True, id="emergency_stop"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("colon", "command_mode", "Cmd", id="command_mode"),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
    ]

    def __init__(
        self,
        *,
        server_url: str,
        tokens: TokenSource,
        settings: TuiSettings | None = None,
        connect: bool = True,
    ) -> None:
        super().__init__()
        self.settings = settings or TuiSettings()
        self.server_url = server_url.rstrip("/")
        self.api = HubApi(self.server_url, tokens)
        self.hub = HubState(self.settings.scrollback)
        self.stream = EventStream(
            self.server_url.replace("http", "ws", 1),
            tokens,
            on_ready=self._stream_ready,
            on_events=self._stream_events,
            on_status=self._stream_status,
            on_error=self._stream_error,
            backfill_ms=int(self.settings.backfill_minutes * 60_000),
        )
        self.connect = connect
        self.link_status = LinkStatus(LinkState.CONNECTING)
        self.link_signal: Signal[LinkStatus] = Signal(self, "link")
        self.hub_signal: Signal[Changes] = Signal(self, "hub")
        self.presets: list[Preset] = []
        self.profiles: list[ConstraintProfile] = []
        self._colors: dict[str, str] = {}
        self._last_estop: tuple[int, int, int, int] | None = None
        self._last_key = 0.0
        self._last_full_gc = time.monotonic()
        if self.settings.theme:
            self.theme = self.settings.theme

    # -- lifecycle ---------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from tui.screens.control_center import ControlCenterScreen

        # A full collection pauses the screen for 100-200 ms while output streams (measured with
        # gc.callbacks): keep what start-up built out of every collection, leave the young
        # generations to the collector, and run the full passes ourselves when no key was pressed
        # for a while.
        gc.collect()
        gc.freeze()
        gc.set_threshold(700, 10, 1_000_000)
        self.set_interval(FULL_GC_EVERY_S, self._full_gc_when_quiet)

        if not self.is_headless and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            # The terminal closed: leave like a quit. Uncaught, SIGHUP kills the process before the
            # driver restores anything; raised as an exception inside the app, it left the driver's
            # threads running, and `onsembl up` waiting for them after it had stopped its children.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.exit)
        if self.settings.keys:
            self.set_keymap(self.settings.keys)
        self.push_screen(ControlCenterScreen())
        if self.connect:
            self.run_worker(self.stream.run(), name="hub-stream", group="hub-stream", exclusive=True)
            self.load_reference_data()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self._last_key = time.monotonic()
        await super().on_event(event)

    def _full_gc_when_quiet(self) -> None:
        now = time.monotonic()
        if now - self._last_key >= QUIET_BEFORE_GC_S or now - self._last_full_gc >= FULL_GC_AT_LEAST_S:
            gc.collect()
            self._last_full_gc = now

    async def on_unmount(self) -> None:
        await self.api.aclose()

    # -- the stream --------------------------------------------------------------------------------
    def _stream_ready(self, ready: DashboardReady) -> None:
        changes = self.hub.set_agents(ready.payload.agents)
        self.post_message(messages.HubReady(ready))
        self.hub_signal.publish(changes)
        if not ready.payload.resumed and self.stream.connects > 1:
            self.notify("the hub could not replay everything missed; state was reloaded", severity="warning")

    def _stream_events(self, events: Sequence[StreamEnvelope]) -> None:
        changes = self.hub.apply(events)
        if not changes:
            return
        self.hub_signal.publish(changes)
        self.post_message(messages.HubChanged(changes))
        for request in changes.input_required:
            self.alert_input(request)
        for result in changes.emergency_stops:
            self.notify_emergency_stop(result)
        for status in changes.ended:
            self.notify_ended(status)
        if changes.gaps:
            self.refill(changes.gaps)
        for report in changes.reports:
            self.notify(f"{report.title}", title="Report ready")

    def _stream_status(self, status: LinkStatus) -> None:
        self.link_status = status
        self.link_signal.publish(status)
        self.post_message(messages.LinkChanged(status))

    def _stream_error(self, error: Error) -> None:
        self.notify(error.payload.message, title=f"Hub: {error.payload.code.value}", severity="error")

    @work(group="refill")
    async def refill(self, gaps: list[Gap]) -> None:
        for gap in gaps:
            try:
                page = await self.api.output(
                    gap.command_id,
                    agent_id=gap.agent_id,
                    after=gap.after,
                    limit=min(5000, gap.until - gap.after),
                )
            except HubError:
                continue
            added = self.hub.refill(line for line in page.items if line.sequence < gap.until)
            if added:
                changes = Changes(output=added)
                self.hub_signal.publish(changes)

    @work(group="reference", exclusive=True)
    async def load_reference_data(self) -> None:
        try:
            self.profiles = list((await self.api.constraints()).items)
            self.presets = list((await self.api.presets()).items)
        except HubError:
            return  # the stream's banner says what is wrong; these load again on reconnect
        from tui.widgets.command_bar import CommandBar

        for screen in self.screen_stack:  # the control center's bar (under whatever is on top)
            for bar in screen.query(CommandBar):
                bar.set_profiles(self.profiles)

    def on_hub_ready(self, event: messages.HubReady) -> None:
        if not self.profiles and not self.presets:
            self.load_reference_data()

    # -- what screens ask for ----------------------------------------------------------------------
    def update_header(self, header: HubHeader) -> None:
        hub = self.hub
        header.url = self.settings.hub_label or self.server_url
        header.link = self.link_status.state
        header.online = hub.online
        header.total = len(hub.agents)
        header.busy = hub.busy
        header.queued = hub.queued
        header.needs_input = hub.needs_input

    def agent_label(self, agent_id: str) -> tuple[str, str]:
        colour = self._colors.get(agent_id)
        if colour is None:
            colour = self._colors[agent_id] = fmt.AGENT_COLORS[len(self._colors) % len(fmt.AGENT_COLORS)]
        return self.hub.agent_name(agent_id), colour

    def latest_command_of(self, agent_id: str) -> str | None:
        agent = self.hub.agents.get(agent_id)
        if agent is not None and agent.current_command_id:
            return agent.current_command_id
        for command_id, execution_agent in reversed(self.hub.executions):
            if execution_agent == agent_id:
                return command_id
        return None

    def submit_draft(self, draft: CommandDraft, selected: str | None, marked: frozenset[str]) -> None:
        if draft.preset is not None:
            self.use_preset_named(draft.preset)
            return
        hub = self.hub
        broadcast = False
        targets: list[str] = []
        if draft.names:
            for name in draft.names:
                agent = hub.agent_by_name(name)
                if agent is None:
                    self.notify(
                        f"there is no agent named {name!r}", title="Command not sent", severity="error"
                    )
                    return
                targets.append(agent.id)
        elif draft.mode is TargetMode.ALL:
            broadcast = True
        elif draft.mode is TargetMode.MARKED:
            targets = sorted(marked)
        elif selected is not None:
            targets = [selected]
        if not targets and not broadcast:
            self.notify(
                "pick an agent first (arrows, 1-9, space to mark)", title="Command not sent", severity="error"
            )
            return
        offline = [hub.agent_name(t) for t in targets if hub.agents[t].status is not AgentStatus.ONLINE]
        if offline and not draft.queue_if_offline:
            self.notify(
                f"{', '.join(offline)} {'is' if len(offline) == 1 else 'are'} offline; "
                "tick 'queue if offline' to queue until it returns",
                title="Command not sent",
                severity="error",
            )
            return
        constraints = None
        if draft.time_limit_ms or draft.token_budget:
            constraints = ExecutionConstraints(
                time_limit_ms=draft.time_limit_ms, token_budget=draft.token_budget
            )
        request = CommandCreate(
            content=draft.text,
            type=draft.verb,
            target_agents=None if broadcast else targets,
            broadcast=broadcast,
            priority=draft.priority,
            execution_constraints=constraints,
            constraint_profile_id=draft.profile_id if constraints is None else None,
            queue_if_offline=draft.queue_if_offline,
        )
        names = ["all"] if broadcast else [hub.agent_name(t) for t in targets]
        self.post_message(messages.CommandSending(request, names))
        self.send_command(request)

    @work(group="send")
    async def send_command(self, request: CommandCreate) -> None:
        try:
            command = await self.api.create_command(request)
        except HubError as exc:
            self.post_message(messages.CommandRefused(request, exc.message))
            return
        self.post_message(messages.CommandSent(command))

    def on_command_sent(self, event: messages.CommandSent) -> None:
        from tui.widgets.command_bar import CommandBar

        command = event.command
        names = ", ".join(e.agent_name or self.hub.agent_name(e.agent_id) for e in command.executions)
        queued = [e for e in command.executions if e.queue_position]
        where = f" (queued at {queued[0].queue_position})" if len(queued) == 1 else ""
        self.notify(f"{command.type.value.lower()} → {names}{where}", title="Sent")
        for bar in self.screen.query(CommandBar):
            bar.clear_text()

    def on_command_refused(self, event: messages.CommandRefused) -> None:
        self.notify(event.reason, title="Command not sent", severity="error")

    def control_agent(self, agent_id: str, action: ControlAction, reason: str = "") -> None:
        name = self.hub.agent_name(agent_id)
        if action in (ControlAction.STOP, ControlAction.RESTART):
            from tui.screens.confirm import ConfirmScreen

            verb = "start a new session for" if reason == "new session" else action.value.lower()
            question = f"{verb.capitalize()} {name}? Its running command is cancelled."

            def answered(yes: bool | None) -> None:
                if yes:
                    self.send_control(agent_id, action, reason)

            self.push_screen(ConfirmScreen(question, action.value.capitalize()), answered)
        else:
            self.send_control(agent_id, action, reason)

    @work(group="control")
    async def send_control(self, agent_id: str, action: ControlAction, reason: str) -> None:
        name = self.hub.agent_name(agent_id)
        try:
            result = await self.api.control(agent_id, action, reason or "from the TUI")
        except HubError as exc:
            self.notify(exc.message, title=f"{action.value.capitalize()} {name}", severity="error")
            return
        state = "done" if result.delivered else "recorded (agent offline)"
        self.notify(f"{action.value.lower()} {name}: {state}")

    def alert_input(self, request: InputRequiredPayload) -> None:
        if self.settings.bell:
            self.bell()
        name = request.agent_name or self.hub.agent_name(request.agent_id)
        hint = "press y to answer" if request.can_answer else "it was denied; change its permissions"
        self.notify(
            f"{name} wants to use {request.tool_name}: {hint}",
            title="Needs input",
            severity="warning",
            timeout=20,
        )

    def ask_approval(self, request: InputRequiredPayload) -> None:
        from tui.screens.approval import ApprovalScreen

        def answered(allow: bool | None) -> None:
            if allow is not None:
                self.send_approval(request, allow)

        self.push_screen(ApprovalScreen(request), answered)

    @work(group="control")
    async def send_approval(self, request: InputRequiredPayload, allow: bool) -> None:
        answer = InputAnswer(request_id=request.request_id, allow=allow, agent_id=request.agent_id)
        try:
            await self.api.answer_input(request.command_id, answer)
        except HubError as exc:
            self.notify(exc.message, title="Answer not delivered", severity="error")
            return
        self.notify(f"{'allowed' if allow else 'denied'}: {request.tool_name}")

    # -- navigation --------------------------------------------------------------------------------
    def open_queue(self, agent_id: str) -> None:
        from tui.screens.queue import QueueScreen

        self.push_screen(QueueScreen(agent_id))

    def open_trace(self, command_id: str) -> None:
        from tui.screens.trace import TraceScreen

        self.push_screen(TraceScreen(command_id))

    def open_changes(self, command_id: str, agent_id: str | None = None) -> None:
        from tui.screens.changes import ChangesScreen

        self.push_screen(ChangesScreen(command_id, agent_id))

    def open_command(self, command_id: str) -> None:
        from tui.screens.command_detail import CommandDetailScreen

        self.push_screen(CommandDetailScreen(command_id))

    def open_history(self, query: str = "") -> None:
        from tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen(query))

    def open_audit(self) -> None:
        from tui.screens.audit import AuditScreen

        self.push_screen(AuditScreen())

    def open_reports(self) -> None:
        from tui.screens.reports import ReportsScreen

        self.push_screen(ReportsScreen())

    def open_presets(self) -> None:
        from tui.screens.presets import PresetsScreen

        self.push_screen(PresetsScreen())

    def show_control_center(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def use_preset_named(self, name: str) -> None:
        preset = next((p for p in self.presets if p.name.lower() == name.lower()), None)
        if preset is None:
            self.notify(f"there is no preset named {name!r}", title="Preset", severity="error")
            return
        self.use_preset(preset)

    def use_preset(self, preset: Preset) -> None:
        """Ask for the preset's variables (if any), then put it in the control center's bar."""
        from tui.screens.variables_form import VariablesFormScreen, fill_variables

        def fill(values: dict[str, str] | None) -> None:
            if values is None:
                return
            self.show_control_center()
            from tui.screens.control_center import ControlCenterScreen

            screen = self.screen
            if isinstance(screen, ControlCenterScreen):
                screen.load_preset(preset, fill_variables(preset.content, values))

        if preset.variables:
            self.push_screen(VariablesFormScreen(preset), fill)
        else:
            fill({})

    async def action_back(self) -> None:
        self.go_back()

    def go_back(self) -> None:
        # Never below the control center (the stack's bottom is Textual's default screen).
        if len(self.screen_stack) > 2:
            self.pop_screen()

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen(self.screen))

    def action_command_mode(self) -> None:
        from tui.screens.command_line import CommandLineScreen

        self.push_screen(CommandLineScreen(), self.run_command_line)

    def run_command_line(self, line: str | None) -> None:
        if not line:
            return
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        word = word.lower()
        if word in ("agents", "a", "home"):
            self.show_control_center()
        elif word in ("queue", "q"):
            agent = self.hub.agent_by_name(rest) if rest else None
            if agent is not None:
                self.open_queue(agent.id)
            elif rest:
                self.notify(f"there is no agent named {rest!r}", severity="error")
            else:
                self.notify("which agent? :queue NAME", severity="warning")
        elif word in ("history", "h"):
            self.open_history(rest)
        elif word == "audit":
            self.open_audit()
        elif word in ("reports", "r"):
            self.open_reports()
        elif word in ("presets", "p"):
            self.open_presets()
        elif word in ("trace", "changes", "open"):
            if not rest:
                self.notify(f"which command? :{word} COMMAND_ID", severity="warning")
            else:
                {"trace": self.open_trace, "changes": self.open_changes, "open": self.open_command}[word](
                    rest
                )
        elif word in ("estop", "emergency-stop"):
            self.action_emergency_stop()
        elif word in ("quit", "q!", "exit"):
            self.exit()
        else:
            self.notify(f"unknown command :{word} (press ? for the list)", severity="error")

    def action_emergency_stop(self) -> None:
        from tui.screens.confirm import ConfirmScreen

        if isinstance(self.screen, ConfirmScreen):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.emergency_stop()

        self.push_screen(
            ConfirmScreen(
                "EMERGENCY STOP: cancel every running command on every agent and clear every queue?",
                "Stop everything",
            ),
            answered,
        )

    def notify_ended(self, status: CommandStatusPayload) -> None:
        """A command failed, or a limit or a lost agent stopped it: say so wherever the user is."""
        agent = self.hub.agents.get(status.agent_id)
        name = agent.name if agent is not None else fmt.short_id(status.agent_id)
        failed = status.status is ExecutionStatus.FAILED
        reason = status.end_reason.value.replace("_", " ").lower() if status.end_reason else ""
        title = "Command failed" if failed else f"Command stopped: {reason}"
        self.notify(
            f"{name}: {status.error or reason or 'failed'} (command {fmt.short_id(status.command_id)})",
            title=title,
            severity="error" if failed else "warning",
            timeout=15,
        )

    def notify_emergency_stop(self, result: EmergencyStopResult) -> None:
        """Once per stop: the one who pressed the key hears it from REST and from the stream."""
        figures = (result.cancelled_running, result.cleared_queued, result.agents, result.duration_ms)
        if figures == self._last_estop:
            return
        self._last_estop = figures
        unsettled = (
            f"; {result.unsettled} not yet confirmed by their agents (ended after the grace period)"
            if result.unsettled
            else ""
        )
        self.notify(
            f"stopped {result.cancelled_running} running, cleared {result.cleared_queued} queued "
            f"on {result.agents} agent{'' if result.agents == 1 else 's'} in {result.duration_ms} ms"
            f"{unsettled}",
            title="Emergency stop",
            severity="warning",
            timeout=30,
        )

    @work(group="estop", exclusive=True)
    async def emergency_stop(self) -> None:
        try:
            result = await self.api.emergency_stop("emergency stop from the TUI")
        except HubError as exc:
            self.notify(exc.message, title="Emergency stop FAILED", severity="error", timeout=30)
            return
        self.notify_emergency_stop(result)
