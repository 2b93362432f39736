"""Log lines: JSON with the context they were logged in, and never a token."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared.logs import bind_log_context, log_context, setup_logging

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:], level = saved
    root.setLevel(level)


def setup(stream: io.StringIO, level: str = "INFO", *, json_logs: bool = True) -> None:
    """The processes' own logging set-up, writing to ``stream`` instead of stderr."""
    setup_logging(level, json_logs=json_logs)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def lines(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_their_context_and_no_token(captured: io.StringIO) -> None:
    setup(captured)
    log = logging.getLogger("onsembl.test")
    with log_context(request_id="r-1", command_id="c-1"):
        log.info("sent with Bearer %s to ws://hub/ws?token=%s", JWT, "abc.def")
        with log_context(agent_id="a-1"):
            log.warning("nested")
    log.info("outside")
    first, nested, outside = lines(captured)
    assert first["request_id"] == "r-1" and first["command_id"] == "c-1"
    assert JWT not in captured.getvalue() and "abc.def" not in captured.getvalue()
    assert "Bearer ***" in first["message"] and "token=***" in first["message"]
    assert nested["agent_id"] == "a-1" and nested["request_id"] == "r-1" and nested["level"] == "WARNING"
    assert "request_id" not in outside and "agent_id" not in outside


def test_a_token_in_an_exception_is_redacted(captured: io.StringIO) -> None:
    setup(captured)
    try:
        raise ValueError(f"refused {JWT}")
    except ValueError:
        logging.getLogger("onsembl.test").exception("failed")
    (entry,) = lines(captured)
    assert JWT not in captured.getvalue()
    assert "***jwt***" in entry["exception"]


async def test_each_task_keeps_its_own_bound_context(captured: io.StringIO) -> None:
    setup(captured)
    log = logging.getLogger("onsembl.test")

    async def socket(agent_id: str) -> None:
        bind_log_context(agent_id=agent_id)
        await asyncio.sleep(0)
        log.info("from %s", agent_id)

    await asyncio.gather(socket("a-1"), socket("a-2"))
    log.info("the loop itself")
    by_message = {entry["message"]: entry for entry in lines(captured)}
    assert by_message["from a-1"]["agent_id"] == "a-1"
    assert by_message["from a-2"]["agent_id"] == "a-2"
    assert "agent_id" not in by_message["the loop itself"]


def test_text_lines_put_the_context_after_the_message(captured: io.StringIO) -> None:
    setup(captured, "DEBUG", json_logs=False)
    with log_context(command_id="c-9"):
        logging.getLogger("onsembl.test").debug("hello")
    assert captured.getvalue().rstrip().endswith("onsembl.test: hello  command_id=c-9")
