"""Decode attention kernels over a static KV cache, alone: which one the fast engine should call.

    python benchmarks/decode_attention.py --out $OUT        # one GPU; LLaMA-7B's heads, fp16

One query per row (a decode step) against the rows of a [batch, slots, heads, head_dim] KV cache, 32 layers of
their own (so L2 holds none of it), the 32 calls captured as one CUDA graph and replayed (--repeats, median):
  mask            scaled_dot_product_attention over slots [0, span) (span: the longest row rounded up to 64
                  slots) with an additive mask of each row's length: the fast engine's attention=mask (on an
                  H200 PyTorch picks cuDNN's kernel)
  efficient       the same masked call held to PyTorch's memory-efficient kernel (sdpa_kernel)
  flash_varlen    aten._flash_attention_forward, variable-length form, seqused_k = each row's length: the fast
                  engine's attention=lens where Triton is not (model/decode_attention.py: attend_flash)
  split           energybench's split-KV Triton kernel, each row's own length, its slots over `splits` programs
                  per (row, head), then combined: the fast engine's attention=lens (attend_split with the tile and
                  splits of split_plan(), shown as `block_t/warps/splits`)
  split_tile      the same kernel at every tile of a grid (block_t 16-128, 1/2/4 warps, 1-32 splits): which one
                  is fastest per batch, behind split_plan()'s rule (--no-sweep skips it)
  split_together  the split kernel loading each tile's K and V at once (TOGETHER: the V load no longer waits for
                  the tile's scores), with split_plan(kv_together=True)'s tiles: `fast_tuned`'s attention
  split_together_tile  that kernel over the same grid, behind split_plan(kv_together=True)'s rule
  split_staged_tile  that kernel with its walk over the tiles software-pipelined (2 or 3 tiles' loads in flight:
                  the tile's num_stages, shown as `block_t/warps/splits/stages`), over a smaller grid
(FlashAttention's paged form, whose split-KV "flash-decoding" kernel suits one query per row, is not reachable:
torch 2.11's `_flash_attention_forward` takes no block table.)
`first_call_ms`: the first call at a new (batch, span) shape, synchronized: what a kernel spends once per shape
(cuDNN builds an execution plan per shape; the fast engine's build pays it for every graph it captures).
`gb_per_s` is the K and V bytes the rows' own lengths need (what a perfect kernel reads) over the time, so a
kernel that reads the padded span shows below its real bandwidth. Lengths: `equal` (every row at --length,
as benchmarks/engine.py's prompts) and `spread` (uniform in [length/2, 3 length/2]). Records (with commit, card,
versions, command) go to <out>/decode-attention.json, a table to stdout and <out>/decode-attention.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from clock import now_utc  # noqa: E402
from graph_timing import replay_median_ms  # noqa: E402
from energybench.util.files import write_text  # noqa: E402
from energybench.util.tables import markdown  # noqa: E402

COLUMNS = ("kernel", "batch", "lengths", "mean_length", "span", "tile", "ms_per_layer", "gb_per_s", "first_call_ms",
           "max_abs_vs_mask", "error", "gpu")
SWEEP = [(block_t, warps, splits) for block_t in (16, 32, 64, 128) for warps in (1, 2, 4)
         for splits in (1, 2, 4, 8, 16, 32)]
STAGED = [(block_t, warps, splits, stages) for block_t in (16, 32, 64) for warps in (1, 2, 4)
          for splits in (1, 2, 4, 16) for stages in (2, 3)]  # split_staged_tile: kv_together, pipelined


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--length", type=int, default=164, help="context length of a row (mean, for spread)")
    ap.add_argument("--slots", type=int, default=256, help="cache slots per row (a multiple of 64)")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the split kernel's tile grid")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def kernels(slots: int, span: int, sweep: bool) -> dict:
    """(name, tile) -> fn(q, k, v, lens); `span`: the slots the masked kernel reads (the longest row rounded up to
    64). tile: "" or the split kernel's "block_t/warps/splits" ("block_t/warps/auto(n)" for its defaults)."""
    import functools

    import torch
    import torch.nn.functional as F

    from energybench.model.decode_attention import attend_flash, attend_split

    def mask(q, k, v, lens):
        b = q.shape[0]
        visible = torch.arange(span, device=q.device).view(1, 1, 1, span) < lens.view(b, 1, 1, 1)
        m = torch.zeros(visible.shape, dtype=q.dtype, device=q.device).masked_fill_(~visible, float("-inf"))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k[:b, :span].transpose(1, 2),
                                             v[:b, :span].transpose(1, 2), attn_mask=m)
        return out.transpose(1, 2)

    def flash_varlen(q, k, v, lens):
        return attend_flash(q, k, v, lens)

    def split(q, k, v, lens, splits=0, block_t=0, warps=0, kv_together=False, stages=-1):
        return attend_split(q, k, v, lens, splits, block_t, warps, kv_together, stages)

    def efficient(q, k, v, lens):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            return mask(q, k, v, lens)

    return {("mask", ""): mask, ("efficient", ""): efficient, ("flash_varlen", ""): flash_varlen,
            ("split", "plan"): split, ("split_together", "plan"): functools.partial(split, kv_together=True),
            **{(name, f"{b}/{w}/{n}"): functools.partial(split, splits=n, block_t=b, warps=w, kv_together=kv_together)
               for name, kv_together in (("split_tile", False), ("split_together_tile", True))
               for b, w, n in (SWEEP if sweep else []) if n * b <= slots},
            **{("split_staged_tile", f"{b}/{w}/{n}/{st}"): functools.partial(split, splits=n, block_t=b, warps=w,
                                                                          kv_together=True, stages=st)
               for b, w, n, st in (STAGED if sweep else []) if n * b <= slots}}


def summary(records: list[dict]) -> list[dict]:
    """The rows of every kernel but the tile grids (split_tile, split_together_tile), and of each grid the fastest
    tile per (batch, lengths)."""
    best: dict[tuple, dict] = {}
    for r in records:
        if r["kernel"].endswith("_tile") and r["ms_per_layer"] is not None:
            key = (r["kernel"], r["batch"], r["lengths"])
            if key not in best or r["ms_per_layer"] < best[key]["ms_per_layer"]:
                best[key] = r
    return [r for r in records
            if not r["kernel"].endswith("_tile") or best.get((r["kernel"], r["batch"], r["lengths"])) is r]


def lengths_of(kind: str, batch: int, length: int, slots: int):
    import torch

    if kind == "equal":
        return torch.full((batch,), length, dtype=torch.int32)
    gen = torch.Generator().manual_seed(batch)
    return torch.randint(max(1, length // 2), min(slots, 3 * length // 2) + 1, (batch,), generator=gen,
                         dtype=torch.int32)


def main(argv: list[str] | None = None) -> int:
    import torch

    from energybench import provenance
    from energybench.model.decode_attention import split_plan

    args = parse(argv)
    device = torch.device("cuda", 0)
    gpu = torch.cuda.get_device_name(device)
    batches = [int(b) for b in args.batches.split(",")]
    shape = (max(batches), args.slots, args.heads, args.head_dim)
    caches = [(torch.randn(shape, device=device, dtype=torch.float16),
               torch.randn(shape, device=device, dtype=torch.float16)) for _ in range(args.layers)]
    records = []
    command = "python benchmarks/decode_attention.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for batch in batches:
        for kind in ("equal", "spread"):
            lens = lengths_of(kind, batch, args.length, args.slots)
            span = min(-(-int(lens.max()) // 64) * 64, args.slots)
            lens = lens.to(device)
            q = torch.randn(batch, 1, args.heads, args.head_dim, device=device, dtype=torch.float16)
            exact_bytes = int(lens.sum()) * args.heads * args.head_dim * 2 * 2 * args.layers
            reference = None  # the first kernel's output (mask's) at this batch and these lengths
            for (name, tile), fn in kernels(args.slots, span, args.sweep).items():
                if tile == "plan":
                    splits, plan = split_plan(batch * args.heads, args.slots, kv_together=name == "split_together")
                    tile = f"{plan.block_t}/{plan.num_warps}/{splits}"
                row, out, graph_ms = measure(fn, q, caches, lens, args.repeats, reference)
                reference = out if reference is None else reference
                if graph_ms is not None:
                    row.update(ms_per_layer=graph_ms / args.layers, gb_per_s=exact_bytes / (graph_ms * 1e-3) / 1e9)
                records.append({"kernel": name, "batch": batch, "lengths": kind,
                                "mean_length": float(lens.float().mean()), "span": span, "tile": tile, **row,
                                "slots": args.slots, "heads": args.heads, "head_dim": args.head_dim,
                                "layers": args.layers, "gpu": gpu, "date": now_utc(), "torch": torch.__version__,
                                **provenance.benchmark_record(), "command": command})
    print(markdown(summary(records), COLUMNS))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(records, indent=1) + "\n", args.out / "decode-attention.json")
        write_markdown(records, args.out / "decode-attention.md")
    return 0


def measure(fn, q, caches: list, lens, repeats: int, reference) -> tuple[dict, object, float | None]:
    """One kernel: its first call (synchronized), its output against `reference` (None: it is the reference), and
    the median ms of `repeats` replays of one CUDA graph calling it on every layer's cache. Returns (row, output,
    graph ms). A kernel this torch refuses gives a row with its error and no times, not an exception."""
    import torch

    row = {"ms_per_layer": None, "gb_per_s": None, "first_call_ms": None, "max_abs_vs_mask": None, "error": None}
    out, graph_ms = None, None
    try:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(q, *caches[0], lens).reshape(q.shape[0], -1).float()
        torch.cuda.synchronize()
        row["first_call_ms"] = 1e3 * (time.perf_counter() - t0)
        row["max_abs_vs_mask"] = 0.0 if reference is None else (out - reference).abs().max().item()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            for k, v in caches:
                fn(q, k, v, lens)
        graph_ms = replay_median_ms(graph, repeats)
        del graph
    except Exception as e:  # a kernel this torch refuses: recorded, not fatal
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return row, out, graph_ms


def write_markdown(records: list[dict], path: Path) -> None:
    """decode-attention.md (or `path`, beside its .json): the runs (card, date, commit, command) and the summary
    table."""
    runs = sorted({(r["gpu"], r["date"][:10], r.get("git_commit") or "not recorded", r["command"]) for r in records})
    lines = ["# Decode attention kernels", "",
             "Written by `benchmarks/decode_attention.py` (its docstring says what each kernel is); see docs/engine.md.",
             "Per layer, one query per (row, head) over a [batch, slots, heads, head_dim] cache. The rows of",
             "`split_tile`, `split_together_tile` and `split_staged_tile` here are each grid's fastest tile per",
             "batch; the record has every one.",
             f"Record: [{path.with_suffix('.json').name}]({path.with_suffix('.json').name}).", "",
             "Runs (card, date, commit, command):", "",
             *[f"- {gpu}, {date}, commit {commit}: `{cmd}`" for gpu, date, commit, cmd in runs], "",
             markdown(summary(records), COLUMNS)]
    write_text("\n".join(lines) + "\n", path)


if __name__ == "__main__":
    raise SystemExit(main())
