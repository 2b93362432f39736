"""Fake `claude`, `gemini` and `codex` CLIs for tests (standard library only)."""
