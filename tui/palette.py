"""The command palette (ctrl+p): every action of the app and of the current screen, every screen,
and each agent's queue."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from tui.app import OnsemblApp


class OnsemblCommands(Provider):
    @property
    def onsembl(self) -> OnsemblApp:
        return cast("OnsemblApp", self.app)

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.onsembl
        commands: list[tuple[str, str, Callable[[], object]]] = [
            ("Emergency stop", "stop every running command and clear every queue", app.action_emergency_stop),
            ("Agents", "the control center", app.show_control_center),
            ("History", "past commands, searchable", app.open_history),
            ("Audit trail", "every action, searchable", app.open_audit),
            ("Reports", "investigation reports", app.open_reports),
            ("Presets", "saved commands", app.open_presets),
            ("Help", "every key of this screen", app.action_help),
        ]
        for agent in app.hub.sorted_agents():
            commands.append(
                (f"Queue: {agent.name}", f"the queue of {agent.name}", partial(app.open_queue, agent.id))
            )
        for preset in app.presets:
            commands.append(
                (f"Use preset: {preset.name}", preset.description, partial(app.use_preset, preset))
            )
        # The current screen's own keys, by their descriptions.
        screen = self.screen
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if not binding.description or binding.description in seen or active.node is app:
                continue
            seen.add(binding.description)
            action = binding.action
            commands.append(
                (
                    binding.description,
                    f"key {app.get_key_display(binding)}",
                    partial(_run, active.node, action),
                )
            )
        return commands

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


def _run(node: object, action: str) -> None:
    from textual.dom import DOMNode

    if isinstance(node, DOMNode):
        node.app.call_later(node.app.run_action, action, node)
