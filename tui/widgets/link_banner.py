"""A one-line banner over every screen while the hub connection is down."""

from __future__ import annotations

from textual.widgets import Static

from tui.client.stream import LinkState, LinkStatus


class LinkBanner(Static):
    DEFAULT_CSS = """
    LinkBanner {
        dock: top;
        height: 1;
        display: none;
        background: $error;
        color: $text;
        text-style: bold;
        padding: 0 1;
        &.-visible { display: block; }
    }
    """

    def show_status(self, status: LinkStatus) -> None:
        if status.state is LinkState.CONNECTED:
            self.remove_class("-visible")
            return
        if status.state is LinkState.CONNECTING and status.attempt <= 1:
            return  # the first attempt: nothing lost yet
        if status.state is LinkState.CONNECTING:
            message = f"Hub connection lost; reconnecting (attempt {status.attempt}) ..."
        else:
            message = f"Hub connection lost: {status.detail}; retrying in {status.retry_in:.1f}s"
        self.update(message)
        self.add_class("-visible")
