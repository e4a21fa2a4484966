"""experiment=paper and experiment=paper_h200: the grids their sweeps expand to, and the published ids."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from energybench.confload import compose, conf_dir
from energybench.results.layout import point_id

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = sorted((REPO / "docs" / "results" / "h200").glob("h200-*/point=*/config.yaml"))


@pytest.fixture(autouse=True)
def tokenizer(monkeypatch):
    """Real datasets need a tokenizer path to validate (nothing is tokenized here)."""
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", "/path/to/tokenizer.model")


def expand(experiment: str, cli: list[str] = ()) -> list[list[str]]:
    """The jobs the energybench sweeper would launch: the preset's hydra.sweeper.params, then the command line's
    overrides (a key given there replaces the preset's), expanded by Hydra's BasicSweeper, as the sweeper does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = hydra_compose("config", overrides=[f"experiment={experiment}", *cli], return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, f"experiment={experiment}", *cli])
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_paper_preset_is_the_papers_grid():
    jobs = expand("paper")
    points = [compose(job) for job in jobs]
    assert len(points) == 5 * 3 * 3 * 2  # model/shards shapes x max tokens x power caps x datasets
    shapes = Counter((p.model.name, p.shards) for p in points)
    assert shapes == {("7b", 1): 18, ("13b", 2): 18, ("65b", 8): 18, ("65b", 16): 18, ("65b", 32): 18}
    assert {p.max_tokens for p in points} == {256, 512, 1024}
    assert {p.power_cap for p in points} == {250, 175, 150}
    assert {p.dataset.name for p in points} == {"alpaca", "gsm8k"}
    assert {(p.batch, p.samples, p.engine, p.length) for p in points} == {(64, 4096, "reference", "sampled")}
    assert {p.power.backend for p in points} == {"nvml"}  # caps are enforced on a site's own cluster
    assert len({point_id(p) for p in points}) == len(points)


def test_paper_preset_command_line_replaces_its_params():
    points = [compose(job) for job in expand("paper", ["power_cap=250", "+shape=65b_s8", "dataset=gsm8k"])]
    assert [(p.model.name, p.shards, p.power_cap, p.dataset.name) for p in points] == [("65b", 8, 250, "gsm8k")] * 3


def test_paper_h200_preset_main_points():
    points = [compose(job) for job in expand("paper_h200")]
    assert Counter((p.model.name, p.engine, p.dataset.name) for p in points) == {
        (m, e, d): 1 for m in ("7b", "13b") for e in ("reference", "fast") for d in ("alpaca", "gsm8k")}
    assert {(p.batch, p.max_tokens, p.shards, p.samples) for p in points} == {(64, 256, 1, 128)}
    assert {(p.power.backend, p.power.policy, p.meter.idle_s) for p in points} == {("none", "observe", 3)}


def _published_overrides(config: dict) -> list[str]:
    """The command-line keys that made a published point, on top of experiment=paper_h200."""
    keys = ["batch", "max_tokens", "shards", "engine", "length", "samples", "sweep", "out_dir"]
    return [f"model={config['model']['name']}", f"dataset={config['dataset']['name']}",
            f"model.tokenizer={config['model']['tokenizer']}", *(f"{k}={config[k]}" for k in keys)]


@pytest.mark.skipif(not PUBLISHED, reason="no published H200 points in docs/results/h200")
@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.parent.name)
def test_paper_h200_preset_gives_the_published_point_ids(path: Path):
    config = yaml.safe_load(path.read_text())
    cfg = compose(["experiment=paper_h200", *_published_overrides(config)])
    assert f"point={point_id(cfg)}" == path.parent.name


def test_paper_h200_preset_with_other_settings_changes_the_ids():
    config = yaml.safe_load(PUBLISHED[0].read_text())
    cfg = compose(["experiment=paper_h200", *_published_overrides(config), "meter.idle_s=5"])
    assert f"point={point_id(cfg)}" != PUBLISHED[0].parent.name


@pytest.mark.slow
def test_paper_h200_preset_runs_through_the_sweep_command(tmp_path: Path, fake_nvml):
    """The real sweep command with the preset's params, made tiny on the command line: 2 engines x 2 datasets."""
    env = {**os.environ, "ENERGYBENCH_DATA_DIR": str(tmp_path / "none")}
    cmd = [sys.executable, "-m", "energybench.sweep", "-m", "experiment=paper_h200", "model=tiny",
           "dataset=synthetic", "samples=4", "batch=2", "max_tokens=4", "meter.idle_s=0", "meter.sample_hz=0",
           "warmup_batches=0", f"out_dir={tmp_path}", "sweep=preset"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = sorted(p.parent.name for p in (tmp_path / "preset").glob("point=*/run.parquet"))
    assert len(done) == 2, done  # synthetic data is one workload: engine=reference,fast
    assert {d.split("-")[-2] for d in done} == {"reference", "fast"}
