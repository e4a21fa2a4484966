"""Batch-1 decode matmuls alone: cuBLAS against energybench's Triton GEMV (model/gemv.py), per weight shape.

    python benchmarks/gemv.py --models 7b,13b,65b:2 --out $OUT     # one GPU; 65b:2 is one rank of shards=2

A batch-1 decode step reads every weight once for one row. For each weight shape of a model (one rank's slice at
shards S; q/k/v and w1/w3 both apart, as Meta's layers, and packed, as `fast` and `fast_tuned` run them) it
times, over copies of that weight that together far exceed the L2 cache, captured as one CUDA graph (median of
--repeats replays):
  kind=shape   cuBLAS (F.linear) and every Triton tile configuration of --grid; `gb_per_s` is weight bytes over time
  kind=model   one batch-1 step's matmuls in layer order (every layer's own weights, the output projection last),
               for cuBLAS, the Triton kernel with the per-shape best of this run, and with its DEFAULT tile, and
               (packed) `triton_folded`: the best tiles with the norms, SwiGLU and residuals folded in as
               fast_tuned's batch-1 layer runs them (model/gemv_kernel.py); the graph replayed for >= --window-s
               under the NVML total-energy counter: `power_w`, `energy_per_pass_j`
`frac_of_datasheet` divides by the card's datasheet bandwidth (energybench.device.cards). The per-shape best tiles
are printed as a CONFIGS table for model/gemv.py. Records (commit, card, versions, command): <out>/gemv.json, a
table to stdout and <out>/gemv.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from clock import now_utc  # noqa: E402
from graph_timing import replay_median_ms  # noqa: E402
from energybench.util.files import write_text  # noqa: E402
from energybench.util.tables import markdown  # noqa: E402

COLUMNS = ("kind", "model", "shards", "layout", "shape", "form", "impl", "config", "ms", "gb_per_s",
           "frac_of_datasheet", "power_w", "energy_per_pass_j", "max_rel_err")
L2_MARGIN_BYTES = 2_000_000_000  # the copies of one shape timed together: far past any L2
# what fast_tuned's batch-1 layer folds into each packed projection's product (model.llama, model/gemv_kernel.py)
FOLDS = {"wqkv": "norm", "wo": "residual", "w13": "norm", "w2": "swiglu+residual"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="7b,13b,65b:2", help="model presets, NAME or NAME:SHARDS (one rank's slice)")
    ap.add_argument("--grid", default="4,8,16,32/256,512,1024/4,8/1,3",
                    help="tile configurations tried: BLOCK_Ns/BLOCK_Ks/NUM_WARPSs/NUM_STAGESs")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--window-s", type=float, default=3.0, help="energy window of a kind=model row")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def model_specs(spec: str) -> list[tuple[str, int, object]]:
    """--models' entries, NAME or NAME:SHARDS (one rank's slice), as (name, shards, the preset's model config)."""
    from energybench.confload import compose

    found = []
    for item in spec.split(","):
        name, _, shards = item.partition(":")
        found.append((name, int(shards or 1), compose([f"model={name}", "dataset=synthetic"]).model))
    return found


def run_facts(script: str, argv: list[str] | None, gpu: str) -> tuple[dict, Callable[[float], float | None]]:
    """What every record of a run of benchmarks/`script` on card `gpu` names (card, date, torch, provenance,
    command), and GB/s -> the fraction of the card's datasheet bandwidth (None for a card device/cards does not
    know)."""
    import torch

    from energybench import provenance
    from energybench.device.cards import card_for

    card = card_for(gpu)
    command = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    common = {"gpu": gpu, "date": now_utc(), "torch": torch.__version__, **provenance.benchmark_record(),
              "command": command}

    def frac(gb_s: float) -> float | None:
        return gb_s / card.mem_bandwidth_gb_s if card else None
    return common, frac


def run_line(common: dict) -> str:
    """The markdown's line naming the run of `common` (run_facts): card, date, commit, torch and command."""
    return (f"Run: {common['gpu']}, {common['date'][:10]}, commit {(common.get('git_commit') or 'not recorded')[:7]}, "
            f"torch {common['torch']}: `{common['command']}`.\n\n")


def grid_of(spec: str) -> list[tuple[int, int, int, int]]:
    parts = [[int(v) for v in p.split(",")] for p in spec.split("/")]
    if len(parts) != 4:
        raise SystemExit(f"--grid {spec!r}: give four lists, BLOCK_N/BLOCK_K/NUM_WARPS/NUM_STAGES, e.g. 8,16/512/4/1")
    return list(itertools.product(*parts))


def layer_shapes(cfg, shards: int, layout: str) -> list[tuple[str, int, int]]:
    """(name, N, K) of one rank's weights in a layer, in the order a decode step reads them."""
    d, h = cfg.dim, cfg.hidden_dim
    if layout == "packed":
        return [("wqkv", 3 * d // shards, d), ("wo", d, d // shards), ("w13", 2 * h // shards, d),
                ("w2", d, h // shards)]
    return [("wq", d // shards, d), ("wk", d // shards, d), ("wv", d // shards, d), ("wo", d, d // shards),
            ("w1", h // shards, d), ("w3", h // shards, d), ("w2", d, h // shards)]


def folded_pass(weights: list, outs: list, pick, per_layer: int):
    """The packed pass as `fast_tuned` runs it at batch 1 (model.llama's one-row layer): each layer's wqkv and
    w13 with the RMSNorm folded in, wo with the residual added, w2 with SwiGLU of [gate; up] and the residual,
    the output projection with the final norm; the kernel with each shape's tile from `pick(N, K, form)`."""
    from energybench.model import gemv_kernel

    assert per_layer == 4, "folded: the packed layout (wqkv, wo, w13, w2)"
    device = weights[0].device
    forms = [FOLDS[role] for role in ("wqkv", "wo", "w13", "w2")] * ((len(weights) - 1) // per_layer) + ["norm"]
    calls = []
    for w, o, form in zip(weights, outs, forms):
        n, k = w.shape
        x, folded = form_inputs(form, n, k, device)
        calls.append((x, w, o, pick(n, k, form), folded))

    def run():
        for x, w, o, tile, folded in calls:
            gemv_kernel.launch(x, w, o, *tile, **folded)
    return run


def form_inputs(form: str, n: int, k: int, device) -> tuple:
    """(x, the kernel's keyword arguments) for one call of `form` on a weight [n, k]: x [2k] with swiglu, a norm
    weight of ones [k] with norm, a residual [n] with residual."""
    import torch

    x = torch.randn(2 * k if "swiglu" in form else k, dtype=torch.float16, device=device)
    folded = {"norm_weight": torch.ones(k, dtype=torch.float16, device=device) if "norm" in form else None,
              "eps": 1e-6, "swiglu": "swiglu" in form,
              "residual": torch.randn(n, dtype=torch.float16, device=device) if "residual" in form else None}
    return x, folded


def reference(x, w, folded: dict):
    """What the kernel computes, in fp32 torch ops apart."""
    import torch
    import torch.nn.functional as F

    a, k = x.float(), w.shape[1]
    if folded["swiglu"]:
        a = F.silu(a[:k]) * a[k:]
    if folded["norm_weight"] is not None:
        a = a * torch.rsqrt(a.pow(2).mean() + folded["eps"]) * folded["norm_weight"].float()
    y = F.linear(a, w.float())
    return y if folded["residual"] is None else y + folded["residual"].float()


def time_graph(fn, repeats: int) -> tuple:
    """(median ms of one replay, the graph) of fn() captured as a CUDA graph (warmed up first)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    return replay_median_ms(graph, repeats), graph


def energy_of(graph, window_s: float, device) -> tuple[float, float, int]:
    """(joules, seconds, replays) of replaying `graph` back to back for >= window_s, NVML total-energy counter
    (bench_worker.GpuEnergy, as benchmarks/engine.py reads it)."""
    import torch
    from bench_worker import GpuEnergy

    meter = GpuEnergy([device])
    torch.cuda.synchronize()
    e0, t0, n = meter.read_j(), time.perf_counter(), 0
    while time.perf_counter() - t0 < window_s:
        for _ in range(20):
            graph.replay()
        n += 20
        torch.cuda.synchronize()
    return meter.read_j() - e0, time.perf_counter() - t0, n


def pass_record(fn, pass_bytes: int, repeats: int, window_s: float, device, frac) -> dict:
    """A kind=model record's measurements of one pass `fn`: its median ms as a CUDA graph, its GB/s of weights and
    fraction of the datasheet (frac), and power and energy per pass over >= window_s of replays."""
    ms, graph = time_graph(fn, repeats)
    energy_j, seconds, replays = energy_of(graph, window_s, device)
    del graph
    gb_s = pass_bytes / (ms * 1e-3) / 1e9
    return {"ms": ms, "gb_per_s": gb_s, "frac_of_datasheet": frac(gb_s), "power_w": energy_j / seconds,
            "energy_per_pass_j": energy_j / replays, "pass_bytes": pass_bytes}


def main(argv: list[str] | None = None) -> int:
    import torch

    from energybench.model import gemv as gemv_mod
    from energybench.model import gemv_kernel

    args = parse(argv)
    device = torch.device("cuda", 0)
    common, frac = run_facts("gemv.py", argv, torch.cuda.get_device_name(device))
    grid = grid_of(args.grid)
    records: list[dict] = []

    def triton_fn(cfg, folded):
        def run(x, w, out):
            gemv_kernel.launch(x, w, out, *cfg, **folded)
        return run

    best: dict[tuple[int, int, str], tuple[float, tuple]] = {}
    for name, shards, cfg in model_specs(args.models):
        base = {"model": name, "shards": shards, **common}
        shapes = {(n_, k_, "") for layout in ("apart", "packed") for _, n_, k_ in layer_shapes(cfg, shards, layout)}
        shapes |= {(n_, k_, FOLDS[role]) for role, n_, k_ in layer_shapes(cfg, shards, "packed")}
        out_shape = (cfg.vocab_size // shards, cfg.dim)
        shapes |= {(*out_shape, ""), (*out_shape, "norm")}
        for n_rows, k, form in sorted(shapes):
            matrix_bytes = n_rows * k * 2
            copies = max(2, -(-L2_MARGIN_BYTES // matrix_bytes))
            ws = [torch.empty((n_rows, k), dtype=torch.float16, device=device).normal_(std=k ** -0.5)
                  for _ in range(copies)]
            x, folded = form_inputs(form, n_rows, k, device)
            outs = [torch.empty(n_rows, dtype=torch.float16, device=device) for _ in range(copies)]
            ref = reference(x, ws[0], folded)
            row = {"kind": "shape", "shape": f"{n_rows}x{k}", "form": form, **base}
            if not form:
                def cublas():
                    for w, o in zip(ws, outs):
                        torch.mm(x.view(1, k), w.t(), out=o.view(1, n_rows))
                ms, graph = time_graph(cublas, args.repeats)
                gb_s = copies * matrix_bytes / (ms * 1e-3) / 1e9
                records.append({**row, "impl": "cublas", "ms": ms / copies, "gb_per_s": gb_s,
                                "frac_of_datasheet": frac(gb_s)})
                del graph
            for tile in grid:
                fn = triton_fn(tile, folded)
                try:
                    fn(x, ws[0], outs[0])
                    err = ((outs[0].float() - ref).abs().max() / ref.abs().max()).item()
                    ms, graph = time_graph(lambda: [fn(x, w, o) for w, o in zip(ws, outs)], args.repeats)
                    del graph
                except Exception as e:  # a tile this compiler refuses (registers, shared memory): recorded
                    records.append({**row, "impl": "triton", "config": "/".join(map(str, tile)),
                                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"})
                    continue
                gb_s = copies * matrix_bytes / (ms * 1e-3) / 1e9
                records.append({**row, "impl": "triton", "config": "/".join(map(str, tile)), "ms": ms / copies,
                                "gb_per_s": gb_s, "frac_of_datasheet": frac(gb_s), "max_rel_err": err})
                if (n_rows, k, form) not in best or ms < best[(n_rows, k, form)][0]:
                    best[(n_rows, k, form)] = (ms, tile)
            ws = outs = None
            torch.cuda.empty_cache()
            print(f"{name}:{shards} {n_rows}x{k} {form or 'plain'}: best {best[(n_rows, k, form)][1]}", flush=True)

        # one batch-1 step's matmuls, layer by layer, for each layout and implementation
        for layout in ("apart", "packed"):
            per_layer = layer_shapes(cfg, shards, layout)
            weights = [torch.empty((n_rows, k), dtype=torch.float16, device=device).normal_(std=k ** -0.5)
                       for _ in range(cfg.n_layers) for _, n_rows, k in per_layer]
            weights.append(torch.empty((cfg.vocab_size // shards, cfg.dim), dtype=torch.float16,
                                       device=device).normal_(std=cfg.dim ** -0.5))
            xs = {k: torch.randn(k, dtype=torch.float16, device=device) for k in {w.shape[1] for w in weights}}
            outs = [torch.empty(w.shape[0], dtype=torch.float16, device=device) for w in weights]
            pass_bytes = sum(w.numel() * 2 for w in weights)
            tiles = {
                "best": lambda n_, k_: best[(n_, k_, "")][1],
                "default": lambda n_, k_: tuple(gemv_mod.DEFAULT),
            }

            def run_cublas():
                for w, o in zip(weights, outs):
                    torch.mm(xs[w.shape[1]].view(1, -1), w.t(), out=o.view(1, -1))

            impls = {"cublas": run_cublas}
            for label, pick in tiles.items():
                def run(pick=pick):
                    for w, o in zip(weights, outs):
                        gemv_kernel.launch(xs[w.shape[1]], w, o, *pick(*w.shape))
                impls[f"triton_{label}"] = run
            if layout == "packed":
                impls["triton_folded"] = folded_pass(weights, outs, lambda n_, k_, f: best[(n_, k_, f)][1],
                                                     len(per_layer))
            for impl, fn in impls.items():
                got = pass_record(fn, pass_bytes, args.repeats, args.window_s, device, frac)
                records.append({"kind": "model", "layout": layout, "impl": impl, "shape": f"{len(weights)} matrices",
                                **got, **base})
                print(f"{name}:{shards} {layout} {impl}: {got['ms']:.3f} ms, {got['gb_per_s']:.0f} GB/s, "
                      f"{got['power_w']:.0f} W", flush=True)
            weights = outs = None
            torch.cuda.empty_cache()

    shown = [r for r in records if r["kind"] != "shape" or r["impl"] == "cublas"
             or tuple(int(v) for v in r.get("config", "0/0/0/0").split("/")) == best.get(
                 (*(int(v) for v in r["shape"].split("x")), r["form"]), (0, None))[1]]
    table = markdown(shown, COLUMNS)
    print(table)
    print("CONFIGS = {" + ", ".join(f"({n_}, {k_}): TileConfig{tile}"
                                    for (n_, k_, form), (_, tile) in sorted(best.items()) if not form) + "}")
    print("FOLDED_CONFIGS = {" + ", ".join(f"({n_}, {k_}, {form!r}): TileConfig{tile}"
                                           for (n_, k_, form), (_, tile) in sorted(best.items()) if form) + "}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(records, indent=1) + "\n", args.out / "gemv.json")
        run = run_line(common)
        write_text("# Batch-1 decode matmuls: cuBLAS and the Triton GEMV\n\nWritten by `benchmarks/gemv.py`; "
                   "record (every tile tried): [gemv.json](gemv.json). Shape rows: cuBLAS and the best tile.\n\n"
                   + run + table + "\n", args.out / "gemv.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
