"""The recipe of docs/extending.md, "Add a site cluster preset": a site's own cluster/ and model/ presets in a
folder outside the package, found through $ENERGYBENCH_CONFIG_PATH by the sweep, the compose API, the group
choice checks and the sbatch template's `point-dir`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]

# exactly the files the recipe tells a site to write
MYSITE = """\
# @package _global_
# Our lab's nodes: points run here (cluster=local's launcher); a Slurm site lists `- slurm` instead.
defaults:
  - local
cluster:
  name: mysite
  gpus_per_node: 2
  gpu_type: A100-80GB
"""
MYSITE_SLURM = """\
# @package _global_
defaults:
  - slurm
cluster:
  name: mysite_slurm
  partition: gpu-a100
  account: lab123
  gpus_per_node: 4
  gpu_type: A100-80GB
  cpus_per_task: 16
  setup: ["module load cuda/12.1"]
"""
MYMODEL = """\
# A LLaMA-shaped model of our own (random weights), small enough for a CPU.
name: mymodel
dim: 128
n_layers: 2
n_heads: 4
vocab_size: 32000
multiple_of: 32
max_seq_len: 512
weights: random
tokenizer: null
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site-conf"
    (folder / "cluster").mkdir(parents=True)
    (folder / "model").mkdir()
    (folder / "cluster" / "mysite.yaml").write_text(MYSITE)
    (folder / "cluster" / "mysite_slurm.yaml").write_text(MYSITE_SLURM)
    (folder / "model" / "mymodel.yaml").write_text(MYMODEL)
    monkeypatch.setenv("ENERGYBENCH_CONFIG_PATH", str(folder))
    return folder


def run(args: list[str], cwd: Path, environ: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **environ}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_site_preset_and_model_from_outside_the_package_run_a_sweep_on_cpu(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(["-m", "energybench.sweep", "-m", "cluster=mysite", "model=mymodel", "dataset=synthetic",
                "experiment=quickstart", "samples=4", "batch=2,4", "max_tokens=4", "device=cpu",
                f"out_dir={out}"], tmp_path, {"ENERGYBENCH_CONFIG_PATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 done, 0 failed, 0 skipped" in proc.stdout
    rows = [pq.read_table(p).to_pylist()[0] for p in sorted(out.glob("quickstart/point=*/run.parquet"))]
    assert [(r["cluster"], r["model"], r["batch"]) for r in rows] in (
        [("mysite", "mymodel", 2), ("mysite", "mymodel", 4)], [("mysite", "mymodel", 4), ("mysite", "mymodel", 2)])
    assert all(p.name.startswith("point=mymodel-synthetic-") for p in out.glob("quickstart/point=*"))


def test_the_compose_api_and_the_slurm_parameters_read_a_site_preset(site: Path) -> None:
    from energybench.confload import compose, group_options
    from energybench.slurm import executor_parameters

    assert {"mysite", "mysite_slurm", "local", "slurm"} <= set(group_options("cluster"))
    assert "mymodel" in group_options("model")
    cfg = compose(["cluster=mysite_slurm", "model=mymodel", "dataset=synthetic", "shards=4"])
    assert (cfg.cluster.name, cfg.cluster.launcher, cfg.model.dim) == ("mysite_slurm", "slurm", 128)
    params = executor_parameters(cfg)
    assert (params["slurm_partition"], params["slurm_account"], params["cpus_per_task"]) == ("gpu-a100", "lab123", 16)
    assert params["slurm_setup"][-1] == "module load cuda/12.1"


def test_site_choices_are_listed_and_a_bad_config_path_is_one_line(site: Path, tmp_path: Path) -> None:
    from energybench.config import ConfigError
    from energybench.confload import check_group_choices

    with pytest.raises(ConfigError, match="cluster=mysit: unknown cluster; choose one of .*mysite, mysite_slurm"):
        check_group_choices(["cluster=mysit"])
    proc = run(["-m", "energybench.sweep", "cluster=mysite", "experiment=quickstart"], tmp_path,
               {"ENERGYBENCH_CONFIG_PATH": str(tmp_path / "no-such-folder")})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: ENERGYBENCH_CONFIG_PATH: {tmp_path / 'no-such-folder'} is not a folder; "
                                   "set it to folders holding cluster/, model/, ... (colon-separated), or unset it")


def test_without_the_search_path_the_site_preset_is_unknown(site: Path, tmp_path: Path) -> None:
    proc = run(["-m", "energybench.sweep", "cluster=mysite", "experiment=quickstart"], tmp_path,
               {"ENERGYBENCH_CONFIG_PATH": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: cluster=mysite: unknown cluster; choose one of local, slurm,")


def test_the_sbatch_templates_point_dir_resolves_a_site_preset(site: Path, tmp_path: Path) -> None:
    proc = run(["-m", "energybench.slurm", "point-dir", "cluster=mysite_slurm", "model=mymodel", "dataset=synthetic",
                "shards=1", f"out_dir={tmp_path / 'out'}"], tmp_path, {"ENERGYBENCH_CONFIG_PATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()).name.startswith("point=mymodel-synthetic-b64-t128-s1-")
