"""Read dataset records from JSON arrays or JSON Lines, with errors that name the file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A dataset file that cannot be used; the message names the file, the line and the field."""


def read_records(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Records of a JSON array (e.g. alpaca_data.json) or JSON Lines file, each checked for `fields`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: bad JSON on line {e.lineno}: {e.msg}") from e
        numbered = [(i + 1, r) for i, r in enumerate(records)]
        where = "record"
    else:
        numbered = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: bad JSON on line {lineno}: {e.msg}") from e
        where = "line"
    if not numbered:
        raise DataError(f"{path}: no records")
    for n, record in numbered:
        if not isinstance(record, dict):
            raise DataError(f"{path}: {where} {n} is not a JSON object")
        for name in fields:
            if name not in record:
                raise DataError(f"{path}: {where} {n} has no field {name!r} (expected fields: {', '.join(fields)})")
            if not isinstance(record[name], str):
                raise DataError(f"{path}: {where} {n}: field {name!r} is not a string")
    return [r for _, r in numbered]
