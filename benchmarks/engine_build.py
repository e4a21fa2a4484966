"""Where the fast engine's build time goes, step by step: each (batch, span) step's first call, second call and
capture, with the compiler's counters, for a cold and then a warm start (a fresh process each).

    python benchmarks/engine_build.py --model 7b --out $OUT                     # the engine's default attention
    python benchmarks/engine_build.py --model 7b --attention mask --out $OUT

Random fp16 weights, the KV cache and batch buckets of benchmarks/engine.py (batch 64, 100 + 128 positions).
The engine is built as a point builds it (compile cache --compile-cache, compiler imports behind the load; the
process waits for those imports before the build starts, so `engine_ready_s` here is the build alone: a point
counts what is left of the imports too, which the profiles record as `import_wait_s`, ~0 s once 7B has loaded);
its `_capture` is wrapped from outside to time, per step shape: `first_ms` (the first call: Dynamo's guard
check or trace, loading or compiling kernels, cuDNN's plan for a new shape, lazy initialisation), `second_ms`
(the same call again: what a step costs once everything exists), `capture_ms` (CUDA graph capture), and the
growth of torch's counters during the first call (`graphs` traced by Dynamo, `cache_hits` / `cache_misses` of
the FX-graph and AOTAutograd caches). Each run is two processes, cold (an empty cache folder) then warm.
Records (with commit, card, versions, command) go to <out>/engine-build.json and a table to
<out>/engine-build.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from energybench.util.files import write_text  # noqa: E402 (torch-free)
from energybench.util.tables import markdown  # noqa: E402

COLUMNS = ("model", "attention", "span_budget", "start", "batch", "span", "first_ms", "second_ms", "capture_ms",
           "graphs", "cache_hits", "cache_misses", "gpu")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="7b")
    ap.add_argument("--attention", choices=("lens", "mask"), default=None,
                    help="FastEngine attention (default: the engine's, lens on a GPU with Triton)")
    ap.add_argument("--span-budget", type=float, default=None, metavar="FRACTION",
                    help="FastEngine span_budget: fewer attention spans for small batches (default: every span)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--positions", type=int, default=228)
    ap.add_argument("--compile-cache", default=None, help="cache folder (default: a new temporary one, cold)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # cold | warm: one process
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        return worker(args, argv if argv is not None else sys.argv[1:])
    cache = args.compile_cache or tempfile.mkdtemp(prefix="eb-build-")
    records = []
    for start in ("cold", "warm"):
        result = Path(tempfile.mkdtemp()) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", start, "--model", args.model,
               "--batch", str(args.batch), "--positions", str(args.positions),
               "--compile-cache", cache, "--out", str(result)]
        cmd += ["--attention", args.attention] if args.attention else []
        cmd += ["--span-budget", str(args.span_budget)] if args.span_budget is not None else []
        env = {**os.environ, "EB_COMMAND": "python benchmarks/engine_build.py " + " ".join(argv or sys.argv[1:]),
               "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
        code = subprocess.run(cmd, env=env).returncode
        if code != 0:
            print(f"engine_build.py: the {start} process failed (exit {code})", file=sys.stderr)
            return code
        records += json.loads(result.read_text())
    table = markdown(records, COLUMNS)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "engine-build.json"
        old = json.loads(path.read_text()) if path.exists() else []
        key = lambda r: (r["model"], r["attention"], r.get("span_budget"), r["start"], r["gpu"])  # noqa: E731
        keys = {key(r) for r in records}
        merged = [r for r in old if key(r) not in keys] + records
        write_text(json.dumps(merged, indent=1) + "\n", path)
        write_text("# Fast engine build, step by step\n\nWritten by `benchmarks/engine_build.py`; record: "
                   "[engine-build.json](engine-build.json).\n\n" + markdown(merged, COLUMNS) + "\n",
                   args.out / "engine-build.md")
    return 0


def worker(args: argparse.Namespace, argv: list[str]) -> int:
    import torch
    from torch._dynamo.utils import counters

    from clock import now_utc
    from energybench import provenance
    from energybench.confload import compose
    from energybench.distributed import DistEnv, model_parallel
    from energybench.engine import Sampling, compile_cache, prewarm
    from energybench.engine.fast import FastEngine
    from energybench.model.build import build_model

    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    cfg = compose([f"model={args.model}", "dataset=synthetic"]).model
    rows: list[dict] = []

    def counts() -> tuple[int, int, int]:
        return (counters["stats"]["unique_graphs"],
                counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"],
                counters["inductor"]["fxgraph_cache_miss"] + counters["aot_autograd"]["autograd_cache_miss"])

    original_decode = FastEngine._decode
    original_capture = FastEngine._capture

    def timed_capture(self: FastEngine, b: int, s: int) -> None:
        calls: list[float] = []

        def decode(b_: int, s_: int) -> torch.Tensor:
            if len(calls) == 2:  # the third call is the capture's: no synchronizing inside a capture
                return original_decode(self, b_, s_)
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out = original_decode(self, b_, s_)
            torch.cuda.synchronize(device)
            calls.append(1e3 * (time.perf_counter() - t0))
            return out

        before = counts()
        self._decode = decode  # instance attribute: the engine's own calls go through it
        try:
            t0 = time.perf_counter()
            original_capture(self, b, s)
            total_ms = 1e3 * (time.perf_counter() - t0)
        finally:
            del self._decode
        after = counts()
        rows.append({"batch": b, "span": s, "first_ms": calls[0], "second_ms": calls[1],
                     "capture_ms": total_ms - sum(calls[:2]), "graphs": after[0] - before[0],
                     "cache_hits": after[1] - before[1], "cache_misses": after[2] - before[2]})

    FastEngine._capture = timed_capture
    with model_parallel(DistEnv.single(), device):
        prewarm.start()
        model = build_model(cfg, device, torch.float16, seed=1)
        model.setup_caches(args.batch, args.positions)
        prewarm.wait()
        facts = compile_cache.key_facts(compile_cache.model_shape(cfg), device, torch.float16, 1)
        variant = f"build-{args.attention or 'default'}"
        with compile_cache.use(args.compile_cache, {**facts, "variant": variant}) as cache:
            t0 = time.perf_counter()
            engine = FastEngine(model, Sampling(0.8, 0.95), torch.Generator(device=device).manual_seed(1),
                                attention=args.attention, span_budget=args.span_budget)
            ready_s = time.perf_counter() - t0
            cache.measure(write_key=False)
        engine.close()
    gpu = torch.cuda.get_device_name(device)
    common = {"model": args.model, "attention": engine.attention, "span_budget": args.span_budget,
              "start": args.worker, "engine_ready_s": ready_s,
              **engine.build_s, "gpu": gpu, "date": now_utc(), "torch": torch.__version__,
              **provenance.benchmark_record(),
              "command": os.environ.get("EB_COMMAND", "")}
    print(f"{args.model} {engine.attention} {args.worker}: ready in {ready_s:.1f} s ({len(rows)} steps)", flush=True)
    args.out.write_text(json.dumps([{**common, **r} for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
