"""Temperature and top-p (nucleus) sampling, as in Meta's LLaMA v1 `sample_top_p`.

Two ways to the same draw: `sample` sorts the vocabulary as Meta's code does (the reference engine, and every
engine on a CPU); with `kernel=True` one Triton program per row finds the nucleus by bisection instead of a sort and
draws from it (engine/top_p_kernel.py; the fast engines on a GPU where `kernel_usable`). Both draw each kept token
with its renormalized probability; they use the generator differently, so the same seed gives different tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from energybench.model import gemv

MAX_KERNEL_VOCAB = 65536  # a row lives in one program's registers


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0 is greedy (argmax)
    top_p: float  # keep the smallest set of tokens whose probability mass reaches top_p


def kernel_usable(device: torch.device, vocab: int) -> bool:
    """Whether `sample(..., kernel=True)` can run for logits of `vocab` tokens on `device`: Triton on a CUDA card of
    compute capability 8.0+, or a CPU under Triton's interpreter (TRITON_INTERPRET=1, for tests)."""
    return vocab <= MAX_KERNEL_VOCAB and gemv.triton_runs(device)


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator, kernel: bool = False) -> torch.Tensor:
    """Next token per row.  logits: [B, V] float32 -> [B] int64. kernel: the nucleus by energybench's Triton kernel
    (see the module), where kernel_usable."""
    if sampling.temperature == 0:
        return torch.argmax(logits, dim=-1)
    if kernel:
        return sample_top_p_kernel(logits, sampling, generator)
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


def sample_top_p_kernel(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator,
                        num_warps: int = 0) -> torch.Tensor:
    """The same draw as sample(), the nucleus found without a sort: one Triton program per row (top_p_kernel;
    num_warps 0: its rule, top_p_kernel.warps_for)."""
    from energybench.engine import top_p_kernel

    logits = logits.contiguous()
    noise = torch.empty(logits.shape, dtype=torch.float32, device=logits.device).exponential_(generator=generator)
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    top_p_kernel.launch(logits, noise, out, sampling.temperature, sampling.top_p, num_warps)
    return out


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The kept tokens of sample_top_p, as a mask [B, V] in vocabulary order (for tests and checks)."""
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)
    keep_sorted = torch.cumsum(probs_sort, dim=-1) - probs_sort <= top_p
    return torch.zeros_like(keep_sorted).scatter_(-1, probs_idx, keep_sorted)
