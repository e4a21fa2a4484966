"""Synthetic prompts follow the stored length histograms, need nothing but the package; the numbers re-measure."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from energybench.config import DatasetConfig
from energybench.data import load_workload
from energybench.data.source import sha256_of
from energybench.data.synthetic import draw_lengths, length_table

REPO = Path(__file__).resolve().parents[2]


def stored(like: str) -> np.ndarray:
    """[n, 2] (prompt, reference) lengths, one row per measured record."""
    pairs = np.asarray(length_table(like)["pairs"])
    return np.repeat(pairs[:, :2], pairs[:, 2], axis=0)


@pytest.mark.parametrize("like", ["alpaca", "gsm8k"])
def test_synthetic_lengths_follow_the_stored_histogram(like: str) -> None:
    measured = stored(like)
    workload = load_workload(DatasetConfig(name="synthetic", like=like), 4096, 7, 32000, tokenizer=None)
    prompts = np.array([len(s.prompt_ids) for s in workload.samples])
    references = np.array([s.reference_tokens for s in workload.samples])
    for drawn, real in ((prompts, measured[:, 0]), (references, measured[:, 1])):
        assert ks_2samp(drawn, real).pvalue > 0.01
    assert set(zip(prompts.tolist(), references.tolist())) <= set(map(tuple, measured.tolist()))  # joint pairs
    assert abs(np.median(references) - length_table(like)["reference_median"]) <= 0.1 * np.median(measured[:, 1])


def test_a_shifted_histogram_is_told_apart() -> None:
    """The KS check above can fail: lengths 10% longer are rejected."""
    drawn = draw_lengths("gsm8k", 4096, 7)[:, 1]
    assert ks_2samp((drawn * 1.1).round(), stored("gsm8k")[:, 1]).pvalue < 0.01


def test_synthetic_ids_and_determinism() -> None:
    cfg = DatasetConfig(name="synthetic", like="alpaca")
    a = load_workload(cfg, 64, 3, 1000, tokenizer=None)
    assert a.samples == load_workload(cfg, 64, 3, 1000, tokenizer=None).samples
    assert a.samples != load_workload(cfg, 64, 4, 1000, tokenizer=None).samples
    for s in a.samples:
        assert s.prompt_ids[0] == 1 and all(3 <= t < 1000 for t in s.prompt_ids[1:])
    assert a.source.startswith("synthetic like=alpaca (lengths of alpaca/alpaca_data_5k.jsonl sha256:")


def test_synthetic_needs_no_tokenizer_network_or_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("synthetic workload used the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # importing it now fails
    monkeypatch.setenv("ENERGYBENCH_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    workload = load_workload(DatasetConfig(name="synthetic", like="gsm8k"), 16, 1, 32000, tokenizer=None)
    assert len(workload.samples) == 16
    assert not (tmp_path / "cache").exists()


def test_unknown_like_is_refused() -> None:
    with pytest.raises(ValueError, match="dataset.like='mmlu': must be one of alpaca, gsm8k"):
        load_workload(DatasetConfig(name="synthetic", like="mmlu"), 4, 1, 32000, tokenizer=None)


def test_stored_summary_matches_the_stored_pairs() -> None:
    for like in ("alpaca", "gsm8k"):
        table, measured = length_table(like), stored(like)
        assert table["records"] == len(measured)
        assert table["prompt_median"] == int(np.median(measured[:, 0]))
        assert table["prompt_max"] == measured[:, 0].max()
        assert table["reference_median"] == int(np.median(measured[:, 1]))
        assert table["reference_max"] == measured[:, 1].max()


def test_gsm8k_lengths_follow_the_default_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from energybench.confload import compose

    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", str(tmp_path / "tokenizer.model"))
    split = compose(["dataset=gsm8k"]).dataset.split
    assert length_table("gsm8k")["source"] == f"gsm8k/{split}.jsonl"


def test_measure_lengths_reproduces_the_stored_tables(shared_datasets: Path, llama_tokenizer_path: Path,
                                                      tokenizer) -> None:
    spec = importlib.util.spec_from_file_location("measure_lengths", REPO / "scripts/measure_lengths.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # type: ignore[union-attr]
    files = {"alpaca": script.ALPACA_FILE, "gsm8k": f"gsm8k/{script.default_gsm8k_split()}.jsonl"}
    for like, rel in files.items():
        assert script.measure(like, shared_datasets / rel, tokenizer) == length_table(like), like
        assert length_table(like)["sha256"] == sha256_of(shared_datasets / rel)
    assert length_table("gsm8k")["tokenizer_sha256"] == sha256_of(llama_tokenizer_path)
