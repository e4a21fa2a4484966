"""Prompts are drawn deterministically by seed, without replacement unless too few, tokenized with LLaMA's tokenizer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from energybench.config import DatasetConfig
from energybench.data import FIELDS, draw_indices, load_workload
from energybench.data.records import read_records


def test_draw_is_deterministic_by_seed_and_without_replacement() -> None:
    a, replaced = draw_indices(7473, 4096, seed=1)
    assert not replaced
    assert len(a) == 4096 and len(set(a.tolist())) == 4096
    assert a.min() >= 0 and a.max() < 7473
    assert np.array_equal(a, draw_indices(7473, 4096, seed=1)[0])
    assert not np.array_equal(a, draw_indices(7473, 4096, seed=2)[0])


def test_a_small_dataset_is_drawn_with_replacement_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="energybench.data"):
        indices, replaced = draw_indices(1319, 4096, seed=1)
    assert replaced and len(indices) == 4096 and indices.max() < 1319
    assert len(set(indices.tolist())) < 4096  # necessarily repeats
    assert "1319 records, fewer than samples=4096: drawing with replacement" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="energybench.data"):
        draw_indices(1319, 1319, seed=1)
    assert caplog.text == ""


@pytest.fixture
def gsm8k_cfg(shared_datasets: Path) -> DatasetConfig:
    return DatasetConfig(name="gsm8k", path=str(shared_datasets / "gsm8k/test.jsonl"))


def test_real_prompts_and_reference_lengths_come_from_the_llama_tokenizer(gsm8k_cfg: DatasetConfig,
                                                                          tokenizer) -> None:
    records = read_records(Path(gsm8k_cfg.path), FIELDS["gsm8k"])
    workload = load_workload(gsm8k_cfg, 64, 5, 32000, tokenizer)
    indices, _ = draw_indices(len(records), 64, 5)
    assert len(workload.samples) == 64 and not workload.with_replacement
    for sample, i in zip(workload.samples, indices):
        record = records[int(i)]
        assert sample.prompt_ids[0] == tokenizer.bos_id
        assert tokenizer.decode(list(sample.prompt_ids[1:])) == record["question"].strip()
        assert sample.reference_tokens == len(tokenizer.sp.encode(record["answer"]))
    lengths = [len(s.prompt_ids) for s in workload.samples]
    assert len(set(lengths)) > 10  # real prompts differ in length; none were padded or cut


def test_workload_is_deterministic_by_seed(gsm8k_cfg: DatasetConfig, tokenizer) -> None:
    one = load_workload(gsm8k_cfg, 32, 1, 32000, tokenizer)
    assert one.samples == load_workload(gsm8k_cfg, 32, 1, 32000, tokenizer).samples
    assert one.samples != load_workload(gsm8k_cfg, 32, 2, 32000, tokenizer).samples


def test_workload_with_replacement_when_the_file_is_small(tmp_path: Path, tokenizer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "five.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}) + "\n"
                            for i in range(5)))
    with caplog.at_level(logging.WARNING, logger="energybench.data"):
        workload = load_workload(DatasetConfig(name="gsm8k", path=str(path)), 12, 1, 32000, tokenizer)
    assert workload.with_replacement and len(workload.samples) == 12
    assert len(set(workload.samples)) <= 5
    assert "fewer than samples=12" in caplog.text


def test_sort_by_length_orders_the_same_prompts(gsm8k_cfg: DatasetConfig, tokenizer) -> None:
    plain = load_workload(gsm8k_cfg, 40, 1, 32000, tokenizer)
    ordered = load_workload(DatasetConfig(name="gsm8k", path=gsm8k_cfg.path, sort_by_length=True), 40, 1, 32000,
                            tokenizer)
    lengths = [len(s.prompt_ids) for s in ordered.samples]
    assert lengths == sorted(lengths)
    assert lengths != [len(s.prompt_ids) for s in plain.samples]
    assert sorted(ordered.samples, key=hash) == sorted(plain.samples, key=hash)


def test_batches_of_batch(gsm8k_cfg: DatasetConfig, tokenizer) -> None:
    workload = load_workload(gsm8k_cfg, 10, 1, 32000, tokenizer)
    batches = workload.batches(4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert tuple(s for b in batches for s in b) == workload.samples


def test_dataset_source_is_the_file_and_its_sha256(gsm8k_cfg: DatasetConfig, tokenizer) -> None:
    import hashlib

    expected = hashlib.sha256(Path(gsm8k_cfg.path).read_bytes()).hexdigest()
    assert load_workload(gsm8k_cfg, 2, 1, 32000, tokenizer).source == f"{gsm8k_cfg.path} sha256:{expected}"
