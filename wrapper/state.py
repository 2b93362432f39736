"""What an agent keeps across restarts, in its state dir: the CLI session to continue, and the
process group of each command running now (``groups/<command_id>.json``), so that a wrapper that
died mid-command can end what it left behind when it starts again (see wrapper/process.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("onsembl.agent")


@dataclass(frozen=True)
class GroupRecord:
    """A command's process group, as the wrapper that started it recorded it.

    ``create_time`` is the group leader's start time (psutil), so that a pid or pgid the system has
    since given to another process is never taken for the command's. ``owner_pid`` and
    ``owner_create_time`` are the wrapper's own: a record whose wrapper still runs is not left over.
    """

    command_id: str
    pgid: int
    pid: int
    create_time: float
    owner_pid: int
    owner_create_time: float

    @classmethod
    def from_json(cls, text: str) -> GroupRecord | None:
        try:
            data = json.loads(text)
            return cls(
                command_id=str(data["command_id"]),
                pgid=int(data["pgid"]),
                pid=int(data["pid"]),
                create_time=float(data["create_time"]),
                owner_pid=int(data["owner_pid"]),
                owner_create_time=float(data["owner_create_time"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


class AgentState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = directory / "state.json"
        self.groups_dir = directory / "groups"
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

    # ---- process groups of running commands ------------------------------------------------------

    def _group_file(self, command_id: str) -> Path:
        # Command ids are the protocol's ids (letters, digits, '-', '_'); anything else is kept out
        # of the path all the same.
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in command_id)
        return self.groups_dir / f"{safe}.json"

    def record_group(self, record: GroupRecord) -> None:
        """Remember a command's process group (written whole or not at all: atomic replace)."""
        try:
            self.groups_dir.mkdir(parents=True, exist_ok=True)
            path = self._group_file(record.command_id)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(asdict(record)))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot record the process group of command %s: %s", record.command_id, exc)

    def forget_group(self, command_id: str) -> None:
        """The command's process group has ended."""
        with contextlib.suppress(OSError):
            self._group_file(command_id).unlink(missing_ok=True)

    def group_records(self) -> list[GroupRecord]:
        """Every recorded group (unreadable records are dropped)."""
        try:
            paths = sorted(self.groups_dir.glob("*.json"))
        except OSError:
            return []
        records: list[GroupRecord] = []
        for path in paths:
            try:
                record = GroupRecord.from_json(path.read_text())
            except OSError:
                continue
            if record is None:
                log.warning("dropping an unreadable process group record %s", path)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            records.append(record)
        return records
