"""Write docs/configuration.md from the settings models.

    PYTHONPATH=. .venv/bin/python docs/gen_config_reference.py          # rewrite docs/configuration.md
    PYTHONPATH=. .venv/bin/python docs/gen_config_reference.py --check  # exit 1 if it is out of date

Every field of ``shared.config.Settings`` (the hub and the ``onsembl`` commands) and of
``tui.config.TuiSettings`` (``onsembl-tui``) with its environment variable, TOML key, type, default
and description. The description is the field's pydantic ``description``; where it has none, the
``#:`` comment right above the field in the source; where there is neither, a dash. The agent wrapper
has no settings model: the variables it (and the TUI) read with ``os.environ`` are found by scanning
the source and described from ``OUTSIDE_MODELS`` below, which must name every one of them.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"
REFRESH = "PYTHONPATH=. .venv/bin/python docs/gen_config_reference.py"

#: Variables read with ``os.environ`` outside the models. The generator fails when the source reads
#: one that is not here (or this names one the source no longer reads).
OUTSIDE_MODELS: dict[str, str] = {
    "ONSEMBL_CONFIG": "TOML file of the hub's settings (the table above). Default: "
    "`~/.config/onsembl/config.toml`, read only when it exists.",
    "ONSEMBL_TUI_CONFIG": "TOML file of the TUI's settings. Default: `~/.config/onsembl/tui.toml`, "
    "read only when it exists.",
    "ONSEMBL_CREDENTIALS_FILE": "Where `onsembl-tui login` keeps the tokens (mode 0600). Default: "
    "`~/.config/onsembl/credentials.json`; `--credentials` overrides it.",
    "ONSEMBL_SERVER_URL": "Hub base URL for `onsembl-agent` (`--server` overrides it), before the "
    "agent's own file (`ONSEMBL_AGENT_CONFIG`); then `server_url` of the table above, from the "
    "environment or `ONSEMBL_CONFIG`'s file, as `onsembl-tui` and `onsembl-tui login` read it.",
    "ONSEMBL_TOKEN": "Bearer token for `onsembl-agent` (an agent token; `--token` overrides it), in the "
    "same order as above; `onsembl-tui` reads `token` of the table above (an access token).",
    "ONSEMBL_AGENT_CONFIG": "`onsembl-agent`: TOML file with the keys `server`, `token`, `name`, "
    "`workdir`, `state_dir`, `heartbeat`, `log_level`, `worktree`, `args` (`--config` overrides it).",
    "ONSEMBL_AGENT_NAME": "`onsembl-agent`: the agent's name, for its log (`--name`; the token fixes "
    "which agent it is).",
    "ONSEMBL_WORKDIR": "`onsembl-agent`: working directory of the commands (`--workdir`; default: the "
    "current directory).",
    "ONSEMBL_AGENT_STATE_DIR": "`onsembl-agent`: session, unsent messages and worktree (`--state-dir`; "
    "default `~/.local/state/onsembl/agents/<agent id>`).",
    "ONSEMBL_WORKTREE": "`onsembl-agent`: any non-empty value has the same effect as `--worktree` "
    "(also `0` or `false`).",
    "ONSEMBL_HEARTBEAT_INTERVAL_S": "`onsembl-agent`: seconds between heartbeats (`--heartbeat`, "
    "default 30). The hub reads the same name as `heartbeat_interval_s` above.",
    "ONSEMBL_LOG_LEVEL": "`onsembl-agent`: DEBUG, INFO, WARNING or ERROR (`--log-level`, default INFO). "
    "The hub reads the same name as `log_level` above.",
}

#: Source read for ``os.environ`` look-ups of ONSEMBL_* names.
SCANNED = ("server", "shared", "tui", "wrapper")
_ENV_READ = re.compile(r"""(?:os\.)?environ(?:\.get\(|\[)\s*["'](ONSEMBL_[A-Z0-9_]+)["']""")


# ---- the models -------------------------------------------------------------------------------------


def models() -> list[tuple[str, type[BaseSettings], str]]:
    from shared.config import Settings
    from tui.config import TuiSettings

    return [
        (
            "Hub and `onsembl` commands: `shared.config.Settings`",
            Settings,
            "Read by `onsembl server`, `onsembl worker` (and the RQ jobs it runs), `onsembl token`, "
            "`onsembl db` and `onsembl up`. Order: command-line flags (`--host`, `--port`, `--workers`, "
            "`--log-level`), then environment variables, then the TOML file named by `ONSEMBL_CONFIG` "
            "(default `~/.config/onsembl/config.toml`, read only when it exists), top-level keys. "
            "A bad value stops the command with one line per field.",
        ),
        (
            "Terminal UI: `tui.config.TuiSettings`",
            TuiSettings,
            "Read by `onsembl-tui`. Order: environment variables, then the TOML file named by "
            "`ONSEMBL_TUI_CONFIG` (default `~/.config/onsembl/tui.toml`, read only when it exists). "
            "See [tui.md](tui.md#configuration).",
        ),
    ]


def field_comments(model: type[BaseSettings]) -> dict[str, str]:
    """The ``#:`` comment lines right above each field of the class body, and of the project's
    classes it inherits fields from."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not cls.__module__.startswith(("shared.", "tui.")):
            continue
        pending: list[str] = []
        for line in inspect.getsource(cls).splitlines():
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = re.match(r"^\s{4}([a-z_][a-z0-9_]*)\s*:", line)
            if match and pending:
                comments[match.group(1)] = " ".join(pending)
            pending = []
    return comments


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def _linux_home(factory: Callable[[], Any]) -> Any:
    """Call a default factory as for a user whose home is ``~`` and who set no XDG_* variables."""
    sentinel = "/__home__"
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    try:
        for key in saved:
            os.environ.pop(key, None)
        os.environ["HOME"] = sentinel
        value = factory()
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
    if isinstance(value, Path) and str(value).startswith(sentinel):
        return "~" + str(value)[len(sentinel) :]
    return value


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = _linux_home(field.default_factory)  # type: ignore[arg-type]
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, str) and value.startswith("~"):
        return f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list | dict):
        return f"`{value!r}`" if value else ("`[]`" if isinstance(value, list) else "`{}`")
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def model_table(model: type[BaseSettings]) -> Iterator[str]:
    prefix = str(model.model_config.get("env_prefix", ""))
    comments = field_comments(model)
    yield "| env var | TOML key | type | default | description |"
    yield "| --- | --- | --- | --- | --- |"
    for name, field in model.model_fields.items():
        kind = f"`{_type_name(field.annotation)}`"
        bounds = _bounds(field)
        if bounds:
            kind += f" ({bounds})"
        description = field.description or comments.get(name) or "-"
        cells = [f"`{prefix}{name.upper()}`", f"`{name}`", kind, _default(field), description]
        yield "| " + " | ".join(_cell(c) for c in cells) + " |"


def missing_descriptions() -> list[str]:
    """Fields with neither a pydantic description nor a ``#:`` comment."""
    missing = []
    for _, model, _ in models():
        comments = field_comments(model)
        for name, field in model.model_fields.items():
            if not field.description and name not in comments:
                missing.append(f"{model.__name__}.{name}")
    return missing


def environ_reads() -> dict[str, list[str]]:
    """ONSEMBL_* names read with os.environ, and the files that read them."""
    found: dict[str, list[str]] = {}
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _ENV_READ.findall(path.read_text()):
                where = found.setdefault(name, [])
                rel = path.relative_to(ROOT).as_posix()
                if rel not in where:
                    where.append(rel)
    return found


# ---- the page ---------------------------------------------------------------------------------------


def render() -> str:
    reads = environ_reads()
    unknown = sorted(set(reads) - set(OUTSIDE_MODELS))
    stale = sorted(set(OUTSIDE_MODELS) - set(reads))
    if unknown or stale:
        raise SystemExit(
            "docs/gen_config_reference.py: OUTSIDE_MODELS is out of step with the source: "
            f"read but not described {unknown}, described but no longer read {stale}"
        )
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by docs/gen_config_reference.py; do not edit. Refresh: {REFRESH} -->",
        "",
        "Every setting of the hub and of the TUI, from their settings models. In these two models,",
        "environment variable names are case-insensitive, and a list or table in an environment variable",
        "is written as JSON (`ONSEMBL_ALLOWED_EMAILS='[\"a@example.com\"]'`). Paths shown with `~` are",
        "Linux's defaults for a user without `XDG_*` variables (they come from `platformdirs`).",
        "Descriptions are the source's own (a dash: the source has none); the operator's guide is",
        "[operations.md](operations.md).",
    ]
    for title, model, intro in models():
        lines += ["", f"## {title}", "", intro, "", *model_table(model)]
    lines += [
        "",
        "## Variables read outside the models",
        "",
        "The agent wrapper (`onsembl-agent`) has no settings model: it takes flags, then these",
        "environment variables, then its own TOML file. The TUI and `onsembl-tui login` read some too.",
        "",
        "| env var | read in | meaning |",
        "| --- | --- | --- |",
    ]
    for name in sorted(reads):
        files = ", ".join(f"`{f}`" for f in reads[name])
        lines.append(f"| `{name}` | {files} | {_cell(OUTSIDE_MODELS[name])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date; run: {REFRESH}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    missing = missing_descriptions()
    if missing:
        print("fields without a description: " + ", ".join(missing), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
