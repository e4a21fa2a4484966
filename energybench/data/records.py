"""Read dataset records from JSON arrays or JSON Lines, with errors that name the file, line and field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


class DataError(ValueError):
    """A dataset file that cannot be used; the message names the file, the line and the field."""


def read_records(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Records of a JSON array (e.g. alpaca_data.json) or JSON Lines file, each checked for `fields`.

    Every record must be an object whose `fields` are strings. Raises DataError naming the file,
    the line (of the record's start) and the field at fault.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    numbered = _array(path, text) if text.lstrip().startswith("[") else _lines(path, text)
    if not numbered:
        raise DataError(f"{path}: no records")
    for lineno, record in numbered:
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {lineno}: record is not a JSON object")
        for name in fields:
            if name not in record:
                raise DataError(f"{path}: line {lineno}: record has no field {name!r} "
                                f"(expected fields: {', '.join(fields)})")
            if not isinstance(record[name], str):
                raise DataError(f"{path}: line {lineno}: field {name!r} is a {type(record[name]).__name__}, "
                                "not a string")
    return [r for _, r in numbered]


def _lines(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON Lines file."""
    numbered = []
    # split on "\n" only: str.splitlines would also split on U+2028 etc., which JSON strings may hold raw
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            numbered.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: bad JSON on line {lineno}: {e.msg}") from e
    return numbered


def _array(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line where the element starts, value) of each element of a top-level JSON array."""
    decoder = json.JSONDecoder()
    numbered: list[tuple[int, Any]] = []
    pos = _WS.match(text, text.index("[") + 1).end()
    line, counted_to = 1, 0
    if text.startswith("]", pos):
        return _end_of_array(path, text, pos, numbered)
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: bad JSON on line {e.lineno}: {e.msg}") from e
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        numbered.append((line, value))
        pos = _WS.match(text, end).end()
        if text.startswith(",", pos):
            pos = _WS.match(text, pos + 1).end()
            continue
        if text.startswith("]", pos):
            return _end_of_array(path, text, pos, numbered)
        lineno = text.count("\n", 0, pos) + 1
        raise DataError(f"{path}: bad JSON on line {lineno}: expected ',' or ']' after an array element")


def _end_of_array(path: Path, text: str, pos: int, numbered: list) -> list[tuple[int, Any]]:
    rest = _WS.match(text, pos + 1).end()
    if rest != len(text):
        raise DataError(f"{path}: bad JSON on line {text.count(chr(10), 0, rest) + 1}: extra data after the array")
    return numbered
