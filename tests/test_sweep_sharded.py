"""`python -m energybench.sweep experiment=quickstart shards=N` on a CPU: N gloo ranks per point (2; 4 and 8 marked slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import energybench.results as results
from energybench.util.process import pid_alive

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shards", [
    [2],
    pytest.param([4, 8], marks=pytest.mark.slow),  # 65B's shard counts on one host (issue 19), on CPU with gloo
])
def test_quickstart_with_several_shards_runs_both_engines(shards: list[int], tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "experiment=quickstart",
                           f"shards={','.join(map(str, shards))}", "engine=reference,fast", "samples=4", "max_tokens=6",
                           "batch=2", f"out_dir={out}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{2 * len(shards)} done, 0 failed, 0 skipped" in proc.stdout
    points = results.load(out)
    assert sorted(zip(points["shards"], points["engine"])) == [(s, e) for s in shards for e in ("fast", "reference")]
    assert (points["tokens"] == 4 * 6).all()  # random weights, sampled length: every rank generated every token


BREAK_RANK_1 = '''
import os
if os.environ.get("RANK") == "1":  # rank 1 of every point breaks in its first batch; rank 0 waits in a collective
    from energybench.engine.fast import FastEngine
    from energybench.engine.reference import ReferenceEngine

    import time

    import torch.distributed as dist

    def fail(*args, **kwargs):
        raise RuntimeError("rank 1 broke")

    def slow_destroy(*args, _destroy=dist.destroy_process_group, **kwargs):
        _destroy(*args, **kwargs)  # rank 0's collective breaks here: it records and exits first
        time.sleep(5)  # while this rank is still tearing down (the launcher then stops it)

    dist.destroy_process_group = slow_destroy

    def die(*args, **kwargs):
        os._exit(3)  # killed, as by the OOM killer: no error file

    ReferenceEngine.generate, FastEngine.generate = fail, die
'''


def test_a_failing_rank_names_the_cause_not_rank_0s_broken_collective(tmp_path: Path) -> None:
    from energybench.confload import compose
    from energybench.results.layout import point_dir

    out = tmp_path / "out"
    args = ["experiment=quickstart", "shards=2", "samples=4", "max_tokens=4", "batch=4", f"out_dir={out}"]
    stale = point_dir(compose([*args, "engine=fast"])) / "errors" / "rank-1.json"
    stale.parent.mkdir(parents=True)  # the earliest error of all, but an earlier attempt's
    stale.write_text('{"reason": "RuntimeError: an earlier attempt\'s error", "failed_at_unix_s": 0}\n')
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(BREAK_RANK_1)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'inject'}:{REPO}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", *args, "engine=reference,fast"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    reasons = results.load(out).set_index("engine")["reason"]
    assert reasons["reference"] == "rank 1: RuntimeError: rank 1 broke"
    assert reasons["fast"] == "rank 1 exited with code 3"


def test_sigterm_to_the_sweep_alone_stops_its_ranks_and_the_sweep(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "energybench.sweep", "experiment=quickstart", "shards=2",
                              "samples=64", "max_tokens=64", "batch=2,4", f"out_dir={out}"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*/point=*/batches.parquet")):  # the ranks are generating (flushed every 5 s)
            assert sweep.poll() is None and time.monotonic() < deadline, "no point started"
            time.sleep(0.2)
        ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(sweep.pid)], capture_output=True,
                                                text=True).stdout.split()]
        assert len(ranks) == 2
        sweep.send_signal(signal.SIGTERM)  # to the sweep process only, as `kill <pid>` does
        _, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 143, err[-3000:]
    assert "the sweep stops here" in err
    assert not [r for r in ranks if Path(f"/proc/{r}").exists()]  # no rank left running the point
    states = sorted(json.loads(p.read_text())["state"] for p in out.glob("*/point=*/status.json"))
    assert states == ["failed", "pending"]


def test_kill_9_of_the_sweep_takes_its_ranks_with_it_and_the_point_reads_interrupted_or_failed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "energybench.sweep", "experiment=quickstart", "shards=2",
                              "samples=64", "max_tokens=64", "batch=2", f"out_dir={out}"], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*/point=*/batches.parquet")):  # the ranks are generating
            assert sweep.poll() is None and time.monotonic() < deadline, "no point started"
            time.sleep(0.2)
        ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(sweep.pid)], capture_output=True,
                                                text=True).stdout.split()]
        assert len(ranks) == 2
        sweep.kill()  # SIGKILL: the sweep runs no handler, no finally
        sweep.wait()
        deadline = time.monotonic() + 30  # SIGTERM at once (parent-death signal), SIGKILL after a 10 s grace
        while [r for r in ranks if pid_alive(r)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [r for r in ranks if pid_alive(r)], "rank processes outlived the sweep"
    finally:
        sweep.kill()
        for r in [r for r in ranks if pid_alive(r)] if "ranks" in locals() else []:
            os.kill(r, signal.SIGKILL)
    (status,) = results.points(out)["status"]
    assert status in ("failed", "interrupted")  # rank 0 recorded its SIGTERM, or died before it could: never running
