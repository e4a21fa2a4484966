"""What continuous batching costs over the offline loop on the same prompts: every request arriving at once
into `batch` slots (serve) against the same prompts in fixed batches (generate), same model and engine.

    python benchmarks/online.py [--model 7b] [--batch 64] [--requests 512] [--max-tokens 128] [--out DIR]

Both modes run the fast engine (compiled, CUDA graphs on GPU; eager on CPU) on synthetic Alpaca-length
prompts with random weights, after one warm-up batch. serve refills a slot as soon as its sequence ends
and prefills new prompts in separate chunked forwards; generate runs each batch to its end. Prints a table
(tokens/s, decode steps, mean decode-row occupancy, host share of the wall time) and writes
DIR/online.json with provenance. No meter: energy of served points comes from the sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energybench import provenance  # noqa: E402
from energybench.confload import compose  # noqa: E402
from energybench.data.synthetic import synthetic_workload  # noqa: E402
from energybench.distributed import DistEnv, model_parallel  # noqa: E402
from energybench.engine import NoHooks, Sampling  # noqa: E402
from energybench.engine.continuous import ContinuousEngine, Request  # noqa: E402
from energybench.model.build import build_model  # noqa: E402


class Steps:
    """Observer that keeps the decode steps' row counts and live sequences."""

    def __init__(self) -> None:
        self.decode: list[tuple[int, int]] = []  # (rows computed, sequences fed)

    def edge(self, edge) -> None:
        pass

    def step(self, step) -> None:
        if step.kind == "decode":
            self.decode.append((step.rows, len(step.tokens)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(engine: ContinuousEngine, prompts: list[list[int]], limits: list[int], batch: int, mode: str) -> dict:
    device = engine.device
    sync(device)
    t0 = time.perf_counter()
    if mode == "generate":
        tokens = steps = 0
        for i in range(0, len(prompts), batch):
            stats = engine.generate(prompts[i:i + batch], limits[i:i + batch], NoHooks())
            tokens, steps = tokens + stats.tokens, steps + stats.steps - stats.prefill_steps
        occupancy = None
    else:
        observer = Steps()
        traces = engine.serve([Request(i, p, lim, 0.0) for i, (p, lim) in enumerate(zip(prompts, limits))],
                              observer, prefill_tokens=512)
        tokens, steps = sum(t.output_tokens for t in traces), len(observer.decode)
        occupancy = sum(f for _, f in observer.decode) / max(1, sum(r for r, _ in observer.decode))
    sync(device)
    wall_s = time.perf_counter() - t0
    return {"mode": mode, "tokens": tokens, "wall_s": wall_s, "tokens_per_s": tokens / wall_s,
            "decode_steps": steps, "row_occupancy": occupancy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="7b")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = ap.parse_args()
    cfg = compose([f"model={args.model}", "dataset=synthetic", "engine=fast"])
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    samples = synthetic_workload("alpaca", args.requests, 1, cfg.model.vocab_size).samples
    prompts = [list(s.prompt_ids) for s in samples]
    limits = [args.max_tokens] * len(prompts)
    with model_parallel(DistEnv.single(), device):
        model = build_model(cfg.model, device, dtype, seed=1)
        model.setup_caches(args.batch, max(map(len, prompts)) + args.max_tokens)
        engine = ContinuousEngine(model, Sampling(0.8, 0.95), torch.Generator(device=device).manual_seed(1))
        try:
            engine.generate(prompts[: args.batch], limits[: args.batch], NoHooks())  # burn-in, then measure
            rows = [run(engine, prompts, limits, args.batch, mode) for mode in ("generate", "serve")]
        finally:
            engine.close()
    print("| mode | tokens | wall s | tokens/s | decode steps | decode row occupancy |\n|---|---|---|---|---|---|")
    for r in rows:
        occ = "-" if r["row_occupancy"] is None else f"{r['row_occupancy']:.2f}"
        print(f"| {r['mode']} | {r['tokens']:,} | {r['wall_s']:.2f} | {r['tokens_per_s']:,.0f} | "
              f"{r['decode_steps']:,} | {occ} |")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {**provenance.benchmark_record(),
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    (args.out / "online.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
