"""The base of every model that crosses a process boundary (WebSocket messages and REST bodies).

Fields are snake_case in Python and camelCase on the wire. Validation is strict where it matters:
primitives are typed with the Strict* aliases below so that "3" is not an integer and 1 is not a
boolean, unknown fields are refused, and enums take exactly their UPPER_SNAKE values. (Pydantic's
model-wide strict mode would also refuse enum values given as strings to REST bodies, which FastAPI
validates from parsed Python objects, so it is not used.)
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict
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

#: Identifiers: agents, commands, traces, reports. UUIDs in practice, validated as short strings.
Id = Annotated[str, Strict(), Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
#: Milliseconds since the epoch.
EpochMs = Annotated[int, Strict(), Field(ge=0, le=MAX_INT)]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        ser_json_inf_nan="null",
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict, camelCase keys."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)
