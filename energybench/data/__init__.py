"""Workloads: the prompts of a registered dataset (energybench.data.registry), or synthetic ones with real lengths."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol

import numpy as np

from energybench.data.records import DataError, read_records
from energybench.data.registry import DatasetSpec, get_dataset, register_dataset
from energybench.data.source import resolve

if TYPE_CHECKING:
    from energybench.config import DatasetConfig

log = logging.getLogger(__name__)

__all__ = ["DataError", "DatasetSpec", "Sample", "Workload", "draw_indices", "get_dataset", "load_workload",
           "register_dataset"]


class TextTokenizer(Protocol):
    """What load_workload needs of a tokenizer (energybench.model.tokenizer.Tokenizer is one)."""

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]: ...


@dataclass(frozen=True)
class Sample:
    """One prompt, tokenized, and the token length of the answer the dataset gives for it."""

    prompt_ids: tuple[int, ...]  # BOS + prompt tokens
    reference_tokens: int  # token length of the dataset's reference answer (what length=oracle generates)


@dataclass(frozen=True)
class Workload:
    """The prompts of one point, in the order they are batched, and where they came from."""

    dataset: str  # a registered dataset's name
    source: str  # recorded as dataset_source: file and sha256, download URL, or synthetic lengths
    samples: tuple[Sample, ...]
    with_replacement: bool  # the dataset had fewer records than `samples`

    def batches(self, batch: int) -> list[list[Sample]]:
        """Consecutive groups of `batch` samples; the last may be smaller."""
        return [list(self.samples[i : i + batch]) for i in range(0, len(self.samples), batch)]


def draw_indices(n_records: int, samples: int, seed: int) -> tuple[np.ndarray, bool]:
    """`samples` record indices, without replacement unless the dataset is smaller; deterministic by seed.

    Returns (indices, with_replacement); drawing with replacement logs a warning.
    """
    rng = np.random.default_rng(seed)
    if samples <= n_records:
        return rng.choice(n_records, size=samples, replace=False), False
    log.warning("dataset has %d records, fewer than samples=%d: drawing with replacement (prompts repeat)",
                n_records, samples)
    return rng.choice(n_records, size=samples, replace=True), True


def load_workload(cfg: DatasetConfig, samples: int, seed: int, vocab_size: int,
                  tokenizer: TextTokenizer | None, environ: Mapping[str, str] | None = None) -> Workload:
    """Draw `samples` prompts of dataset `cfg`, tokenized, with their reference answers' token lengths.

    Real datasets are found by `source.resolve` (path, $ENERGYBENCH_DATA_DIR, cache, download), drawn
    by `draw_indices` and tokenized with `tokenizer` (BOS + prompt; the reference without BOS/EOS);
    dataset=synthetic needs no tokenizer. Raises DataError for a missing or malformed file.
    """
    spec = get_dataset(cfg.name)  # an unknown name fails here, before anything is read
    if spec.synthetic:
        from energybench.data.synthetic import synthetic_workload

        return _maybe_sorted(synthetic_workload(cfg.like or "alpaca", samples, seed, vocab_size), cfg)
    if tokenizer is None:
        raise DataError(
            f"dataset={cfg.name} needs a tokenizer: set model.tokenizer=<path to LLaMA's tokenizer.model>, "
            "or use dataset=synthetic"
        )
    source = resolve(cfg, environ)
    pairs = prompts_and_references(cfg, read_records(source.path, spec.fields))
    indices, replaced = draw_indices(len(pairs), samples, seed)
    drawn = []
    for i in indices:
        prompt, reference = pairs[int(i)]
        drawn.append(Sample(tuple(tokenizer.encode(prompt, bos=True)), len(tokenizer.encode(reference, bos=False))))
    return _maybe_sorted(Workload(cfg.name, source.describe(), tuple(drawn), replaced), cfg)


class _Fields(Mapping[str, tuple[str, ...]]):
    """The fields every record must have, per registered dataset (a view of the registry)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return get_dataset(name).fields

    def __iter__(self) -> Iterator[str]:
        from energybench.data.registry import dataset_names

        return iter(dataset_names())

    def __len__(self) -> int:
        return sum(1 for _ in self)


FIELDS: Mapping[str, tuple[str, ...]] = _Fields()


def prompts_and_references(cfg: DatasetConfig, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(prompt text, reference answer text) for every record: the dataset's spec (or dataset.template)
    makes the prompt, its reference field the answer. Raises DataError for an unregistered dataset."""
    spec = get_dataset(cfg.name)
    assert spec.reference is not None, spec
    return [(spec.prompt(r, cfg.template), r[spec.reference]) for r in records]


def _maybe_sorted(workload: Workload, cfg: DatasetConfig) -> Workload:
    if not cfg.sort_by_length:
        return workload
    ordered = tuple(sorted(workload.samples, key=lambda s: len(s.prompt_ids)))
    return Workload(workload.dataset, workload.source, ordered, workload.with_replacement)
