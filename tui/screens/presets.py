"""Saved commands: list, create, edit, delete, and use one (its variables asked in a form)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Label

from shared.api import Preset, PresetCreate
from tui.client.rest import HubError
from tui.screens.base import BaseScreen


class PresetsScreen(BaseScreen):
    DEFAULT_CSS = """
    PresetsScreen #presets-title { height: 1; padding: 0 1; background: $boost; }
    PresetsScreen DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.back", "Back", id="back"),
        Binding("u", "use", "Use", id="presets_use"),
        Binding("n", "new", "New", id="presets_new"),
        Binding("e", "edit", "Edit", id="presets_edit"),
        Binding("d,delete", "delete", "Delete", id="presets_delete"),
        Binding("ctrl+r", "reload", "Reload", id="presets_reload"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Label("[b]Presets[/b]", id="presets-title")
        yield DataTable(id="presets", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("Name", key="name", width=20)
        table.add_column("Type", key="type", width=11)
        table.add_column("Variables", key="variables", width=18)
        table.add_column("Used", key="used", width=5)
        table.add_column("Description", key="description")
        table.focus()
        self.show(self.onsembl.presets)  # the app's cached list first, then the hub's
        self.load()

    @property
    def presets(self) -> list[Preset]:
        return self.onsembl.presets

    def show(self, presets: list[Preset], select: str | None = None) -> None:
        table = self.query_one(DataTable)
        keep = select or (self.selected.id if self.selected else None)
        table.clear()
        for preset in presets:
            table.add_row(
                preset.name,
                preset.type.value,
                ", ".join(preset.variables) or "-",
                Text(str(preset.usage_count), justify="right"),
                " ".join(preset.description.split()),
                key=preset.id,
            )
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep))
        count = len(presets)
        self.query_one("#presets-title", Label).update(
            f"[b]Presets[/b]  {count} preset{'s' if count != 1 else ''}   "
            "u/enter use · n new · e edit · d delete"
        )

    @work(exclusive=True, group="presets-load")
    async def load(self, select: str | None = None) -> None:
        try:
            page = await self.onsembl.api.presets()
        except HubError as exc:
            self.notify(exc.message, title="Presets", severity="error")
            return
        # The app's copy feeds the command bar's completion: keep it the hub's.
        self.onsembl.presets = list(page.items)
        self.show(self.onsembl.presets, select)

    @property
    def selected(self) -> Preset | None:
        table = self.query_one(DataTable)
        if not table.row_count or not 0 <= table.cursor_row < table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((p for p in self.presets if p.id == key), None)

    def action_reload(self) -> None:
        self.load()

    def action_use(self) -> None:
        if (preset := self.selected) is not None:
            self.onsembl.use_preset(preset)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_use()

    def action_new(self) -> None:
        from tui.screens.preset_form import PresetFormScreen

        def saved(body: PresetCreate | None) -> None:
            if body is not None:
                self.save(None, body)

        self.app.push_screen(PresetFormScreen(None), saved)

    def action_edit(self) -> None:
        preset = self.selected
        if preset is None:
            return
        from tui.screens.preset_form import PresetFormScreen

        def saved(body: PresetCreate | None) -> None:
            if body is not None:
                self.save(preset.id, body)

        self.app.push_screen(PresetFormScreen(preset), saved)

    @work(group="presets-change")
    async def save(self, preset_id: str | None, body: PresetCreate) -> None:
        api = self.onsembl.api
        try:
            preset = await (
                api.create_preset(body) if preset_id is None else api.update_preset(preset_id, body)
            )
        except HubError as exc:
            self.notify(exc.message, title="Preset not saved", severity="error")
            return
        self.notify(f"{preset.name} {'created' if preset_id is None else 'saved'}", title="Preset")
        self.load(preset.id)

    def action_delete(self) -> None:
        preset = self.selected
        if preset is None:
            return
        from tui.screens.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete(preset)

        self.app.push_screen(ConfirmScreen(f"Delete the preset {preset.name!r}?", "Delete"), answered)

    @work(group="presets-change")
    async def delete(self, preset: Preset) -> None:
        try:
            await self.onsembl.api.delete_preset(preset.id)
        except HubError as exc:
            self.notify(exc.message, title="Preset not deleted", severity="error")
            return
        self.notify(f"{preset.name} deleted", title="Preset")
        self.load()
