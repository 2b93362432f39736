"""The app's steps as explicit messages, posted to the app in order (tests assert the sequence):

CommandBar.Submitted -> CommandSending -> CommandSent | CommandRefused
HubReady -> HubChanged ... (every batch of stream events, after it is applied to the state)
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from shared.api import Command, CommandCreate
from shared.protocol import DashboardReady
from tui.client.stream import LinkStatus
from tui.state import Changes


@dataclass
class CommandSending(Message):
    request: CommandCreate
    target_names: list[str]


@dataclass
class CommandSent(Message):
    command: Command


@dataclass
class CommandRefused(Message):
    request: CommandCreate
    reason: str


@dataclass
class HubReady(Message):
    ready: DashboardReady


@dataclass
class HubChanged(Message):
    changes: Changes


@dataclass
class LinkChanged(Message):
    status: LinkStatus
