"""Preset text: ``{{variables}}`` are found and filled the same way by the hub and the TUI."""

from __future__ import annotations

import re

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def variables_of(content: str) -> list[str]:
    """The ``{{variables}}`` of a preset's text, in order of first use."""
    return list(dict.fromkeys(VARIABLE.findall(content)))


def fill_variables(content: str, values: dict[str, str]) -> str:
    """Replace each ``{{name}}`` with its value; a name without a value stays as written."""
    return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), content)
