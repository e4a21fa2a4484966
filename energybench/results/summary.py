"""The table printed at the end of a sweep."""

from __future__ import annotations

from typing import Iterable

COLUMNS = (  # header, key, format
    ("point", "point_id", "{}"), ("status", "status", "{}"), ("tokens", "tokens", "{:,}"),
    ("tok/s", "tokens_per_s", "{:,.1f}"), ("J/token", "energy_per_token_j", "{:.4f}"),
    ("power W", "power_w", "{:.1f}"), ("time s", "duration_s", "{:.1f}"),
)


def format_table(rows: Iterable[dict]) -> str:
    """Fixed-width table of point rows; missing or null values show as '-'."""
    cells = [[h for h, _, _ in COLUMNS]]
    for row in rows:
        cells.append([fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
