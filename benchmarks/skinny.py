"""A decode step's matmuls at batch 2-64 alone: cuBLAS, cuBLASLt and a Triton GEMM, per weight shape.

    python benchmarks/skinny.py --models 7b,13b --rows 16,64 --out $OUT     # one GPU

At the batch sizes of decode a step still reads every weight once, now for M rows: the product is bound by the
weights' bytes, and which kernel a library picks for the shape decides how close it comes to the card's bandwidth.
For each packed weight shape of a model (one rank's slice at shards S, as `fast` and `fast_tuned` run them) and each
M of --rows it times, over copies of that weight that together far exceed the L2 cache, captured as one CUDA graph
(median of --repeats replays):
  kind=shape   `cublas` (torch.mm as PyTorch runs it by default), `cublaslt` (the same call with
               torch.backends.cuda.preferred_blas_library("cublaslt"), as fast_tuned captures its decode graphs:
               engine/fast.py blas_library) and every tile of --grid of model/skinny_kernel.py's Triton GEMM (a fifth
               list of split-K counts: the columns over that many programs per block of W's rows);
               `gb_per_s` is weight bytes over time
  kind=model   one decode step's matmuls at M rows in layer order (every layer's own weights, the output projection
               last) through cuBLAS, cuBLASLt and the Triton GEMM (`triton_best`: this run's best tile per shape);
               each pass's graph replayed for >= --window-s under the NVML total-energy counter: `power_w`,
               `energy_per_pass_j`. On Hopper also
               `triton_pdl_best`: the same tiles as programmatic dependent launches, each kernel's first tile of W
               loaded before it waits for the one before (the products here are independent, so this is the
               most that overlap can give a chain of products in a step); and `op`: model/skinny.py's op as
               fast_tuned's decode steps call it (its own tiles: CONFIGS up to MAX_ROWS, WIDE_CONFIGS to WIDE_ROWS,
               torch.mm through cuBLASLt for the other shapes; its tiles' errors are in the shape rows), but w1/w3
               as the plain product where the model asks for its SwiGLU form
Records (commit, card, versions, command): <out>/skinny.json, a table to stdout and <out>/skinny.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from gemv import (L2_MARGIN_BYTES, layer_shapes, model_specs, pass_record, run_facts, run_line,  # noqa: E402
                  time_graph)
from energybench.util.files import write_text  # noqa: E402
from energybench.util.tables import markdown  # noqa: E402

COLUMNS = ("kind", "model", "shards", "rows", "shape", "impl", "config", "ms", "gb_per_s", "frac_of_datasheet",
           "power_w", "energy_per_pass_j", "max_rel_err")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="7b", help="model presets, NAME or NAME:SHARDS (one rank's slice)")
    ap.add_argument("--rows", default="16,64", help="batch sizes M (2-64)")
    ap.add_argument("--grid", default="32,64,128/64,128,256/2,4/3,5",
                    help="Triton tiles tried: BLOCK_Ns/BLOCK_Ks/NUM_WARPSs/NUM_STAGESs[/SPLIT_Ks] (split-K: 1 if "
                         "not given)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--window-s", type=float, default=2.0, help="energy window of a kind=model row")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def grid_of(spec: str) -> list[tuple[int, ...]]:
    """--grid's tiles: every combination of its four or five comma lists (a fifth, split-K, defaults to 1)."""
    parts = [[int(v) for v in p.split(",")] for p in spec.split("/")]
    if len(parts) not in (4, 5):
        raise SystemExit(f"--grid {spec!r}: give four or five lists, BLOCK_N/BLOCK_K/NUM_WARPS/NUM_STAGES[/SPLIT_K], "
                         f"e.g. 32,64/128/4/3/1,4")
    return list(itertools.product(*parts, *([[1]] if len(parts) == 4 else [])))


def library(name: str):
    """fn -> fn run with PyTorch's matmuls through `name` (engine/fast.py blas_library; None: as set)."""
    from energybench.engine.fast import blas_library

    def wrap(fn):
        def run():
            with blas_library(name):
                fn()
        return run
    return wrap


def shape_rows(records: list[dict], best: dict, base: dict, rows: int, n: int, k: int, grid, repeats: int,
               device, frac) -> None:
    """kind=shape rows of one (rows, weight shape): both libraries, then each Triton tile; the fastest into best."""
    import torch

    from energybench.model import skinny_kernel

    matrix_bytes = n * k * 2
    copies = max(2, -(-L2_MARGIN_BYTES // matrix_bytes))
    ws = [torch.empty((n, k), dtype=torch.float16, device=device).normal_(std=k ** -0.5) for _ in range(copies)]
    x = torch.randn(rows, k, dtype=torch.float16, device=device)
    outs = [torch.empty(rows, n, dtype=torch.float16, device=device) for _ in range(copies)]
    ref = x.float() @ ws[0].float().T
    row = {"kind": "shape", "rows": rows, "shape": f"{n}x{k}", **base}

    def add(impl: str, ms: float, config: str | None = None, err: float | None = None) -> None:
        gb_s = copies * matrix_bytes / (ms * 1e-3) / 1e9
        records.append({**row, "impl": impl, "config": config, "ms": ms / copies, "gb_per_s": gb_s,
                        "frac_of_datasheet": frac(gb_s), "max_rel_err": err})

    for impl in ("cublas", "cublaslt"):
        ms, graph = time_graph(library(impl)(lambda: [torch.mm(x, w.t(), out=o) for w, o in zip(ws, outs)]),
                               repeats)
        del graph
        add(impl, ms)
    for tile in grid:
        try:
            skinny_kernel.launch(x, ws[0], outs[0], *tile)
            err = ((outs[0].float() - ref).abs().max() / ref.abs().max()).item()
            ms, graph = time_graph(lambda: [skinny_kernel.launch(x, w, o, *tile) for w, o in zip(ws, outs)], repeats)
            del graph
        except Exception as e:  # a tile this compiler refuses (registers, shared memory): recorded
            records.append({**row, "impl": "triton", "config": "/".join(map(str, tile)),
                            "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"})
            continue
        add("triton", ms, "/".join(map(str, tile)), err)
        if (rows, n, k) not in best or ms < best[(rows, n, k)][0]:
            best[(rows, n, k)] = (ms, tile)
    torch.cuda.empty_cache()


def model_passes(cfg, shards: int, rows: int, pick, device) -> tuple[dict, int, int, list]:
    """({impl: fn} running one decode step's matmuls at `rows` rows, their bytes, their count, the (x, w, out) of
    each product)."""
    import torch

    from energybench.engine.fast import TUNED_BLAS
    from energybench.model import gemv_kernel, skinny, skinny_kernel

    shapes = [(n, k) for _ in range(cfg.n_layers) for _, n, k in layer_shapes(cfg, shards, "packed")]
    shapes.append((cfg.vocab_size // shards, cfg.dim))
    calls = [(torch.randn(rows, k, dtype=torch.float16, device=device),
              torch.empty((n, k), dtype=torch.float16, device=device).normal_(std=k ** -0.5),
              torch.empty(rows, n, dtype=torch.float16, device=device)) for n, k in shapes]

    def products():
        for x, w, o in calls:
            torch.mm(x, w.t(), out=o)

    def triton_best():
        for x, w, o in calls:
            skinny_kernel.launch(x, w, o, *pick(*w.shape))

    def triton_pdl_best():
        for x, w, o in calls:
            skinny_kernel.launch(x, w, o, *pick(*w.shape), pdl=True)

    kept: list = []

    def op():  # what fast_tuned's decode steps run: model/skinny.py's own tiles, torch.mm where it has none (each
        # product into a tensor of its own, as in the model; the last pass's kept)
        kept[:] = [skinny.skinny(x, w) for x, w, _ in calls]

    impls = {"cublas": library("cublas")(products), "cublaslt": library("cublaslt")(products),
             "triton_best": triton_best, "op": library(TUNED_BLAS)(op)}
    if gemv_kernel.pdl_supported(device):
        impls["triton_pdl_best"] = triton_pdl_best
    return impls, sum(w.numel() * 2 for _, w, _ in calls), len(calls), calls


def pass_error(fn, calls) -> float:
    """Largest error, relative to the largest exact value, of any product after one run of the pass `fn`."""
    fn()
    return max(((o.float() - x.float() @ w.float().T).abs().max() / (x.float() @ w.float().T).abs().max()).item()
               for x, w, o in calls)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse(argv)
    device = torch.device("cuda", 0)
    common, frac = run_facts("skinny.py", argv, torch.cuda.get_device_name(device))
    grid = grid_of(args.grid)
    records: list[dict] = []
    best: dict[tuple[int, int, int], tuple[float, tuple]] = {}

    for name, shards, cfg in model_specs(args.models):
        base = {"model": name, "shards": shards, **common}
        shapes = sorted({(n, k) for _, n, k in layer_shapes(cfg, shards, "packed")}
                        | {(cfg.vocab_size // shards, cfg.dim)})
        for rows in (int(v) for v in args.rows.split(",")):
            for n, k in shapes:
                shape_rows(records, best, base, rows, n, k, grid, args.repeats, device, frac)
                print(f"{name}:{shards} M={rows} {n}x{k}: best tile {best[(rows, n, k)][1]}", flush=True)
            impls, pass_bytes, n_mats, calls = model_passes(cfg, shards, rows,
                                                            lambda n_, k_: best[(rows, n_, k_)][1], device)
            for impl, fn in impls.items():
                err = pass_error(fn, calls) if impl.startswith("triton") else None
                got = pass_record(fn, pass_bytes, args.repeats, args.window_s, device, frac)
                records.append({"kind": "model", "rows": rows, "impl": impl, "shape": f"{n_mats} matrices", **got,
                                "max_rel_err": err, **base})
                print(f"{name}:{shards} M={rows} {impl}: {got['ms']:.3f} ms, {got['gb_per_s']:.0f} GB/s, "
                      f"{got['power_w']:.0f} W", flush=True)
            impls = calls = None
            torch.cuda.empty_cache()

    shown = [r for r in records if r["kind"] != "shape" or r["impl"] != "triton"
             or tuple(int(v) for v in r["config"].split("/")) == best.get(
                 (r["rows"], *(int(v) for v in r["shape"].split("x"))), (0, None))[1]]
    table = markdown(shown, COLUMNS)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(records, indent=1) + "\n", args.out / "skinny.json")
        run = run_line(common)
        write_text("# Decode matmuls at batch 2-64: cuBLAS, cuBLASLt and a Triton GEMM\n\nWritten by "
                   "`benchmarks/skinny.py`; record (every tile tried): [skinny.json](skinny.json). Shape rows: both "
                   "libraries and the best Triton tile.\n\n" + run + table + "\n", args.out / "skinny.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
