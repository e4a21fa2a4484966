"""The Triton kernel behind `sampling.sample(..., kernel=True)`: one program per row draws the next token from
the nucleus (top-p) of softmax(logits / temperature), without sorting the vocabulary.

Meta's `sample_top_p` sorts the probabilities, keeps a token while the mass ranked above it is at most top_p, and
draws from the kept ones renormalized. Here, with e = exp(x - max x) (x the scaled logits; the probabilities are e
over their sum Z), the mass above a value t is f(t) = sum of e_j > t, which falls as t grows. A token is kept when
f(e_i) <= top_p Z, that is when e_i >= t*, t* the smallest float with f(t*) <= top_p Z: the program finds t* by
bisection over the bit patterns of the floats in [0, 1] (non-negative floats order as their bits), 31 masked sums
over the row held in registers. The draw is the exponential race: the kept token with the largest e_i / E_i, E_i ~
Exp(1) (`noise`, drawn by torch from the engine's generator), is token i with probability e_i / (sum of kept e), the
renormalized nucleus (what torch.multinomial does for one sample). Same nucleus as the sort up to float rounding of
the sums at its edge and the order of exactly equal probabilities there (the kernel keeps every token tied at the
edge). A row with no finite logit (NaN, or all -inf) keeps nothing and draws token 0, where the sort's multinomial
would fail: such logits mean a broken model, which the fast engine's logits checks (benchmarks/engine_logits.py)
catch, not the draw.

Imported only where Triton is; TRITON_INTERPRET=1 runs it on a CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BISECTIONS = 31  # (0, ONE_BITS] halves to one bit pattern in 30 steps; one more is a no-op


@triton.jit
def _top_p_draw(logits_ptr, noise_ptr, out_ptr, V, stride_l, stride_n, inv_temperature, top_p,
                BLOCK: tl.constexpr, STEPS: tl.constexpr):
    row = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    ok = i < V
    x = tl.load(logits_ptr + row.to(tl.int64) * stride_l + i, mask=ok, other=float("-inf")).to(tl.float32)
    x = x * inv_temperature
    e = tl.where(ok, tl.exp(x - tl.max(x, axis=0)), 0.0)  # the largest is 1.0
    total = tl.sum(e, axis=0)
    target = top_p * total
    lo = tl.sum(tl.zeros((BLOCK,), tl.int32), axis=0)  # bits of 0.0: f(lo) > target unless all is kept
    hi = lo + 0x3F800000  # bits of 1.0f (every e is in [0, 1]): f(1.0) = 0 <= target
    for _ in tl.static_range(STEPS):
        mid = lo + (hi - lo) // 2
        above = tl.sum(tl.where(e > mid.to(tl.float32, bitcast=True), e, 0.0), axis=0)
        heavy = above > target  # t* lies above mid
        lo = tl.where(heavy, mid, lo)
        hi = tl.where(heavy, hi, mid)
    everything = total <= target  # top_p >= 1: the whole vocabulary
    threshold = tl.where(everything, 0.0, hi.to(tl.float32, bitcast=True))
    kept = ok & (e >= threshold)
    noise = tl.load(noise_ptr + row.to(tl.int64) * stride_n + i, mask=ok, other=1.0)
    score = tl.where(kept, e / noise, -1.0)
    tl.store(out_ptr + row, tl.argmax(score, axis=0).to(tl.int64))


def block_for(vocab: int) -> int:
    return triton.next_power_of_2(vocab)


def warps_for(block: int) -> int:
    """Warps per program: a row of `block` values spread over them, 64 per thread at most (registers)."""
    return max(4, min(32, block // (32 * 64)))


def launch(logits: torch.Tensor, noise: torch.Tensor, out: torch.Tensor, temperature: float, top_p: float,
           num_warps: int = 0) -> None:
    """out [B] (int64) = the token drawn from the nucleus of softmax(logits [B, V] / temperature) with exponential
    noise [B, V] (float32, rows contiguous). num_warps 0: warps_for the row's block."""
    bsz, vocab = logits.shape
    assert logits.stride(1) == 1 and noise.stride(1) == 1 and noise.shape == logits.shape, (logits.shape, noise.shape)
    block = block_for(vocab)
    _top_p_draw[(bsz,)](logits, noise, out, vocab, logits.stride(0), noise.stride(0), 1.0 / temperature, top_p,
                        BLOCK=block, STEPS=BISECTIONS, num_warps=num_warps or warps_for(block), num_stages=1)
