"""Synthetic workload: random token ids whose prompt and answer lengths follow a real dataset's.

The joint (prompt, reference) length histograms in lengths.json were measured with the LLaMA
tokenizer on the real files by scripts/measure_lengths.py (Alpaca: the 5,000-record sample; GSM8K:
the train split, dataset=gsm8k's default); nothing here needs a network, a dataset or a tokenizer.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from energybench.data import Sample, Workload

FIRST_ID = 3  # ids 0-2 are <unk>, BOS and EOS


@lru_cache(maxsize=None)
def length_table(like: str) -> dict:
    """{'pairs': [[prompt_tokens, reference_tokens, count], ...], 'source': ..., ...} for alpaca or gsm8k."""
    tables = json.loads(resources.files("energybench.data").joinpath("lengths.json").read_text())
    if like not in tables:
        raise ValueError(f"dataset.like={like!r}: must be one of {', '.join(sorted(tables))}")
    return tables[like]


def draw_lengths(like: str, samples: int, seed: int) -> np.ndarray:
    """[samples, 2] (prompt_tokens incl. BOS, reference_tokens) drawn from the joint histogram."""
    pairs = np.asarray(length_table(like)["pairs"], dtype=np.int64)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pairs), size=samples, p=pairs[:, 2] / pairs[:, 2].sum())
    return pairs[picks, :2]


def synthetic_workload(like: str, samples: int, seed: int, vocab_size: int) -> Workload:
    """`samples` prompts of random token ids in [3, vocab_size) after BOS, with (prompt, reference)
    lengths drawn jointly from `like`'s measured histogram; deterministic by seed."""
    lengths = draw_lengths(like, samples, seed)
    rng = np.random.default_rng([seed, 1])
    drawn = []
    for prompt_len, ref_len in lengths:
        ids = rng.integers(FIRST_ID, vocab_size, size=int(prompt_len) - 1)
        drawn.append(Sample((1, *ids.tolist()), int(ref_len)))
    table = length_table(like)
    source = f"synthetic like={like} (lengths of {table['source']} sha256:{table['sha256']})"
    return Workload("synthetic", source, tuple(drawn), with_replacement=True)
