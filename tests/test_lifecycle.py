"""A point's lifecycle: the Point the planner makes once, the status state machine every launcher goes through
(the only writer of status.json), and the failure reasons worded once."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from energybench.results import failures
from energybench.results.status import StateError, mark_done, mark_failed, mark_pending, mark_running
from energybench.results.store import read_status

REPO = Path(__file__).resolve().parents[1]


def test_a_point_goes_pending_running_done_and_counts_its_attempts(tmp_path: Path) -> None:
    pdir = tmp_path / "point=x"
    assert mark_pending(pdir)["attempt"] == 0
    first = mark_running(pdir, host="h", slurm_job_id=None)
    assert (first["state"], first["attempt"], first["owner"]["pid"]) == ("running", 1, os.getpid())
    assert mark_running(pdir)["attempt"] == 2  # requeued: the next attempt, same owner record kind
    done = mark_done(pdir)
    assert (done["state"], done["attempt"], done["host"]) == ("done", 2, "h")
    assert mark_pending(pdir, submitit_job_id="7")["submitit_job_id"] == "7"  # resume=false plans it again


def test_done_is_written_only_by_a_running_attempt(tmp_path: Path) -> None:
    pdir = tmp_path / "point=x"
    with pytest.raises(StateError, match="status None -> done"):
        mark_done(pdir)
    mark_pending(pdir)
    with pytest.raises(StateError, match="status pending -> done"):
        mark_done(pdir)
    assert read_status(pdir)["state"] == "pending"


def test_failed_is_rewritten_only_when_the_reason_changes(tmp_path: Path) -> None:
    pdir = tmp_path / "point=x"
    mark_running(pdir)
    first = mark_failed(pdir, "RuntimeError: boom")
    (pdir / "status.json").write_text(json.dumps({**first, "updated_at": "then"}))
    assert mark_failed(pdir, "RuntimeError: boom")["updated_at"] == "then"  # the same verdict: not rewritten
    assert mark_failed(pdir, "rank 1: CUDA out of memory")["reason"] == "rank 1: CUDA out of memory"


def test_only_the_state_machine_writes_status_json() -> None:
    """Every call of store.write_status in the package and the plugins is in results/status.py."""
    callers = []
    for path in [*(REPO / "energybench").rglob("*.py"), *(REPO / "hydra_plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "write_status":
                callers.append(str(path.relative_to(REPO)))
    assert callers == ["energybench/results/status.py"]


def test_the_local_reason_names_a_rank_that_died_without_a_word(tmp_path: Path) -> None:
    pdir = tmp_path / "point=x"
    (pdir / "errors").mkdir(parents=True)
    assert failures.local_reason(pdir, 1, [None, -9], {}) == "rank 1 exited with code -9"
    (pdir / "errors" / "rank-1.json").write_text(json.dumps({"reason": "ValueError: x", "failed_at_unix_s": 5.0}))
    (pdir / "errors" / "rank-0.json").write_text(json.dumps({"reason": "RuntimeError: peer", "failed_at_unix_s": 6.0}))
    assert failures.local_reason(pdir, 1, [1, 1], {}) == "rank 1: ValueError: x"  # the earliest error
    assert failures.local_reason(tmp_path / "none", 0, [3], {"state": "failed", "reason": "own"}) == "own"
    assert failures.local_reason(tmp_path / "none", 0, [3], {}) == "rank 0 exited with code 3"


def test_a_point_is_made_once_with_its_id_and_directory(tmp_path: Path) -> None:
    from energybench.confload import compose
    from energybench.results.layout import Point, point_dir, point_id

    cfg = compose(["experiment=quickstart", f"out_dir={tmp_path}"])
    point = Point.of(cfg, ["experiment=quickstart"])
    assert (point.id, point.dir, point.overrides, point.attempt) == (point_id(cfg), point_dir(cfg),
                                                                     ("experiment=quickstart",), 0)


def test_a_results_folder_written_before_the_lifecycle_change_resumes(tmp_path: Path) -> None:
    """A published point (docs/results/h200, written by the code before Point and the state machine) is found
    done under the same id and skipped; with resume=false it is planned again from its recorded attempt."""
    import dataclasses
    import shutil

    import yaml

    from energybench.config import PointConfig, from_mapping
    from energybench.plan import plan_sweep, resume_reason
    from energybench.results.layout import Point

    published = sorted((REPO / "docs" / "results" / "h200").glob("h200-7b/point=*/status.json"))[0].parent
    data = yaml.safe_load((published / "config.yaml").read_text())
    cfg = from_mapping(PointConfig, {**data, "out_dir": str(tmp_path), "sweep": "old"})
    point = Point.of(cfg)
    assert point.id == published.name.removeprefix("point=")
    point.dir.mkdir(parents=True)
    for name in ("config.yaml", "status.json", "run.parquet", "batches.parquet", "gpus.parquet"):
        if (published / name).exists():
            shutil.copy(published / name, point.dir / name)
    attempt = read_status(point.dir)["attempt"]
    plan = plan_sweep([point])
    assert (plan.todo, [why for _, why in plan.skipped]) == ([], ["already done (resume=true; resume=false re-runs it)"])
    assert resume_reason(Point.of(dataclasses.replace(cfg, resume=False)), read_status(point.dir)) is None
    mark_pending(point.dir)  # planned again: the next run is attempt + 1
    assert (read_status(point.dir)["state"], read_status(point.dir)["attempt"]) == ("pending", attempt)
    assert mark_running(point.dir)["attempt"] == attempt + 1


def test_a_point_running_in_a_slurm_job_the_sweep_reattaches_to_stays_running(tmp_path: Path) -> None:
    """Planning again while the point's Slurm job runs must not reset it to pending: done needs running."""
    from energybench.confload import compose
    from energybench.plan import plan_sweep
    from energybench.results.layout import Point

    point = Point.of(compose(["cluster=slurm", "experiment=quickstart", f"out_dir={tmp_path}"]))
    mark_pending(point.dir, submitit_job_id="7")
    mark_running(point.dir)  # the job's rank 0 (this live process stands in for it)
    plan = plan_sweep([point])
    assert [p.id for p in plan.todo] == [point.id]  # the launcher attaches to job 7
    assert read_status(point.dir)["state"] == "running"
    assert mark_done(point.dir)["state"] == "done"  # the job's result is kept
