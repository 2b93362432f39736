"""The top line: product, hub URL, link state, and the counts a user scans for."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from tui.client.stream import LinkState

LINK_STYLE = {
    LinkState.CONNECTED: ("●", "bold green"),
    LinkState.CONNECTING: ("◌ connecting", "bold yellow"),
    LinkState.DISCONNECTED: ("○ disconnected", "bold red"),
    LinkState.AUTH_FAILED: ("✖ token refused", "bold red"),
}


class HubHeader(Static):
    DEFAULT_CSS = """
    HubHeader { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """

    url: reactive[str] = reactive("")
    link: reactive[LinkState] = reactive(LinkState.CONNECTING)
    online: reactive[int] = reactive(0)
    total: reactive[int] = reactive(0)
    busy: reactive[int] = reactive(0)
    queued: reactive[int] = reactive(0)
    needs_input: reactive[int] = reactive(0)

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("Onsembl ", "bold magenta")
        state, style = LINK_STYLE[self.link]
        text.append(state, style)
        text.append(f" {self.url}  ", "dim")
        text.append(f"{self.online}/{self.total}", "bold")
        text.append(" online ", "dim")
        text.append(str(self.busy), "bold cyan")
        text.append(" busy ", "dim")
        text.append(str(self.queued), "bold blue")
        text.append(" queued", "dim")
        if self.needs_input:
            text.append("  ")
            text.append(f" {self.needs_input} NEED INPUT ", "bold black on yellow")
        return text
