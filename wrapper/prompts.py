"""What each verb asks of the agent: the user's text wrapped in a prompt for that kind of work."""

from __future__ import annotations

from shared.enums import CommandType

REPORT_SCHEMA = """{
  "title": "short title",
  "summary": "two or three sentences",
  "sections": [{"title": "...", "content": "markdown"}],
  "findings": [{"title": "...", "severity": "CRITICAL|HIGH|MEDIUM|LOW|INFO",
                "description": "...", "evidence": ["file:line or command output", "..."]}],
  "recommendations": ["...", "..."]
}"""

_TEMPLATES = {
    CommandType.INVESTIGATE: (
        "Investigate the following. Read the code and run what you need, but change nothing.\n\n"
        "{text}\n\n"
        "End your answer with your report as one fenced ```json block of this shape:\n" + REPORT_SCHEMA
    ),
    CommandType.REVIEW: (
        "Review the following for correctness, security, performance and readability. Point to files "
        "and lines, rank the issues by severity, and suggest concrete fixes. Change nothing.\n\n{text}"
    ),
    CommandType.PLAN: (
        "Make a step-by-step implementation plan for the following. List the files to change, the "
        "order of the work, the risks and how to test it. Do not change any file yet.\n\n{text}"
    ),
    CommandType.SYNTHESIZE: (
        "Synthesize the following into one concise, well-structured summary: the key points, where the "
        "sources agree and disagree, and what remains open.\n\n{text}"
    ),
}


def build_prompt(kind: CommandType, text: str) -> str:
    template = _TEMPLATES.get(kind)
    # The schema has braces of its own: substitute, do not format.
    return text if template is None else template.replace("{text}", text)
