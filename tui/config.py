"""The TUI's own settings: theme, bell, scrollback, key remapping. From ``ONSEMBL_TUI_*`` variables
or a TOML file (``ONSEMBL_TUI_CONFIG``, default ``tui.toml`` in the user's config dir)::

    theme = "gruvbox"
    bell = true
    scrollback = 20000
    [keys]                      # binding id = keys (comma separated); `onsembl-tui --keys` lists the ids
    emergency_stop = "ctrl+x,f12"
    queue = "enter,q"
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import EnvThenToml


def config_path() -> Path:
    override = os.environ.get("ONSEMBL_TUI_CONFIG")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir("onsembl")) / "tui.toml"


def state_dir() -> Path:
    return Path(platformdirs.user_state_dir("onsembl"))


class TuiSettings(EnvThenToml):
    model_config = SettingsConfigDict(env_prefix="ONSEMBL_TUI_", extra="ignore")

    #: A Textual theme name (textual-dark, gruvbox, nord, ...; ctrl+p "theme" lists them).
    theme: str = "textual-dark"
    #: Shown in the header instead of the hub's URL (when you run several hubs: "prod", "laptop").
    hub_label: str = ""
    #: Ring the terminal bell once when an agent starts waiting for an approval.
    bell: bool = True
    #: Output lines kept in memory (combined stream, and per agent); older ones come from the hub.
    scrollback: int = Field(default=10_000, ge=100, le=1_000_000)
    #: On start, show what happened in the last minutes (output, statuses), replayed by the hub.
    backfill_minutes: float = Field(default=10.0, ge=0, le=24 * 60)
    #: Show a time on every output line (``t`` toggles).
    timestamps: bool = True
    #: Wrap long output lines (``w`` toggles).
    wrap: bool = False
    #: Binding id -> keys, e.g. {"emergency_stop": "ctrl+x,f12"}.
    keys: dict[str, str] = Field(default_factory=dict)
    #: Where sent commands are remembered for up/down (empty: none kept on disk).
    history_file: Path | None = Field(default_factory=lambda: state_dir() / "command-history")

    @classmethod
    def toml_path(cls) -> Path | None:
        path = config_path()
        return path if path.is_file() else None
