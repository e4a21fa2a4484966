"""Decode attention that reads each row's own context length from the KV cache.

A decode step gives every row one query. Attending through an additive mask over a shared span (the
`mask` argument of the model's forward) makes every row read the longest row's span, rounded up to the
span bucket; `attend_lens` reads row b's slots [0, kv_lens[b]) only.

On a GPU (where `flash_usable`: FlashAttention-2 in PyTorch, compute capability 8.0 or later, fp16 or bf16) it is one
`aten._flash_attention_forward` call in its variable-length form: the cache rows [B, S, H, D] seen as
[B * S, H, D] with sequence b starting at b * S, and `seqused_k` = kv_lens (FlashAttention's "only this many
keys of each sequence are used"). The lengths stay on the device, so the call is captured in a CUDA graph
once per batch size and replayed at every length. Elsewhere (CPU; tests) it is the same function as one
`scaled_dot_product_attention` over slots [0, n_slots) with the slots at or past kv_lens masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FLASH_DTYPES = (torch.float16, torch.bfloat16)


def flash_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `attend_lens` runs FlashAttention's kernel for a model on `device` in `dtype`."""
    if device.type != "cuda" or dtype not in FLASH_DTYPES:
        return False
    if not torch.backends.cuda.is_flash_attention_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def attend_lens(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor,
                n_slots: int) -> torch.Tensor:
    """One query per row: q [B, 1, H, D]; k_cache, v_cache [max_batch, S, H, D] (rows 0..B-1 are the batch's);
    kv_lens [B] int32, row b attends to its slots [0, kv_lens[b]) (at most n_slots). Returns [B, 1, H * D]."""
    bsz, seqlen, heads, dim = q.shape
    assert seqlen == 1, "attend_lens is for decode steps (one new position per row)"
    if q.is_cuda:  # the engine takes this path only where flash_usable() (FastEngine checks it)
        slots = k_cache.shape[1]
        starts = torch.arange(bsz + 1, device=q.device, dtype=torch.int32)  # query b is row b
        out = torch.ops.aten._flash_attention_forward(
            q.reshape(bsz, heads, dim),
            k_cache[:bsz].view(bsz * slots, heads, dim), v_cache[:bsz].view(bsz * slots, heads, dim),
            starts, starts * slots, 1, slots, 0.0, False, False, seqused_k=kv_lens)[0]  # [B, H, D]
        return out.view(bsz, 1, heads * dim)
    visible = torch.arange(n_slots, device=q.device).view(1, 1, 1, n_slots) < kv_lens.view(bsz, 1, 1, 1)
    mask = torch.zeros(visible.shape, dtype=q.dtype, device=q.device).masked_fill_(~visible, float("-inf"))
    keys = k_cache[:bsz, :n_slots].transpose(1, 2)  # [B, H, T, D]
    values = v_cache[:bsz, :n_slots].transpose(1, 2)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)  # [B, H, 1, D]
    return out.transpose(1, 2).reshape(bsz, 1, heads * dim)
