"""Field definitions of the record types: each field's meaning, kept with the field itself.

Record types are dataclasses whose fields carry a description (the API schemas use it as theirs)
and whether they hold an H3 cell index: an int in every record, topic and table; APIs choose how
to spell it for their clients.
"""

from __future__ import annotations

import dataclasses
from typing import Any

DOC = "doc"
H3_CELL = "h3_cell"


def described(doc: str, *, h3_cell: bool = False, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its description; `h3_cell` marks an H3 cell index (an int)."""
    return dataclasses.field(default=default, metadata={DOC: doc, H3_CELL: h3_cell})


def same_as(record: type, name: str) -> Any:
    """A field meaning what `record`'s field `name` means (another record's copy of it)."""
    (f,) = (f for f in dataclasses.fields(record) if f.name == name)
    return dataclasses.field(default=f.default, metadata=f.metadata)


def field_names(record: type) -> tuple[str, ...]:
    """The record's field names, in order."""
    return tuple(f.name for f in dataclasses.fields(record))
