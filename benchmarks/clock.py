"""The wall-clock stamp benchmark records carry (UTC, seconds), shared by the launcher and its workers."""

from __future__ import annotations

import datetime as dt


def now_utc() -> str:
    """The current UTC time as ISO 8601 to the second, e.g. 2026-11-30T05:51:13+00:00."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
