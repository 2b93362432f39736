"""What every screen of the app has: the link banner on top and the footer with its keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from tui.client.stream import LinkStatus
from tui.state import Changes
from tui.widgets.link_banner import LinkBanner

if TYPE_CHECKING:
    from tui.app import OnsemblApp


class BaseScreen(Screen[None]):
    @property
    def onsembl(self) -> OnsemblApp:
        return cast("OnsemblApp", self.app)

    def compose(self) -> ComposeResult:
        yield LinkBanner()
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        app = self.onsembl
        app.link_signal.subscribe(self, self._link_changed)
        app.hub_signal.subscribe(self, self._hub_changed)
        self._link_changed(app.link_status)

    def on_screen_resume(self) -> None:
        self._link_changed(self.onsembl.link_status)

    def _link_changed(self, status: LinkStatus) -> None:
        self.query_one(LinkBanner).show_status(status)

    def _hub_changed(self, changes: Changes) -> None:
        if self.is_current:
            self.hub_changed(changes)

    def hub_changed(self, changes: Changes) -> None:
        """Redraw what these changes touch (only called while the screen is on top)."""
