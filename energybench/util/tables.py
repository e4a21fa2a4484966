"""Markdown tables of records, one cell format for every table the docs generate (scripts/docs_tables.py and
the benchmarks that write their own .md), so a regenerated table equals the one a benchmark wrote."""

from __future__ import annotations

from typing import Iterable


def fmt(value: object, spec: str = "") -> str:
    """A cell: '' for null, `spec` (a format spec) for numbers, else floats as 1,234 / 12.3 / 0.0123, else str."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def where(rows: Iterable[dict], conditions: Iterable[str]) -> list[dict]:
    """The rows that meet every condition, `KEY=VALUE` or `KEY!=VALUE`, compared as text (a missing key is
    None): the `where:` of every generated docs table."""
    kept = list(rows)
    for cond in conditions:
        key, _, value = cond.partition("=")
        negate = key.endswith("!")
        key = key.removesuffix("!")
        kept = [r for r in kept if (str(r.get(key)) == value) != negate]
    return kept


def markdown(rows: Iterable[dict], columns: Iterable[str]) -> str:
    """A Markdown table of `rows`, one column per 'name[:format]' (the header is the name)."""
    columns = list(columns)
    names = [c.split(":", 1)[0] for c in columns]
    specs = [c.split(":", 1)[1] if ":" in c else "" for c in columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(fmt(r.get(n), s) for n, s in zip(names, specs)) + " |" for r in rows]
    return "\n".join(lines)
