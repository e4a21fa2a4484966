"""Job sizing, submitit parameters and pre-flight arithmetic: everything about Slurm dispatch that needs no Slurm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from energybench.config import ConfigError
from energybench.confload import compose
from energybench.memory import GIB, USABLE_FRACTION, memory_need, param_count
from energybench.plan import preflight
from energybench.slurm import check_tasks, executor_parameters, job_shape

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("shards", "gpus_per_node", "nodes", "per_node"), [
    (1, 4, 1, 1), (2, 2, 1, 2), (2, 1, 2, 1), (4, 4, 1, 4), (8, 2, 4, 2), (8, 4, 2, 4), (64, 8, 8, 8)])
def test_job_shape(shards: int, gpus_per_node: int, nodes: int, per_node: int) -> None:
    shape = job_shape(shards, gpus_per_node)
    assert (shape.nodes, shape.tasks_per_node, shape.tasks) == (nodes, per_node, shards)


def test_executor_parameters_size_each_point_from_its_own_config() -> None:
    cfg = compose(["cluster=supercloud_v100", "dataset=synthetic", "model=65b", "shards=8",
                   "cluster.account=abc", "+cluster.additional_parameters.exclusive=true"])
    params = executor_parameters(cfg)
    assert (params["nodes"], params["tasks_per_node"], params["slurm_gpus_per_task"]) == (4, 2, 1)
    assert (params["cpus_per_task"], params["timeout_min"]) == (20, 120)
    assert (params["slurm_partition"], params["slurm_account"]) == ("xeon-g6-volta", "abc")
    assert params["slurm_additional_parameters"] == {"requeue": True, "exclusive": True}
    assert "mem_gb" not in params and "slurm_qos" not in params  # unset: the site's defaults
    one = executor_parameters(compose(["cluster=supercloud_v100", "dataset=synthetic", "shards=1"]))
    assert (one["nodes"], one["tasks_per_node"]) == (1, 1)


def test_submitit_writes_the_sbatch_script_from_those_parameters(tmp_path: Path) -> None:
    import submitit

    cfg = compose(["cluster=slurm", "dataset=synthetic", "model=13b", "shards=8", "cluster.gpus_per_node=4",
                   "cluster.partition=gpu", "cluster.mem_gb=200", "cluster.setup=[module load cuda]"])
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**executor_parameters(cfg))
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --partition=gpu", "#SBATCH --mem=200GB", "#SBATCH --time=60", "#SBATCH --requeue",
                 "module load cuda", 'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"'):
        assert line in script.splitlines(), line
    assert "--kill-on-bad-exit=1" in script


def test_slurm_launcher_needs_gpus_per_node() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.launcher=slurm needs cluster\.gpus_per_node"):
        compose(["cluster=slurm", "dataset=synthetic", "cluster.gpus_per_node=null"])


def test_llama_parameter_counts() -> None:  # the published sizes of Meta's checkpoints
    counts = {m: param_count(compose([f"model={m}", "dataset=synthetic"]).model) for m in ("7b", "13b", "65b")}
    assert counts == {"7b": 6_738_415_616, "13b": 13_015_864_320, "65b": 65_285_660_672}


def test_memory_need_is_weights_plus_kv_cache() -> None:
    cfg = compose(["model=7b", "dataset=synthetic", "batch=64", "max_tokens=128", "dtype=float16"])
    need = memory_need(cfg)
    assert need.seq_len == 361 + 128  # longest Alpaca prompt (LLaMA tokens) + new tokens
    assert need.weights_bytes == 2 * 6_738_415_616
    assert need.kv_cache_bytes == 2 * 32 * 64 * need.seq_len * 4096 * 2  # K and V, layers, batch, positions, dim
    assert memory_need(compose(["model=7b", "dataset=synthetic", "dtype=float32"])).weights_bytes == 4 * 6_738_415_616


def test_preflight_rejects_65b_on_one_32gb_gpu_and_names_the_fix() -> None:
    cfg = compose(["cluster=supercloud_v100", "dataset=synthetic", "model=65b", "shards=1"])
    why = preflight(cfg)
    assert why is not None
    assert "model 65b needs 121.6 GiB of weights" in why and "V100-32GB" in why
    assert why.endswith("use shards=8 or more")
    need = memory_need(cfg)
    assert need.per_gpu_bytes(4) > USABLE_FRACTION * 32 * GIB >= need.per_gpu_bytes(8)
    assert preflight(compose(["cluster=supercloud_v100", "dataset=synthetic", "model=65b", "shards=8"])) is None
    assert preflight(compose(["cluster=supercloud_a100", "dataset=synthetic", "model=65b", "shards=4"])) is None


@pytest.mark.parametrize(("overrides", "fits"), [
    (["model=7b"], True),  # the paper's 7B point on one V100-32GB
    (["model=13b"], False), (["model=13b", "shards=2"], True),
    (["model=7b", "device=cpu"], True),  # CPU points are not checked against GPU memory
    (["model=65b", "cluster=local"], False),  # no GPU type, no CUDA: on the CPU, 243 GiB > 90 % of 24 GiB
    (["model=tiny", "cluster=local"], True),
    (["model=7b", "cluster.gpu_type=null", "cluster.gpu_memory_gb=16"], False),
])
def test_preflight_memory_cases(overrides: list[str], fits: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("energybench.plan._local_gpu_gib", lambda cfg: None)  # as on a machine without CUDA
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("energybench.memory.host_memory_gib", lambda: 24.0)  # and with 24 GiB of memory
    cfg = compose(["cluster=supercloud_v100", "dataset=synthetic", *overrides])
    assert (preflight(cfg) is None) == fits


def test_preflight_refuses_uneven_nodes() -> None:
    why = preflight(compose(["experiment=quickstart", "cluster=slurm", "cluster.gpus_per_node=3", "shards=4"]))
    assert why is not None and "shards=4 cannot fill whole nodes of cluster.gpus_per_node=3" in why


def test_check_tasks_wants_one_task_per_shard() -> None:
    cfg = compose(["experiment=quickstart", "shards=2"])
    check_tasks(cfg, {"SLURM_NTASKS": "2"})
    check_tasks(cfg, {})  # outside a job
    with pytest.raises(ConfigError, match="shards=2 but this Slurm job has 4 tasks"):
        check_tasks(cfg, {"SLURM_NTASKS": "4"})


def test_sweep_skips_points_that_cannot_run_and_runs_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # 7b cannot fit a 2 GiB GPU; tiny cannot be split 3 ways (8 heads); tiny at shards=1 runs here
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "-m", "experiment=quickstart", "samples=4",
                           "batch=4", "max_tokens=4", "model=tiny,7b", "shards=1,3", "cluster.gpu_memory_gb=2",
                           f"out_dir={out}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 done, 0 failed, 3 skipped" in proc.stdout
    assert "shards=3 does not divide n_heads=8 of model tiny" in proc.stdout
    assert "shards=3 does not divide n_heads=32 of model 7b" in proc.stdout
    assert "model 7b needs 12.6 GiB of weights" in proc.stdout
    assert len(list((out / "quickstart").glob("point=*"))) == 1  # nothing written for skipped points


def test_bad_shards_alone_is_still_an_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "-m", "experiment=quickstart", "shards=3",
                           f"out_dir={tmp_path / 'out'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: shards=3 does not divide n_heads=8")


def test_dist_env_from_slurm_names_the_array_job_and_the_slurm_node() -> None:
    from energybench.distributed import DistEnv

    env = DistEnv.from_environ({
        "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "n[1-2]",
        "SLURM_JOB_ID": "57", "SLURM_ARRAY_JOB_ID": "55", "SLURM_ARRAY_TASK_ID": "2", "SLURMD_NODENAME": "n2"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.node_rank) == (3, 4, 1, 2, 1)
    assert (env.master_addr, env.nodelist, env.hostname) == ("n1", ("n1", "n2"), "n2")
    assert env.slurm_job_id == "55_2"  # as squeue and sacct show it
    assert env.master_port == 20057  # from the job's own id: array elements do not collide


def test_a_point_needs_one_process_per_shard(quick) -> None:
    from energybench.distributed import DistEnv
    from energybench.point import run_point

    outcome = run_point(quick("shards=2"), DistEnv.single())
    assert outcome.state == "failed" and not outcome.interrupted
    assert "shards=2 but 1 processes were started" in outcome.reason


def test_a_failed_slurm_point_is_named_by_its_earliest_rank_error_of_this_submission(tmp_path: Path) -> None:
    import json

    from energybench.results.failures import recorded_reason
    from energybench.results.layout import point_dir
    from energybench.results.store import read_status, write_status

    cfg = compose(["experiment=quickstart", "shards=2", f"out_dir={tmp_path}"])
    pdir, since = point_dir(cfg), 1_000_000.0
    (pdir / "errors").mkdir(parents=True)
    write_status(pdir, "failed", "RuntimeError: Connection closed by peer")
    assert recorded_reason(pdir, read_status(pdir), since - 1) == "RuntimeError: Connection closed by peer"  # no rank errors

    def error(rank: int, at: float, reason: str) -> None:
        (pdir / "errors" / f"rank-{rank}.json").write_text(json.dumps({"reason": reason, "failed_at_unix_s": at}))

    error(1, since - 100, "RuntimeError: an earlier submission's")  # stale: ignored
    error(0, since + 2, "RuntimeError: Connection closed by peer")  # the consequence
    assert recorded_reason(pdir, read_status(pdir), since - 1) == "RuntimeError: Connection closed by peer"
    error(1, since + 1, "CUDA out of memory: tried to allocate 2 GiB")  # the cause
    assert recorded_reason(pdir, read_status(pdir), since - 1) == "rank 1: CUDA out of memory: tried to allocate 2 GiB"


def test_a_point_whose_rank_0_ended_is_waited_for_while_slurm_still_holds_its_job(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """A requeued job keeps its first run's rank-0 result while Slurm holds it for the next run: the sweep
    takes a result once squeue no longer lists the job, or a `done` one of the current run; a result of an
    earlier run is stale; squeue failing is no answer (squeue and sacct faked on PATH: the states are not
    ours to time on a real cluster; tests/test_slurm_cluster.py requeues a two-node point for real)."""
    import pickle
    import time
    from types import SimpleNamespace

    from submitit.slurm.slurm import SlurmJob

    from energybench.dispatch import slurm as dispatch
    from energybench.dispatch.slurm import Job
    from energybench.results.status import PointOutcome

    def ended(j: Job) -> bool:
        return dispatch._ended(j, lambda outcome: outcome)  # submitit's result is the outcome itself here

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, var in (("squeue", "FAKE_SQUEUE"), ("sacct", "FAKE_SACCT")):
        (bin_dir / name).write_text(f'#!/bin/sh\n[ -n "${var}_FAIL" ] && {{ echo "${var}_FAIL" >&2; exit 1; }}\n'
                                    f'[ -n "${var}" ] && echo "${var}"\nexit 0\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    job = SlurmJob(folder=tmp_path / "submitit", job_id="77", tasks=(0, 1))
    result = job.task(0).paths.result_pickle
    result.parent.mkdir(parents=True, exist_ok=True)

    def write(state: str, age_s: float = 0.0) -> None:
        result.unlink(missing_ok=True)  # a new file, as submitit writes one per run
        result.write_bytes(pickle.dumps(("success", PointOutcome("p", state, None if state == "done" else "x"))))
        os.utime(result, (time.time() - age_s, time.time() - age_s))

    start_1, start_2 = int(time.time()) - 3600, int(time.time()) - 60
    write("failed", age_s=120)  # run 1's rank 0, failed by its peer's SIGTERM
    j = Job(point=SimpleNamespace(id="p"), index=0, job=job)
    monkeypatch.setenv("FAKE_SQUEUE", f"RUNNING|{start_1}")
    assert not ended(j)  # a failed result while the job still runs: wait for the job's end
    for listed in ("PENDING|N/A", "REQUEUED|N/A", "REQUEUE_HOLD|N/A"):  # waiting to run again
        monkeypatch.setenv("FAKE_SQUEUE", listed)
        assert not ended(j), listed
    assert j.stale_result == dispatch._result_id(j)  # known to be an earlier run's
    monkeypatch.setenv("FAKE_SQUEUE", f"RUNNING|{start_2}")
    assert not ended(j)
    monkeypatch.setenv("FAKE_SQUEUE_FAIL", "slurm_load_jobs error: Socket timed out on send/recv operation")
    assert not ended(j) and j.unknown_since is not None  # no answer is not an end
    write("done")  # run 2 finished; squeue still silent: a fresh done result counts
    assert ended(j)
    monkeypatch.delenv("FAKE_SQUEUE_FAIL")
    monkeypatch.setenv("FAKE_SQUEUE", f"COMPLETING|{start_2}")
    assert ended(j)  # this run's point is done, while its other tasks finish
    monkeypatch.setenv("FAKE_SQUEUE", f"SUSPENDED|{start_2}")
    assert ended(j) and j.stale_result != dispatch._result_id(j)  # suspended is not waiting to run again

    # attached to a job already on its rerun: a result older than the run's start is the earlier run's
    write("failed", age_s=600)
    late = Job(point=SimpleNamespace(id="q"), index=1, job=job)
    monkeypatch.setenv("FAKE_SQUEUE", f"RUNNING|{start_2}")
    assert not ended(late) and late.stale_result == dispatch._result_id(late)
    # ... and a rerun that starts between two polls makes what is there stale
    seen = Job(point=SimpleNamespace(id="r"), index=2, job=job)
    write("done", age_s=600)
    monkeypatch.setenv("FAKE_SQUEUE", f"RUNNING|{start_1}")
    assert ended(seen)
    seen.run_start = start_1
    monkeypatch.setenv("FAKE_SQUEUE", f"RUNNING|{start_2}")
    assert not ended(seen) and seen.stale_result == dispatch._result_id(seen)

    # squeue silent for long and the result stale: sacct's end state decides
    monkeypatch.setenv("FAKE_SQUEUE_FAIL", "squeue: error: Invalid user")
    silent = Job(point=SimpleNamespace(id="t"), index=4, job=job, stale_result=dispatch._result_id(seen),
                 unknown_since=time.time() - dispatch.QUEUE_UNKNOWN_MAX_S - 1)
    monkeypatch.setenv("FAKE_SACCT", "RUNNING")
    assert not ended(silent)  # sacct: still running
    silent.unknown_warned = 0.0
    monkeypatch.setenv("FAKE_SACCT", "NODE_FAIL")
    assert ended(silent)
    monkeypatch.delenv("FAKE_SQUEUE_FAIL")
    monkeypatch.setenv("FAKE_SQUEUE", "")
    assert ended(Job(point=SimpleNamespace(id="s"), index=3, job=job))  # no longer listed


def test_a_failed_rank_0_of_a_job_slurm_ended_is_recorded_with_slurm_s_end_state(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """scancel on a two-node job: rank 0 can return `failed` with its peer's closed connection before its own
    SIGTERM; once the job has ended, the point's reason names sacct's end state first (CANCELLED), the rank's
    error after it. A job that ended COMPLETED or FAILED keeps the rank's own reason (sacct faked on PATH, as
    above; tests/test_slurm_gpu_session.py cancels a two-node point for real)."""
    import pickle
    from types import SimpleNamespace

    from submitit.slurm.slurm import SlurmJob

    from energybench.dispatch import slurm as dispatch
    from energybench.results.status import PointOutcome, read_status

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text('#!/bin/sh\necho "$FAKE_SACCT"\n')
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    job = SlurmJob(folder=tmp_path / "submitit", job_id="78", tasks=(0, 1))
    result = job.task(0).paths.result_pickle
    result.parent.mkdir(parents=True, exist_ok=True)
    peer = "RuntimeError: gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:2974"
    result.write_bytes(pickle.dumps(("success", PointOutcome("p", "failed", peer))))
    for sacct, expected in (("CANCELLED by 0", f"Slurm job 78 ended CANCELLED: {peer}"),
                            ("NODE_FAIL", f"Slurm job 78 ended NODE_FAIL: {peer}"),
                            ("FAILED", peer), ("COMPLETED", peer)):
        monkeypatch.setenv("FAKE_SACCT", sacct)
        point_dir = tmp_path / sacct.split()[0]
        point_dir.mkdir()
        j = dispatch.Job(point=SimpleNamespace(id="p", dir=point_dir), index=0, job=job)
        outcome = dispatch._collect(j, lambda o: o)
        assert (outcome.state, outcome.reason) == ("failed", expected), sacct
        if expected != peer:  # the launcher's verdict is the point's status
            assert read_status(point_dir)["reason"] == expected


def test_a_job_squeue_no_longer_knows_is_ended_and_a_silent_squeue_is_not(tmp_path: Path, monkeypatch) -> None:
    from energybench.util.slurm_queue import QueueUnknown, queue_entry

    squeue = tmp_path / "squeue"
    squeue.write_text('#!/bin/sh\necho "$FAKE_ERR" >&2\nexit 1\n')
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ERR", "slurm_load_jobs error: Invalid job id specified")
    assert queue_entry("77") is None
    monkeypatch.setenv("FAKE_ERR", "slurm_load_jobs error: Unable to contact slurm controller")
    with pytest.raises(QueueUnknown, match="Unable to contact"):
        queue_entry("77")
