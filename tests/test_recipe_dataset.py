"""docs/extending.md "Add a dataset", done from outside the package: a spec file and a data file in a tmp
folder, made visible by $ENERGYBENCH_DATASETS and $ENERGYBENCH_DATA_DIR, then a CPU sweep over it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import energybench.results as results
from energybench.config import ConfigError, DatasetConfig, from_mapping
from energybench.data import DataError, load_workload, prompts_and_references

REPO = Path(__file__).resolve().parents[1]
RECORDS = [{"q": f"What is {i} + {i}?", "a": f"{i} + {i} = {2 * i}, so the answer is {2 * i}."} for i in range(12)]
SPEC = """\
name: trivia
fields: [q, a]
reference: a
template: "Q: {q}\\nA:"
files: [trivia/trivia.jsonl]
"""


def site(tmp_path: Path) -> dict[str, str]:
    """The recipe: <site>/datasets/trivia.yaml (the spec) and <site>/data/trivia/trivia.jsonl (the records)."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "trivia.yaml").write_text(SPEC)
    (tmp_path / "data" / "trivia").mkdir(parents=True)
    (tmp_path / "data" / "trivia" / "trivia.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return {"ENERGYBENCH_DATASETS": str(tmp_path / "datasets"), "ENERGYBENCH_DATA_DIR": str(tmp_path / "data")}


def sweep(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           **environ}
    return subprocess.run([sys.executable, "-m", "energybench.sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_site_dataset_runs_in_a_sweep_with_its_own_template(tmp_path: Path, llama_tokenizer_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env = site(tmp_path)
    out = tmp_path / "out"
    proc = sweep(tmp_path, "experiment=quickstart", "dataset=trivia", f"model.tokenizer={llama_tokenizer_path}",
                 "samples=8", "batch=4", "max_tokens=8", "length=oracle", f"out_dir={out}", **env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    row = results.load(out).iloc[0]
    data = tmp_path / "data" / "trivia" / "trivia.jsonl"
    assert row["dataset"] == "trivia" and row["status"] == "done"
    assert row["dataset_source"].startswith(f"{data} sha256:")

    from energybench.data import registry

    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))  # this process forgets trivia afterwards
    monkeypatch.setattr(registry, "_read_dirs", set())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from energybench.model.tokenizer import Tokenizer

    cfg = DatasetConfig(name="trivia", files=("trivia/trivia.jsonl",))
    assert prompts_and_references(cfg, RECORDS[:1]) == [("Q: What is 0 + 0?\nA:", RECORDS[0]["a"])]
    tok = Tokenizer(llama_tokenizer_path)
    workload = load_workload(cfg, 8, 1, 32000, tok)  # the point's seed is 1
    prompts = {tuple(tok.encode(f"Q: {r['q']}\nA:", bos=True)) for r in RECORDS}
    assert {s.prompt_ids for s in workload.samples} <= prompts  # the spec's template, not GSM8K's {question}
    # length=oracle generates each prompt's reference length (at most max_tokens): the spec's reference field
    assert row["tokens"] == sum(min(s.reference_tokens, 8) for s in workload.samples)


def test_an_unregistered_dataset_is_a_one_line_error_never_another_template(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^dataset.name='trivia': unknown dataset; must be one of alpaca, gsm8k, "):
        prompts_and_references(DatasetConfig(name="trivia"), RECORDS[:1])
    with pytest.raises(ConfigError, match=r"^dataset.name='trivia': unknown dataset"):
        from_mapping(DatasetConfig, {"name": "trivia"}, "dataset.")
    proc = sweep(tmp_path, "experiment=quickstart", "dataset=trivia", f"out_dir={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
    assert "dataset=trivia: unknown dataset" in proc.stderr and not (tmp_path / "out").exists()


def test_a_spec_whose_template_names_a_missing_field_is_rejected_before_running(tmp_path: Path) -> None:
    env = site(tmp_path)
    proc = sweep(tmp_path, "experiment=quickstart", "dataset=trivia", "dataset.template='{question}'",
                 "model.tokenizer=/nonexistent", f"out_dir={tmp_path / 'out'}", **env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "dataset.template='{question}': {question} is not a field of trivia records; use placeholders {q}, {a}" \
        in proc.stderr


def test_a_malformed_spec_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    env = site(tmp_path)
    spec = tmp_path / "datasets" / "trivia.yaml"
    spec.write_text(SPEC.replace("reference: a", "answer: a"))
    proc = sweep(tmp_path, "experiment=quickstart", "dataset=trivia", f"out_dir={tmp_path / 'out'}", **env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: {spec}: unknown key answer; a dataset spec has ") and \
        len(proc.stderr.strip().splitlines()) == 1, proc.stderr
