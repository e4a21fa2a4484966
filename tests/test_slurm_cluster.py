"""On a real Slurm (scripts/slurm-test-cluster.sh: nodes n1, n2 with 2 dummy GPUs each, partition
`debug`): sweeps submitted through submitit, multi-node gloo, scancel, requeue, resume, the sbatch
templates and pre-flight. Points are tiny (quickstart, a few prompts) so the module takes minutes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from energybench.results.store import read_status

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PARTITION = os.environ.get("ENERGYBENCH_TEST_PARTITION", "debug")
SLURM = ("-m", "cluster=slurm", f"cluster.partition={PARTITION}", "cluster.gpus_per_node=2",
         "cluster.cpus_per_task=1", "experiment=quickstart")


def env() -> dict[str, str]:
    # sbatch hands the submitting environment to the job: the job imports this checkout
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "energybench.sweep", *SLURM, *args]


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(*args), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=900)


def points(out: Path) -> dict[str, Path]:
    """{point id: directory} of every point under out_dir."""
    return {p.name.removeprefix("point="): p for p in sorted(out.glob("*/point=*"))}


def run_row(point_dir: Path) -> dict:
    return pq.read_table(point_dir / "run.parquet").to_pylist()[0]


def sacct_state(job_id: str, timeout_s: float = 60) -> str:
    """Final state in accounting (slurmdbd records a job's end a moment after it ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                               text=True).stdout.split("\n")
        state = lines[0].split(" ")[0] if lines[0] else "NONE"  # "CANCELLED by 0" -> CANCELLED
        if state not in ("NONE", "RUNNING", "PENDING", "COMPLETING", "REQUEUED") or time.monotonic() > deadline:
            return state
        time.sleep(1)


def wait_for(what: str, check, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def sweep_interrupted(tmp_path: Path, args: tuple[str, ...], measuring: int, act) -> tuple[int, str]:
    """Start the sweep, wait until `measuring` points have batches on disk and none has a result, call `act()`
    (scancel, scontrol requeue ...), then wait for the sweep: (its exit code, its output)."""
    out = Path(next(a for a in args if a.startswith("out_dir=")).removeprefix("out_dir="))
    running = subprocess.Popen(sweep_cmd(*args), cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(f"{measuring} points measuring",
                 lambda: len(list(out.glob("*/point=*/batches.parquet"))) == measuring)
        assert not list(out.glob("*/point=*/run.parquet"))
        act()
        log, _ = running.communicate(timeout=600)
    finally:
        running.kill()
    return running.returncode, log


def test_two_point_sweep_runs_two_slurm_jobs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = sweep(tmp_path, "samples=4", "max_tokens=4", "batch=2,4", f"out_dir={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 done, 0 failed, 0 skipped" in proc.stdout
    found = points(out)
    assert len(found) == 2
    job_ids = set()
    for pdir in found.values():
        row, status = run_row(pdir), read_status(pdir)
        assert row["status"] == "done" and status["state"] == "done"
        assert row["slurm_job_id"] == status["slurm_job_id"] == status["submitit_job_id"]
        assert row["hostnames"] in ("n1", "n2") and row["nodes"] == 1 and row["cluster"] == "slurm"
        assert sacct_state(row["slurm_job_id"]) == "COMPLETED"
        job_ids.add(row["slurm_job_id"])
    assert len(job_ids) == 2


def test_two_shards_on_one_node_and_over_two_nodes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = sweep(tmp_path, "samples=4", "max_tokens=4", "batch=4", "shards=2", "cluster.gpus_per_node=2,1",
                 f"out_dir={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 done, 0 failed, 0 skipped" in proc.stdout
    layouts = {}
    for pdir in points(out).values():
        gpus_per_node = yaml.safe_load((pdir / "config.yaml").read_text())["cluster"]["gpus_per_node"]
        row = run_row(pdir)
        assert (row["shards"], row["device"], row["tokens"]) == (2, "cpu", 4 * 4)  # gloo, both ranks generated
        layouts[gpus_per_node] = (row["nodes"], row["hostnames"])
    assert layouts[1] == (2, "n1,n2")  # one task on each simulated node, rendezvous on n1
    assert layouts[2][0] == 1 and layouts[2][1] in ("n1", "n2")


def test_cancelled_point_fails_requeued_point_finishes_and_rerun_redoes_only_the_failed_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # ~400 tokens: long enough to be stopped mid-way; batches stream to disk every second
    args = ("samples=24", "max_tokens=16", "batch=2", "seed=1,2", "meter.flush_s=1", f"out_dir={out}")

    def cancel_one_requeue_the_other() -> None:  # both points mid-generation
        by_seed = {yaml.safe_load((p / "config.yaml").read_text())["seed"]: p for p in points(out).values()}
        subprocess.run(["scancel", read_status(by_seed[1])["slurm_job_id"]], check=True)
        subprocess.run(["scontrol", "requeue", read_status(by_seed[2])["slurm_job_id"]], check=True)

    code, log = sweep_interrupted(tmp_path, args, 2, cancel_one_requeue_the_other)
    assert code == 1, log[-3000:]
    assert "1 done, 1 failed, 0 skipped" in log
    by_seed = {yaml.safe_load((p / "config.yaml").read_text())["seed"]: p for p in points(out).values()}
    cancelled, requeued = by_seed[1], by_seed[2]

    status = read_status(cancelled)
    assert status["state"] == "failed" and "CANCELLED" in status["reason"], status
    assert not (cancelled / "run.parquet").exists()
    assert set(pq.read_table(cancelled / "batches.parquet").column("attempt").to_pylist()) == {1}  # flushed on SIGTERM

    status = read_status(requeued)  # preempted once, restarted from scratch, finished
    assert (status["state"], status["attempt"]) == ("done", 2), status
    batches = pq.read_table(requeued / "batches.parquet").to_pandas()
    assert set(batches["attempt"]) == {1, 2}
    assert (~batches[batches["attempt"] == 2]["warmup"]).sum() == 12  # all 24 prompts in the second attempt
    assert (run_row(requeued)["attempt"], run_row(requeued)["responses"]) == (2, 24)

    done_at = (requeued / "run.parquet").stat().st_mtime
    again = sweep(tmp_path, *args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 done, 0 failed, 1 skipped" in again.stdout
    assert (read_status(cancelled)["state"], read_status(cancelled)["attempt"]) == ("done", 2)
    assert (requeued / "run.parquet").stat().st_mtime == done_at  # the finished point was not re-run


def test_a_requeued_two_node_point_is_waited_for_and_ends_done(tmp_path: Path) -> None:
    """scontrol requeue of a point sharded over both nodes: rank 0 can end `failed` by its peer's SIGTERM and
    leave that result while Slurm holds the job for its next run; the sweep waits for that run instead."""
    out = tmp_path / "out"
    args = ("samples=24", "max_tokens=16", "batch=2", "shards=2", "cluster.gpus_per_node=1", "meter.flush_s=1",
            f"out_dir={out}")

    def requeue() -> None:
        (pdir,) = points(out).values()
        subprocess.run(["scontrol", "requeue", read_status(pdir)["slurm_job_id"]], check=True)

    code, log = sweep_interrupted(tmp_path, args, 1, requeue)
    assert code == 0, log[-3000:]
    assert "1 done, 0 failed, 0 skipped" in log
    (pdir,) = points(out).values()
    status = read_status(pdir)
    assert (status["state"], status["attempt"]) == ("done", 2), status
    row = run_row(pdir)
    assert (row["attempt"], row["responses"], row["nodes"], row["hostnames"]) == (2, 24, 2, "n1,n2")


def test_preflight_rejects_65b_on_a_32gb_preset_without_queueing(tmp_path: Path) -> None:
    def jobs() -> int:
        return len(subprocess.run(["sacct", "-X", "-n", "-a", "-S", "now-1days", "-o", "JobID"],
                                  capture_output=True, text=True).stdout.split())

    before = jobs()
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "-m", "cluster=supercloud_v100",
                           f"cluster.partition={PARTITION}", "experiment=quickstart", "model=65b", "shards=1",
                           f"out_dir={tmp_path / 'out'}"], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 done, 0 failed, 1 skipped" in proc.stdout
    assert "model 65b needs 121.6 GiB of weights" in proc.stdout and "V100-32GB; use shards=8 or more" in proc.stdout
    assert jobs() == before
    assert not (tmp_path / "out").exists()


# preset -> (shards, the preset's job shape as sbatch options and cluster override: one template serves them all)
TEMPLATES = {"slurm": (1, [], []), "supercloud_v100": (2, ["--ntasks-per-node=2"], ["cluster=supercloud_v100"]),
             "supercloud_a100": (2, ["--ntasks-per-node=2"], ["cluster=supercloud_a100"])}


def test_sbatch_template_completes_and_writes_the_point_of_each_preset(tmp_path: Path) -> None:
    from energybench.confload import compose
    from energybench.results.layout import point_dir

    out = tmp_path / "out"
    overrides = ["experiment=quickstart", "samples=4", "batch=4", "max_tokens=4", f"out_dir={out}"]
    dirs = {preset: point_dir(compose([f"cluster={preset}", f"shards={shards}", *overrides])).resolve()
            for preset, (shards, _, _) in TEMPLATES.items()}
    # the exit trap calls `python -m energybench.power restore <point dir>/power-state`: record it
    power_log = tmp_path / "power.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\nif [[ "$1 $2" == "-m energybench.power" ]]; then echo "$@" >> {power_log}; '
                      f'exit 0; fi\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    state = dirs["supercloud_v100"] / "power-state"
    state.mkdir(parents=True)  # as if the point had capped its GPUs and been killed before restoring
    job_ids = {}
    for name, (_, options, preset) in TEMPLATES.items():
        proc = subprocess.run(["sbatch", "--parsable", f"--partition={PARTITION}", "--cpus-per-task=1", *options,
                               f"--output={tmp_path}/{name}-%j.out", str(REPO / "slurm" / "energybench.sbatch"),
                               *preset, *overrides], cwd=tmp_path, env={**env(), "ENERGYBENCH_PYTHON": str(python)},
                              capture_output=True, text=True, check=True)
        job_ids[name] = proc.stdout.split(";")[0].strip()
    for name, job_id in job_ids.items():
        state_now = sacct_state(job_id, timeout_s=600)
        log = (tmp_path / f"{name}-{job_id}.out").read_text()
        assert state_now == "COMPLETED", log[-3000:]
        shards = TEMPLATES[name][0]
        row = run_row(dirs[name])
        assert (row["status"], row["cluster"], row["shards"], row["slurm_job_id"]) == ("done", name, shards, job_id)
    assert power_log.read_text().split() == ["-m", "energybench.power", "restore", str(state)]
