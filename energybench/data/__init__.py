"""Workloads: Alpaca and GSM8K prompts as the paper used them, and synthetic ones with their real lengths."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np

from energybench.config import DatasetConfig
from energybench.data.records import DataError, read_records
from energybench.data.source import resolve
from energybench.data.templates import alpaca_prompt, gsm8k_prompt

log = logging.getLogger(__name__)

__all__ = ["DataError", "Sample", "Workload", "load_workload", "draw_indices"]


class TextTokenizer(Protocol):
    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]: ...


@dataclass(frozen=True)
class Sample:
    prompt_ids: tuple[int, ...]  # BOS + prompt tokens
    reference_tokens: int  # token length of the dataset's reference answer (what length=oracle generates)


@dataclass(frozen=True)
class Workload:
    dataset: str  # alpaca | gsm8k | synthetic
    source: str  # recorded as dataset_source: file and sha256, download URL, or synthetic lengths
    samples: tuple[Sample, ...]
    with_replacement: bool  # the dataset had fewer records than `samples`

    def batches(self, batch: int) -> list[list[Sample]]:
        """Consecutive groups of `batch` samples; the last may be smaller."""
        return [list(self.samples[i : i + batch]) for i in range(0, len(self.samples), batch)]


def draw_indices(n_records: int, samples: int, seed: int) -> tuple[np.ndarray, bool]:
    """`samples` record indices, without replacement unless the dataset is smaller; deterministic by seed."""
    rng = np.random.default_rng(seed)
    if samples <= n_records:
        return rng.choice(n_records, size=samples, replace=False), False
    log.warning("dataset has %d records, fewer than samples=%d: drawing with replacement", n_records, samples)
    return rng.choice(n_records, size=samples, replace=True), True


def load_workload(cfg: DatasetConfig, samples: int, seed: int, vocab_size: int,
                  tokenizer: TextTokenizer | None, environ: Mapping[str, str] | None = None) -> Workload:
    """Draw `samples` prompts of dataset `cfg`, tokenized, with their reference answers' token lengths."""
    if cfg.name == "synthetic":
        from energybench.data.synthetic import synthetic_workload

        return _maybe_sorted(synthetic_workload(cfg.like or "alpaca", samples, seed, vocab_size), cfg)
    if tokenizer is None:
        raise DataError(
            f"dataset={cfg.name} needs a tokenizer: set model.tokenizer=<path to LLaMA's tokenizer.model>, "
            "or use dataset=synthetic"
        )
    source = resolve(cfg, environ)
    pairs = prompts_and_references(cfg, read_records(source.path, FIELDS[cfg.name]))
    indices, replaced = draw_indices(len(pairs), samples, seed)
    drawn = []
    for i in indices:
        prompt, reference = pairs[int(i)]
        drawn.append(Sample(tuple(tokenizer.encode(prompt, bos=True)), len(tokenizer.encode(reference, bos=False))))
    return _maybe_sorted(Workload(cfg.name, source.describe(), tuple(drawn), replaced), cfg)


FIELDS = {"alpaca": ("instruction", "input", "output"), "gsm8k": ("question", "answer")}


def prompts_and_references(cfg: DatasetConfig, records: list[dict]) -> list[tuple[str, str]]:
    """(prompt text, reference answer text) for every record, templates applied."""
    if cfg.name == "alpaca":
        return [(alpaca_prompt(r, cfg.template), r["output"]) for r in records]
    return [(gsm8k_prompt(r, cfg.template), r["answer"]) for r in records]


def _maybe_sorted(workload: Workload, cfg: DatasetConfig) -> Workload:
    if not cfg.sort_by_length:
        return workload
    ordered = tuple(sorted(workload.samples, key=lambda s: len(s.prompt_ids)))
    return Workload(workload.dataset, workload.source, ordered, workload.with_replacement)
