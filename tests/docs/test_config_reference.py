"""docs/configuration.md is generated from the settings models: it must match what they say now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", ROOT / "docs" / "gen_config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date() -> None:
    gen = generator()
    expected = gen.render()
    current = gen.OUTPUT.read_text() if gen.OUTPUT.exists() else ""
    assert current == expected, (
        "docs/configuration.md is out of date with the settings models (shared/config.py, tui/config.py) "
        f"or with the ONSEMBL_* variables the code reads. Refresh it: `{gen.REFRESH}`, and commit it."
    )


def test_every_field_is_listed() -> None:
    from shared.config import Settings
    from tui.config import TuiSettings

    text = (ROOT / "docs" / "configuration.md").read_text()
    for prefix, model in (("ONSEMBL_", Settings), ("ONSEMBL_TUI_", TuiSettings)):
        for name in model.model_fields:
            assert f"`{prefix}{name.upper()}`" in text, name
