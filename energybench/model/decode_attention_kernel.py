"""The Triton kernels behind `decode_attention.attend_split`: one query per (row, head) against the row's own
slots [0, len) of the KV cache, the slots split over `splits` programs (split-KV, "flash-decoding"), then the
splits' partial results combined.

  _decode_attention_partial  program (b, h, s): slots [s c, (s + 1) c) of row b's first len[b] (c = len[b] /
                             splits, rounded up to BLOCK_T), an online softmax over them in fp32: its maximum score
                             m, the sum l of exp(score - m) and acc = sum exp(score - m) v. With one split it
                             normalizes and writes the output itself.
  _decode_attention_combine  program (b, h): out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s, M the largest
                             m_s.

Every program reads its slots once; the grid does not depend on the lengths, which stay on the device, so one
CUDA graph per batch size serves every length. Imported only where Triton is; TRITON_INTERPRET=1 runs it on a CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(q, k_row, v_row, t0, end, d, stride_kt, stride_vt, m, total, acc, BLOCK_T: tl.constexpr,
                 TOGETHER: tl.constexpr):
    """Slots [t0, t0 + BLOCK_T) (those before `end`) of one (row, head) into the online softmax (m, total, acc)."""
    t = t0 + tl.arange(0, BLOCK_T)
    ok = t < end
    k = tl.load(k_row + t[:, None] * stride_kt + d[None, :], mask=ok[:, None], other=0.0)
    if TOGETHER:  # the tile's V in flight with its K, not after the scores
        v = tl.load(v_row + t[:, None] * stride_vt + d[None, :], mask=ok[:, None], other=0.0)
    scores = tl.where(ok, tl.sum(k.to(tl.float32) * q[None, :], axis=1), float("-inf"))  # [BLOCK_T]
    m_new = tl.maximum(m, tl.max(scores, axis=0))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(scores - m_new)
    if not TOGETHER:
        v = tl.load(v_row + t[:, None] * stride_vt + d[None, :], mask=ok[:, None], other=0.0)
    total = total * alpha + tl.sum(p, axis=0)
    acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
    return m_new, total, acc


@triton.jit
def _decode_attention_partial(q_ptr, k_ptr, v_ptr, lens_ptr, out_ptr, m_ptr, l_ptr, acc_ptr, scale_log2,
                              stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                              stride_ob, stride_oh, S,
                              H: tl.constexpr, SPLITS: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr,
                              PDL: tl.constexpr, TOGETHER: tl.constexpr = False, STAGES: tl.constexpr = 0):
    if PDL:  # launched early (programmatic dependent launch): wait for the kernel that wrote q and the cache
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    b, h, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    length = tl.minimum(tl.load(lens_ptr + b), S)  # never past the cache row
    chunk = tl.cdiv(tl.cdiv(length, SPLITS), BLOCK_T) * BLOCK_T
    start = s * chunk
    end = tl.minimum(start + chunk, length)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + d).to(tl.float32) * scale_log2  # scores in log2 units
    k_row = k_ptr + b.to(tl.int64) * stride_kb + h * stride_kh
    v_row = v_ptr + b.to(tl.int64) * stride_vb + h * stride_vh
    m = tl.max(tl.full((BLOCK_T,), float("-inf"), tl.float32), axis=0)
    total = tl.sum(tl.zeros((BLOCK_T,), tl.float32), axis=0)
    acc = tl.zeros((D,), tl.float32)
    if STAGES == 0:  # one tile at a time: the next tile's loads wait for this one's arithmetic
        t0 = start
        while t0 < end:
            m, total, acc = _attend_tile(q, k_row, v_row, t0, end, d, stride_kt, stride_vt, m, total, acc, BLOCK_T,
                                         TOGETHER)
            t0 += BLOCK_T
    else:  # software-pipelined: STAGES tiles' loads in flight while the arithmetic runs
        for t0 in tl.range(start, end, BLOCK_T, num_stages=STAGES):
            m, total, acc = _attend_tile(q, k_row, v_row, t0, end, d, stride_kt, stride_vt, m, total, acc, BLOCK_T,
                                         TOGETHER)
    if SPLITS == 1:
        out = tl.where(total > 0, acc / total, 0.0)  # a row of no slots (not one an engine makes): zeros
        tl.store(out_ptr + b * stride_ob + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))
    else:
        at = (b * H + h) * SPLITS + s
        tl.store(m_ptr + at, m)
        tl.store(l_ptr + at, total)
        tl.store(acc_ptr + at.to(tl.int64) * D + d, acc)


@triton.jit
def _decode_attention_combine(out_ptr, m_ptr, l_ptr, acc_ptr, stride_ob, stride_oh,
                              H: tl.constexpr, SPLITS: tl.constexpr, D: tl.constexpr, PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    b, h = tl.program_id(0), tl.program_id(1)
    first = (b * H + h) * SPLITS
    s = tl.arange(0, SPLITS)
    m = tl.load(m_ptr + first + s)  # [SPLITS]; -inf where a split had no slots
    top = tl.max(m, axis=0)
    weight = tl.exp2(m - tl.where(top > float("-inf"), top, 0.0))  # 0 for empty splits
    total = tl.sum(weight * tl.load(l_ptr + first + s), axis=0)
    d = tl.arange(0, D)
    acc = tl.load(acc_ptr + (first + s).to(tl.int64)[:, None] * D + d[None, :])  # [SPLITS, D]
    out = tl.where(total > 0, tl.sum(weight[:, None] * acc, axis=0) / total, 0.0)  # a row of no slots: zeros
    tl.store(out_ptr + b * stride_ob + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))


def launch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor, out: torch.Tensor,
           splits: int, block_t: int, num_warps: int, num_stages: int = 0, pdl: bool = False,
           kv_together: bool = False) -> None:
    """out [B, H, D] = attention of q [B, H, D] (one query per row and head) over k_cache / v_cache rows 0..B-1
    ([rows, slots, H, D], D contiguous), row b's slots [0, min(kv_lens[b], slots)) (no slot: zeros); softmax scale
    1/sqrt(D). splits: a power of two; 1 writes out directly, more go through an fp32 scratch of splits x (D + 2)
    values per (row, head). pdl: both kernels as programmatic dependent launches (model.gemv.pdl_on): each lets
    the next kernel launch and waits for the one before it first thing. kv_together: each tile's V is loaded with its K
    (both in flight at once) instead of after the tile's scores. num_stages: 0 walks the tiles one at a time (a
    `while`); 2 or more software-pipelines the walk (Triton's tl.range), that many tiles' loads in flight."""
    launch_pdl = {"launch_pdl": True} if pdl else {}
    bsz, heads, dim = q.shape
    assert dim & (dim - 1) == 0 and splits & (splits - 1) == 0 and block_t & (block_t - 1) == 0, (dim, splits, block_t)
    scratch = splits > 1
    n = bsz * heads * splits if scratch else 1
    m = torch.empty(n, dtype=torch.float32, device=q.device)
    total = torch.empty(n, dtype=torch.float32, device=q.device)
    acc = torch.empty((n, dim) if scratch else (1, dim), dtype=torch.float32, device=q.device)
    _decode_attention_partial[(bsz, heads, splits)](
        q, k_cache, v_cache, kv_lens, out, m, total, acc, LOG2E / dim ** 0.5,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1), k_cache.shape[1],
        H=heads, SPLITS=splits, D=dim, BLOCK_T=block_t, PDL=pdl, TOGETHER=kv_together, STAGES=num_stages,
        num_warps=num_warps, num_stages=max(1, num_stages), **launch_pdl)
    if scratch:
        _decode_attention_combine[(bsz, heads)](out, m, total, acc, out.stride(0), out.stride(1),
                                                H=heads, SPLITS=splits, D=dim, PDL=pdl, num_warps=4, **launch_pdl)
