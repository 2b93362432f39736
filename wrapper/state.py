"""What an agent keeps across restarts, in its state dir: the CLI session to continue."""

from __future__ import annotations

import json
import os
from pathlib import Path


class AgentState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = directory / "state.json"
        self._data: dict[str, str | None] = {}
        if self._file.exists():
            try:
                loaded = json.loads(self._file.read_text())
                if isinstance(loaded, dict):
                    self._data = loaded
            except (OSError, ValueError):
                self._data = {}

    @property
    def session_id(self) -> str | None:
        value = self._data.get("session_id")
        return value if isinstance(value, str) and value else None

    def set_session(self, session_id: str | None) -> None:
        self._data["session_id"] = session_id
        self._save()

    def _save(self) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data))
        os.replace(tmp, self._file)
