"""The command bar's target label: a fixed width, so that following the agents table's cursor (every
key press there) never re-lays the screen."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Label

from tui.widgets.command_bar import TARGET_LABEL_WIDTH, CommandBar


class BarApp(App[None]):
    def compose(self) -> ComposeResult:
        yield CommandBar(agents=list, presets=list)


async def test_the_target_label_keeps_its_width_and_does_not_re_lay_the_screen() -> None:
    app = BarApp()
    async with app.run_test(size=(100, 10)) as pilot:
        bar = app.query_one(CommandBar)
        label = app.query_one("#target", Label)
        relaid: list[bool] = []
        original = label.refresh

        def refresh(*regions: object, **flags: bool) -> object:
            relaid.append(flags.get("layout", False))
            return original(*regions, **flags)  # type: ignore[arg-type]

        label.refresh = refresh  # type: ignore[method-assign]
        for name in ("a", "a-much-longer-agent-name-than-fits", "b"):
            bar.set_target_label(name)
            await pilot.pause()
            assert label.outer_size.width == TARGET_LABEL_WIDTH
        bar.set_target_label("b")  # unchanged: nothing to draw
        assert relaid == [False, False, False]
        bar.set_target_label("a-much-longer-agent-name-than-fits")
        await pilot.pause()
        shown = label.render_line(0).text
        assert shown.startswith("→ a-much") and shown.rstrip().endswith("…")
