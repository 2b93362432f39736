"""The load generators' shortcuts say what the protocol models say."""

from __future__ import annotations

import pytest

from benchmarks._common import SimAgent
from shared.enums import StreamType
from shared.protocol import TerminalOutput, parse_agent_message


@pytest.mark.parametrize(
    "content", ["plain", 'q"uote\\ back', "tab\t\x1b[31mred\x1b[0m \u00e9\U0001f600", "{id}"]
)
def test_sim_agent_output_parses_to_the_model_it_stands_for(content: str) -> None:
    agent = SimAgent("ws://127.0.0.1:1", "bench-1", "agent-1", "token")
    frames = [agent.output("cmd-1", sequence, content) for sequence in (0, 7)]
    messages = [parse_agent_message(frame) for frame in frames]
    for sequence, message in zip((0, 7), messages, strict=True):
        assert isinstance(message, TerminalOutput)
        payload = message.payload
        assert (payload.command_id, payload.agent_id, payload.sequence) == ("cmd-1", "agent-1", sequence)
        assert (payload.content, payload.stream_type) == (content, StreamType.STDOUT)
    assert messages[0].id != messages[1].id
