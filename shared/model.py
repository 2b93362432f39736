"""The base of every model that crosses a process boundary (WebSocket messages and REST bodies).

Fields are snake_case in Python and camelCase on the wire. Validation is strict where it matters:
primitives are typed with the Strict* aliases below so that "3" is not an integer and 1 is not a
boolean, unknown fields are refused, and enums take exactly their UPPER_SNAKE values. (Pydantic's
model-wide strict mode would also refuse enum values given as strings to REST bodies, which FastAPI
validates from parsed Python objects, so it is not used.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict
from pydantic.alias_generators import to_camel

#: Every integer on the wire is within +-(2**53 - 1): what a JSON number carries exactly in every client
#: (JavaScript's Number.MAX_SAFE_INTEGER), and well within a database column (BIGINT, SQLite INTEGER),
#: so an absurd value is refused when validated instead of failing in the database.
MAX_INT = 2**53 - 1

SInt = Annotated[int, Strict(), Field(ge=-MAX_INT, le=MAX_INT)]
SStr = Annotated[str, Strict()]
SBool = Annotated[bool, Strict()]
SFloat = Annotated[float, Strict()]
NonNegInt = Annotated[int, Strict(), Field(ge=0, le=MAX_INT)]

#: Identifiers: agents, commands, traces, reports. UUIDs in practice, validated as short strings:
#: letters, digits and ``_.:-`` (no character JSON escapes), 1 to 128 of them.
_ID_CHARS = r"[A-Za-z0-9_.:\-]"
ID_PATTERN = re.compile(_ID_CHARS + "{1,128}")
Id = Annotated[str, Strict(), Field(min_length=1, max_length=128, pattern=f"^{_ID_CHARS}+$")]
#: Milliseconds since the epoch.
EpochMs = Annotated[int, Strict(), Field(ge=0, le=MAX_INT)]

#: How deep free-form JSON (an agent's capabilities, trace content, tool input, error details) may
#: nest. The hub relays it inside its own messages, a few levels deeper, and JSON parsers stop at a
#: depth (pydantic's near 200): an agent's capabilities nested just under that made every TUI's
#: DASHBOARD_READY unreadable.
MAX_FREE_JSON_DEPTH = 64


#: Types that hold nothing and are finite whatever their value (not float).
_FLAT = frozenset({str, int, bool, type(None)})


def _plain_json(value: Any) -> Any:
    """Free-form JSON as every reader takes it: at most MAX_FREE_JSON_DEPTH deep, finite numbers."""
    kind = type(value)
    if kind in _FLAT or (kind is dict and all(type(v) in _FLAT for v in value.values())):
        return value  # a scalar or a flat object (most trace content): nothing to walk
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (JSON has no Infinity or NaN)")
        else:
            continue
        if depth >= MAX_FREE_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_FREE_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)
    return value


def bounded_json(value: Any) -> Any:
    """``value`` when it is within FreeJson's bounds, else a note saying why it was left out: for a
    sender passing on what a CLI produced, which must not fail on it."""
    try:
        return _plain_json(value)
    except ValueError as exc:
        return f"(left out: {exc})"


#: Any JSON value, and a JSON object, within the bounds of _plain_json.
FreeJson = Annotated[Any, AfterValidator(_plain_json)]
FreeJsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        ser_json_inf_nan="null",
        # JSON has no infinity or NaN, but parsers take Infinity, NaN and 1e400; such a float would be
        # stored and served as null, which no model reads back (a heartbeat with "cpuPercent":
        # Infinity made the agent's record unreadable).
        allow_inf_nan=False,
        # A model's validator and serializer are built when it is first used, not when it is
        # defined: an agent wrapper uses a handful of the protocol's ~100 models, and building them
        # all took a third of an idle wrapper's memory. Long-running processes build what they use
        # at start (``shared.protocol.prepare``).
        defer_build=True,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict, camelCase keys."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)
