"""One adapter per agent CLI: how to invoke it for a command, and how to read what it prints."""

from __future__ import annotations

from wrapper.adapters.base import Adapter
from wrapper.adapters.claude import ClaudeAdapter
from wrapper.adapters.codex import CodexAdapter
from wrapper.adapters.gemini import GeminiAdapter
from wrapper.adapters.shell import ShellAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "claude": ClaudeAdapter,
    "gemini": GeminiAdapter,
    "codex": CodexAdapter,
    "shell": ShellAdapter,
}

__all__ = ["ADAPTERS", "Adapter", "ClaudeAdapter", "CodexAdapter", "GeminiAdapter", "ShellAdapter"]
