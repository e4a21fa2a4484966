"""A point's state as readers should see it: status.json's, with `running` turned `interrupted` once its owner is gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from energybench.results import owner as owners

INTERRUPTED = "interrupted"  # derived, never written: status.json says running, but its owner is gone


def interrupted_reason(status: Mapping[str, Any]) -> str | None:
    """Why a `running` point is in fact interrupted (its owner process or Slurm job is gone), else None
    (not running, owner alive, or this machine cannot tell)."""
    if status.get("state") != "running":
        return None
    owner = status.get("owner")
    if owners.alive(owner) is not False:
        return None
    return (f"interrupted: {owners.describe(owner, ended=True)} that ran attempt {status.get('attempt')} is gone (killed, "
            "out of disk or node lost) without recording a result; re-run the sweep to measure it again")


def current_state(status: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(state, reason) of a point: status.json's, except `running` -> `interrupted` when its owner is gone."""
    if not status:
        return None, None
    why = interrupted_reason(status)
    if why is not None:
        return INTERRUPTED, why
    return status.get("state"), status.get("reason")


POINT_TABLES = ("run.parquet", "batches.parquet", "gpus.parquet")  # rank 0's tables, read whole by `broken_files`


def parquet_problem(path: Path, whole: bool = True) -> str | None:
    """Why `path` does not read back as Parquet (truncated, not Parquet, unreadable), or None. `whole` reads
    every row (a damaged page); otherwise only the footer (a truncated file), which is cheap."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if whole:
            pq.read_table(path)
        else:
            pq.read_metadata(path)
    except (OSError, pa.ArrowException) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
    return None


def broken_files(point_dir: Path) -> list[tuple[Path, str]]:
    """(file, problem) of each of the point's tables (run, batches, gpus) that exists but does not read back."""
    out = []
    for name in POINT_TABLES:
        path = point_dir / name
        if path.is_file():
            problem = parquet_problem(path)
            if problem is not None:
                out.append((path, problem))
    return out


BROKEN = "broken"  # derived: status.json says done, but run.parquet does not read back
ON_ERROR = ("warn", "raise")  # what loaders do with a file that does not read back


class BrokenFileWarning(UserWarning):
    """A results file that does not read back was skipped (loaders' on_error='warn')."""


class BrokenFileError(ValueError):
    """A results file does not read back (loaders' on_error='raise'); the message names it."""


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: must be one of {', '.join(ON_ERROR)}")


def drop_broken(files: list[Path], on_error: str) -> tuple[list[Path], dict[Path, str]]:
    """(files that read back, {file: problem} of those that do not). Each broken file is a BrokenFileWarning
    naming it (on_error='warn'), or the first one raises BrokenFileError (on_error='raise')."""
    import warnings

    check_on_error(on_error)
    good, broken = [], {}
    for f in files:
        problem = parquet_problem(f)
        if problem is None:
            good.append(f)
            continue
        message = (f"{f}: does not read back as Parquet ({problem}); re-run its sweep (resume measures the point "
                   "again)")
        if on_error == "raise":
            raise BrokenFileError(message + ", or pass on_error='warn' to skip it")
        warnings.warn(message + "; skipped", BrokenFileWarning, stacklevel=3)
        broken[f] = problem
    return good, broken
