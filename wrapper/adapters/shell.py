"""``shell``: any program; each command's text is its last argument (``-- bash -lc``)."""

from __future__ import annotations

from shared.enums import AgentType, StreamType
from wrapper.adapters.base import Adapter, Invocation, Reporter, StreamParser


class TextParser(StreamParser):
    def feed(self, line: str) -> None:
        self.reporter.output(StreamType.STDOUT, line)


class ShellAdapter(Adapter):
    agent_type = AgentType.SHELL

    def __init__(self, extra_args: list[str] | None = None) -> None:
        super().__init__(extra_args or ["bash", "-lc"])
        self.program = self.extra_args[0]

    def invocation(self, prompt: str, session_id: str | None) -> Invocation:
        return Invocation(argv=[*self.extra_args, prompt])

    def parser(self, reporter: Reporter) -> StreamParser:
        return TextParser(reporter)
