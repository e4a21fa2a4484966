"""Point ids: the same measurement keeps its id (so a re-run resumes it), a different one gets another."""

from __future__ import annotations

import pytest

from energybench.confload import compose
from energybench.results.layout import point_id

QUICK = ["experiment=quickstart"]


def pid(*overrides: str) -> str:
    return point_id(compose([*QUICK, *overrides]))


@pytest.mark.parametrize("override", ["out_dir=/elsewhere", "sweep=other", "resume=false",
                                      "power.state_dir=/tmp/states"])
def test_where_and_how_a_point_is_dispatched_is_not_part_of_its_id(override: str) -> None:
    assert pid(override) == pid()
    slurm = ("cluster=slurm", "cluster.gpus_per_node=4")
    assert pid(*slurm, "cluster.partition=gpu", "cluster.time_min=600", override) == pid(*slurm)


def test_an_unused_tokenizer_does_not_change_a_synthetic_points_id(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = pid()
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", "/models/llama/tokenizer.model")  # set for real-data sweeps
    assert pid() == plain
    assert pid("dataset=gsm8k") != pid("dataset=gsm8k", "model.tokenizer=/other/tokenizer.model")


@pytest.mark.parametrize("override", ["batch=4", "seed=2", "meter.sample_hz=20", "cluster.gpu_type=A100-80GB",
                                      "dataset.like=gsm8k"])
def test_what_is_measured_is_part_of_its_id(override: str) -> None:
    assert pid(override) != pid()


def test_the_id_is_readable() -> None:
    assert pid("power_cap=250").startswith("tiny-synthetic-b8-t32-s1-p250W-reference-")


@pytest.mark.parametrize("override", ["carbon.intensity_g_per_kwh=400", "carbon.pue=1.3", "cost.usd_per_kwh=0.12"])
def test_carbon_and_cost_factors_are_not_part_of_the_id(override: str) -> None:
    assert pid(override) == pid()


def test_ids_are_those_written_before_the_carbon_and_cost_keys_existed() -> None:
    """Recorded from the tree before `carbon` and `cost` were added: results written then keep their ids.
    (The committed records under docs/benchmarks/ predate earlier id changes and do not match either.)"""
    assert pid() == "tiny-synthetic-b8-t32-s1-pnone-reference-cbf5edf7"
