"""What a Hydra JobReturn carries back to energybench's launchers and sweeper."""

from __future__ import annotations

from typing import Any


def outcome(ret: Any) -> Any:
    """A JobReturn's value: the point's outcome (a PointOutcome) when its task function returned, or the exception
    it raised. Hydra keeps either in `_return_value`; its `return_value` property raises the exception instead."""
    return ret._return_value
