"""Temperature and top-p (nucleus) sampling, as in Meta's LLaMA v1 `sample_top_p`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0 is greedy (argmax)
    top_p: float  # keep the smallest set of tokens whose probability mass reaches top_p


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    """Next token per row.  logits: [B, V] float32 -> [B] int64"""
    if sampling.temperature == 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    return sample_top_p(probs, sampling.top_p, generator)


def sample_top_p(probs: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """Draw from the nucleus: tokens sorted by probability whose preceding mass is below top_p."""
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # [B, V]
    cumulative = torch.cumsum(probs_sort, dim=-1)
    probs_sort.masked_fill_(cumulative - probs_sort > top_p, 0.0)  # outside the nucleus (no host sync: graphs)
    probs_sort.div_(probs_sort.sum(dim=-1, keepdim=True))
    choice = torch.multinomial(probs_sort, num_samples=1, generator=generator)  # [B, 1]
    return torch.gather(probs_idx, -1, choice).squeeze(-1)
