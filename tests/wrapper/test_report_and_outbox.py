from __future__ import annotations

import asyncio
import json
from pathlib import Path

from shared.enums import CommandType, ReportStatus, Severity
from shared.protocol import AgentHeartbeat, AgentHeartbeatPayload, HealthMetrics
from wrapper.outbox import Outbox
from wrapper.prompts import build_prompt
from wrapper.report import extract


def test_investigate_prompt_asks_for_the_report_and_natural_is_untouched() -> None:
    prompt = build_prompt(CommandType.INVESTIGATE, "why is login slow")
    assert "why is login slow" in prompt and "```json" in prompt and '"findings"' in prompt
    assert build_prompt(CommandType.NATURAL, "just do it") == "just do it"
    assert "plan" in build_prompt(CommandType.PLAN, "x").lower()


def test_report_extracted_from_the_last_json_block() -> None:
    answer = (
        'I looked around.\n```json\n{"not": "this"}\n```\nFinal:\n```json\n'
        + json.dumps(
            {
                "title": "Slow login",
                "summary": "N+1 queries.",
                "sections": [{"title": "Context", "content": "The view."}],
                "findings": [
                    {"title": "N+1", "severity": "high", "description": "d", "evidence": ["views.py:10"]}
                ],
                "recommendations": ["Use select_related"],
            }
        )
        + "\n```\n"
    )
    status, title, summary, content = extract(answer)
    assert (status, title, summary) == (ReportStatus.COMPLETE, "Slow login", "N+1 queries.")
    assert content.findings[0].severity is Severity.HIGH and content.findings[0].evidence == ["views.py:10"]
    assert content.recommendations == ["Use select_related"]


def test_malformed_report_is_a_draft_with_the_raw_text() -> None:
    answer = '# Findings\nThe cache is cold.\n```json\n{"title": "x", broken\n```'
    status, title, _, content = extract(answer)
    assert status is ReportStatus.DRAFT and title.startswith("Draft: Findings")
    assert content.raw == answer


async def test_outbox_spills_to_disk_and_keeps_order(tmp_path: Path) -> None:
    outbox = Outbox(spill_path=tmp_path / "spill.jsonl", memory_limit=10)
    sent = []
    for n in range(35):
        outbox.put(
            AgentHeartbeat(
                payload=AgentHeartbeatPayload(
                    agent_id="a", health_metrics=HealthMetrics(commands_processed=n)
                )
            )
        )
    assert len(outbox) == 35 and outbox.spilled_total == 25
    while len(outbox):
        frame = await asyncio.wait_for(outbox.next(), 1)
        sent.append(json.loads(frame)["payload"]["healthMetrics"]["commandsProcessed"])
        outbox.sent()
    assert sent == list(range(35))
    # After a reconnect the recent ones go again, first.
    outbox.put(
        AgentHeartbeat(
            payload=AgentHeartbeatPayload(agent_id="a", health_metrics=HealthMetrics(commands_processed=99))
        )
    )
    outbox.rewind()
    replay = []
    while len(outbox):
        replay.append(json.loads(await outbox.next())["payload"]["healthMetrics"]["commandsProcessed"])
        outbox.sent()
    assert replay[-1] == 99 and replay[:-1] == list(range(35))
