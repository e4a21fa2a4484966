"""Issue 12: results are never lost, mixed or silently wrong (one sweep at a time per directory, owners and
`interrupted`, broken files, full disks, bad input refused before anything runs). Real processes and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import energybench.results as results
from energybench.results.status import BrokenFileError, BrokenFileWarning

REPO = Path(__file__).resolve().parents[1]
QUICK = ("experiment=quickstart", "samples=4", "batch=4", "max_tokens=4")


def sweep(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "energybench.sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and err and err[-1].startswith("error: ") and "Traceback" not in proc.stderr, \
        proc.stderr[-3000:]
    return err[-1]


def holder(sweep_dir: Path) -> subprocess.Popen:
    """Another sweep process holding the lock of `sweep_dir` (until killed)."""
    code = ("import sys, time; from energybench.lock import acquire; acquire(__import__('pathlib').Path(sys.argv[1]), "
            "'python -m energybench.sweep sweep=other'); print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(sweep_dir)], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


# ---- 2. one writer per sweep directory ----

def test_a_second_sweep_on_a_held_directory_stops_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = holder(out / "quickstart")
    try:
        proc = sweep(*QUICK, f"out_dir={out}")
    finally:
        first.kill()
        first.wait()
    line = one_line_error(proc)
    assert f"pid {first.pid} on host" in line and "sweep=other" in line and "energybench.lock show" in line
    assert sorted(p.name for p in (out / "quickstart").iterdir()) == ["sweep.lock"]  # nothing else written


def test_a_lock_left_by_a_killed_sweep_does_not_block_the_next(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = holder(out / "quickstart")
    dead.kill()  # SIGKILL: the lock file stays behind
    dead.wait()
    assert json.loads((out / "quickstart" / "sweep.lock").read_text())["pid"] == dead.pid
    proc = sweep(*QUICK, f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"removed the stale lock of pid {dead.pid}" in proc.stderr and "1 done" in proc.stdout
    assert not (out / "quickstart" / "sweep.lock").exists()  # released at the end


def test_a_lock_held_on_another_host_says_how_to_judge_and_break_it(tmp_path: Path) -> None:
    from energybench.lock import LockError, acquire, main

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.lock").write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "started_at": "x"}))
    with pytest.raises(LockError, match="cannot check that host.*squeue/sacct.*python -m energybench.lock break"):
        acquire(sweep_dir)
    assert main(["break", str(sweep_dir)]) == 0 and not (sweep_dir / "sweep.lock").exists()
    acquire(sweep_dir).release()


@pytest.mark.parametrize("make", ["file", "under_a_file", "read_only"])
def test_an_out_dir_that_cannot_be_written_exits_2_before_anything_runs(make: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if make == "file":
        out.write_text("not a directory")
    elif make == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    else:
        out.mkdir()
        if os.geteuid() == 0:  # root writes through permissions: a read-only file system then
            if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(out)]).returncode:
                pytest.skip("cannot mount a read-only tmpfs here")
        else:
            out.chmod(0o555)
    try:
        line = one_line_error(sweep(*QUICK, f"out_dir={out}"))
    finally:
        if make == "read_only" and os.geteuid() == 0:
            subprocess.run(["umount", str(out)])
    assert f"out_dir={out}" in line and "choose an out_dir you can write to" in line


# ---- 3./5. a point run by a live process is never started twice; a dead owner makes it interrupted ----

def _point(tmp_path: Path):
    from energybench.confload import compose
    from energybench.results.layout import point_dir

    cfg = compose([*QUICK, f"out_dir={tmp_path / 'out'}"])
    return cfg, point_dir(cfg)


def _owned_by(pdir: Path, proc_pid: int, pid_start: int | None) -> None:
    status = json.loads((pdir / "status.json").read_text())
    status["owner"] = {**status["owner"], "pid": proc_pid, "pid_start": pid_start}
    (pdir / "status.json").write_text(json.dumps(status))


def test_a_point_running_in_a_live_process_is_not_started_again(tmp_path: Path) -> None:
    from energybench.results.owner import process_start
    from energybench.results.store import write_status

    _, pdir = _point(tmp_path)
    runner = subprocess.Popen(["sleep", "120"])  # the process running the point (an orphaned rank, say)
    try:
        write_status(pdir, "running")
        _owned_by(pdir, runner.pid, process_start(runner.pid))
        proc = sweep(*QUICK, f"out_dir={tmp_path / 'out'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"still running in pid {runner.pid}" in proc.stdout and "0 done, 0 failed, 1 skipped" in proc.stdout
        assert json.loads((pdir / "status.json").read_text())["state"] == "running"
        assert results.points(pdir)["status"].item() == "running"
    finally:
        runner.kill()
        runner.wait()
    assert results.points(pdir)["status"].item() == "interrupted"  # its owner is gone now


def test_a_point_whose_owner_exited_but_was_not_reaped_is_interrupted(tmp_path: Path) -> None:
    """A rank whose sweep was killed is reparented; where nothing reaps it (a container whose pid 1 is no init)
    it stays a zombie: it has exited, so its point is not `running` (nor is a sweep lock it held)."""
    from energybench.results.owner import process_start
    from energybench.results.store import write_status
    from energybench.util.process import pid_alive

    _, pdir = _point(tmp_path)
    owner = subprocess.Popen(["true"])  # exits at once; not waited for: a zombie until reaped below
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{owner.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        write_status(pdir, "running")
        _owned_by(pdir, owner.pid, process_start(owner.pid))
        assert not pid_alive(owner.pid) and pid_alive(os.getpid())
        assert results.points(pdir)["status"].item() == "interrupted"
    finally:
        owner.wait()


def test_a_point_whose_owner_died_is_interrupted_and_measured_again(tmp_path: Path) -> None:
    from energybench.results.owner import process_start
    from energybench.results.store import write_status

    _, pdir = _point(tmp_path)
    write_status(pdir, "running")
    _owned_by(pdir, os.getpid(), (process_start(os.getpid()) or 0) + 1)  # this pid, reused by another process
    points = results.points(pdir)
    assert points["status"].item() == "interrupted" and "is gone" in points["reason"].item()
    proc = sweep(*QUICK, f"out_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"measured again {pdir.name.removeprefix('point=')}: it was interrupted" in proc.stdout
    assert results.points(pdir)["status"].item() == "done"


# ---- 4. a done point whose files do not read back ----

def test_a_truncated_done_point_is_named_by_loaders_and_measured_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert sweep(*QUICK, f"out_dir={out}").returncode == 0
    (pdir,) = results.point_dirs(out)
    row = pq.read_table(pdir / "run.parquet").to_pylist()[0]
    assert row["torch_threads"] >= 1 and row["samples_with_replacement"] is True  # recorded per point (synthetic)
    for name in ("run.parquet", "batches.parquet"):
        data = (pdir / name).read_bytes()
        (pdir / name).write_bytes(data[: len(data) // 2])  # a disk that lost the file's end
    with pytest.warns(BrokenFileWarning, match=f"{pdir / 'run.parquet'}: does not read back"):
        points = results.points(out)
    assert points["status"].item() == "broken" and "run.parquet does not read back" in points["reason"].item()
    with pytest.raises(BrokenFileError, match="batches.parquet: does not read back.*on_error='warn'") as e:
        results.batches(out, on_error="raise", with_config=False)
    assert "\n" not in str(e.value)
    with pytest.warns(BrokenFileWarning, match="batches.parquet"):
        assert results.batches(out, with_config=False).empty
    proc = sweep(*QUICK, f"out_dir={out}")  # resume checks that a done point reads back
    assert proc.returncode == 0 and "1 done, 0 failed, 0 skipped" in proc.stdout, proc.stderr[-3000:]
    assert "does not read back" in proc.stdout + proc.stderr
    assert results.points(out, on_error="raise")["status"].item() == "done"


# ---- a full disk during a point ----

ENOSPC_AT_WRITER = '''
import errno, os, pathlib
import pyarrow.parquet as pq

_write_table, _write_text = pq.write_table, pathlib.Path.write_text
FULL = {"now": False}

def write_table(table, where, *args, **kwargs):
    if "run.parquet" in str(where):  # the disk fills up as the point writes its result
        FULL["now"] = True
    if FULL["now"]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write_table(table, where, *args, **kwargs)

def write_text(self, *args, **kwargs):
    if FULL["now"] and os.environ.get("STATUS_TOO") and "status.json" in self.name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write_text(self, *args, **kwargs)

pq.write_table, pathlib.Path.write_text = write_table, write_text
'''


@pytest.mark.parametrize("status_too", [False, True])
def test_a_full_disk_fails_the_point_with_the_reason_and_the_table_is_printed(status_too: bool,
                                                                             tmp_path: Path) -> None:
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(ENOSPC_AT_WRITER)
    out = tmp_path / "out"
    env = {"PYTHONPATH": f"{tmp_path / 'inject'}:{REPO}", "STATUS_TOO": "1" if status_too else ""}
    proc = sweep(*QUICK, "seed=1,2", f"out_dir={out}", env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "0 done, 2 failed, 0 skipped" in proc.stdout  # the table, after both points (the sweep went on)
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("failed ")]
    assert len(reasons) == 2 and all("[Errno 28] No space left on device" in r for r in reasons), proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    states = {json.loads(p.read_text())["state"] for p in out.glob("*/point=*/status.json")}
    # an unwritable status.json stays as it was: the first point `running`, the second never started (`pending`)
    assert states == ({"running", "pending"} if status_too else {"failed"})
    if status_too:  # and the first point's owner (this sweep) is gone: readers see it interrupted
        assert sorted(results.points(out)["status"]) == ["interrupted", "pending"]


# ---- bad input, before anything runs ----

def test_cluster_slurm_without_a_slurm_client_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    line = one_line_error(sweep(*QUICK, "cluster=slurm", f"out_dir={tmp_path / 'out'}",
                                env={"PATH": str(tmp_path / "bin")}))
    assert "sbatch, squeue, sacct not on PATH" in line and "cluster=local" in line
    assert not (tmp_path / "out").exists()


def test_batch_larger_than_samples_is_refused(tmp_path: Path) -> None:
    line = one_line_error(sweep("experiment=quickstart", "samples=4", "batch=8", f"out_dir={tmp_path / 'out'}"))
    assert line == "error: batch=8 is larger than samples=4: a batch cannot hold more prompts than the point " \
                   "draws; use batch <= 4 or samples >= 8"
    assert not (tmp_path / "out").exists()


def test_points_that_cannot_fit_host_memory_are_skipped_on_a_machine_without_gpus(tmp_path: Path) -> None:
    import torch

    from energybench.confload import compose
    from energybench.memory import host_memory_problem

    seven = compose(["model=7b", "dataset=synthetic", "dataset.like=alpaca"])
    why = host_memory_problem(seven, memory_gib=24)
    assert why is not None and "model 7b in float32 on the CPU needs 25.1 GiB of weights" in why
    assert host_memory_problem(seven, memory_gib=512) is None
    if torch.cuda.is_available():
        return
    proc = sweep(*QUICK, "model=tiny,7b", f"out_dir={tmp_path / 'out'}")
    assert proc.returncode == 0 and "1 done, 0 failed, 1 skipped" in proc.stdout, proc.stderr[-3000:]
    assert "model 7b in float32 on the CPU needs" in proc.stdout


def test_sweep_help_explains_the_grid_keys_with_units_and_an_example() -> None:
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "--help"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for text in ("Grid keys (units):", "power_cap=250,175", "(watts)", "Examples:",
                 "python -m energybench.sweep -m model=7b,13b,65b batch=16,32,64", "model: 13b, 65b, 7b, tiny"):
        assert text in proc.stdout, text
    assert "Powered by Hydra" not in proc.stdout


def test_a_dataset_path_that_is_a_directory_and_a_tokenizer_that_is_not_sentencepiece(tmp_path: Path) -> None:
    from energybench.config import DatasetConfig
    from energybench.data.source import DataError, resolve
    from energybench.model.tokenizer import Tokenizer

    with pytest.raises(DataError, match=f"dataset.path={tmp_path}: a directory; pass the dataset file itself"):
        resolve(DatasetConfig("alpaca", path=str(tmp_path), files=("alpaca_data.json",)))
    text = tmp_path / "tokenizer.model"
    text.write_text("not a model\n")
    with pytest.raises(ValueError, match=f"model.tokenizer={text}: not a SentencePiece model") as e:
        Tokenizer(text)
    assert "\n" not in str(e.value)


def test_safetensors_is_a_dependency_of_the_package() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("safetensors") for d in project["dependencies"])


def test_torch_threads_are_sized_to_the_cpus_this_rank_may_use() -> None:
    from energybench.distributed import DistEnv
    from energybench.threads import torch_threads, usable_cpus

    cpus = len(os.sched_getaffinity(0))
    two = DistEnv(0, 2, 0, 2, 0, 1, "127.0.0.1", 0, "h")
    assert usable_cpus({}) == cpus and torch_threads(two, {}) == max(1, cpus // 2)
    assert torch_threads(two, {"OMP_NUM_THREADS": "3"}) == 3  # the user's choice stands
    if cpus < 2:
        pytest.skip("one CPU: a Slurm task's own CPUs and a shared mask's share are the same number")
    slurm = {"SLURM_CPUS_PER_TASK": str(cpus), "SLURM_PROCID": "0"}  # each Slurm task has its own CPUs: not shared
    assert torch_threads(two, slurm) == cpus


# ---- owners and locks held by Slurm jobs (judged by squeue/sacct, wherever their host is) ----

@pytest.mark.slurm
def test_a_point_or_lock_of_a_slurm_job_is_released_when_the_job_ends(tmp_path: Path) -> None:
    from energybench.lock import LockError, acquire

    partition = os.environ.get("ENERGYBENCH_TEST_PARTITION", "debug")
    # --output: without it Slurm writes slurm-<job>.out into the working directory (the checkout, once)
    job = subprocess.run(["sbatch", "--parsable", "-p", partition, f"--output={tmp_path}/sleep-%j.out", "--wrap",
                          "sleep 600"], capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    owner = {"host": "a-node-of-the-cluster", "pid": 1, "slurm_job_id": job}  # not this host: only Slurm can tell
    _, pdir = _point(tmp_path)
    pdir.mkdir(parents=True)
    (pdir / "status.json").write_text(json.dumps({"state": "running", "attempt": 1, "owner": owner}))
    sweep_dir = tmp_path / "locked"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.lock").write_text(json.dumps({**owner, "started_at": "x"}))
    try:
        assert results.points(pdir)["status"].item() == "running"
        with pytest.raises(LockError, match=f"Slurm job {job}"):
            acquire(sweep_dir)
    finally:
        subprocess.run(["scancel", job], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(1)
    time.sleep(11)  # answers are cached 10 s
    points = results.points(pdir)
    assert points["status"].item() == "interrupted" and f"Slurm job {job}" in points["reason"].item()
    acquire(sweep_dir).release()  # the stale lock is taken over
