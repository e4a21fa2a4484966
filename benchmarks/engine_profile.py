"""Where a fast-engine decode step's time goes, and how soon the engine is ready (cold or warm compile cache).

    python benchmarks/engine_profile.py --model 7b --batches 1,64 --out $OUT
    torchrun --nproc-per-node 2 benchmarks/engine_profile.py --model 65b --batches 1,64 --out $OUT  # shards=2

Random weights (fp16 on GPU), prompts of --prompt-tokens random ids. Per process: `startup_s` (process start
to model ready), `engine_ready_s` (the fast engine built), split into `warmup_compile_s` (the first calls of
each decode step: tracing and compiling, or loading from the cache; `first_graph_s` of it the first step's, which
also initializes the compiler), `capture_s` (CUDA graph capture) and `setup_s` (the engine's own setup), with
the compile cache's hits and misses (`--compile-cache`, as a point's `compile_cache=`: run twice for cold, then warm).
Per batch, one generate call of --new-tokens gives `step_ms` (median decode step, end to end) and tokens/s;
then, at that batch with every row at the call's mean context (--prompt-tokens + --new-tokens / 2, the roofline's)
and the span that context takes (records older than this: at the last step's positions and span):
  forward_ms    GPU time of one decode forward (the captured graph replayed), CUDA events over --repeats
  sampling_ms   one temperature/top-p draw over the forward's logits (its captured graph on GPU), alone, over --repeats
  host_ms       step_ms - forward_ms - sampling_ms: the engine's bookkeeping between steps (host work the GPU
                waits for, and the per-step synchronisation)
and torch.profiler's kernels of --repeats forwards split `forward_ms` into matmul, attention, all-reduce and
other kernels, plus `forward_gaps_ms` (the forward's time with no kernel running). The batch's prefill alone (its
forward to the last tokens' logits, as generate runs it): `prefill_ms` split the same way (`prefill_matmul_ms`, ...,
`prefill_gaps_ms`), beside `prefill_call_ms`, the generate call's own prefill step. `roofline_frac` is tokens/s
over results.metrics.roofline_tokens_per_s at the call's mean context. On CPU (a plumbing check: --device cpu
--model tiny) the forward is eager and the profile splits operator self-times instead of kernels.
Experiments (recorded as the row's `variant`, and in the compile cache's key): --apart (five matmuls for
wq/wk/wv and w1/w3, where the engine packs them into two), --gemv (batch-1 matmuls through energybench's Triton
kernel, as `fast_tuned`), --attention lens|mask and --inductor KEY=VALUE (torch._inductor.config while compiling,
e.g. coordinate_descent_tuning=True, which lets inductor write its own M=1 matrix-vector kernels).
Records go to <out>/engine-profile.json (merged by key) and a table to <out>/engine-profile.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

T_PROCESS = time.time()  # before torch is imported
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from clock import now_utc  # noqa: E402
from energybench import provenance  # noqa: E402
from energybench.confload import compose  # noqa: E402
from energybench.device.cards import card_for  # noqa: E402
from energybench.distributed import DistEnv, model_parallel  # noqa: E402
from energybench.engine import NoHooks, Sampling, compile_cache, prewarm  # noqa: E402
from energybench.engine.fast import FastEngine, pack_prompts  # noqa: E402
from energybench.model.build import build_model  # noqa: E402
from energybench.results import metrics  # noqa: E402
from energybench.util.files import write_text  # noqa: E402
from energybench.util.tables import markdown  # noqa: E402
from engine import marked  # noqa: E402 (benchmarks/engine.py: the docs_tables markers around a table)
from variants import (add_variant_args, engine_choices, engine_options, inductor_options, start_of,  # noqa: E402
                      variant_facts, variant_of)

SAMPLING = Sampling(temperature=0.8, top_p=0.95)
KEY = ("model", "shards", "batch", "gpu", "start", "variant")
COLUMNS = ("model", "shards", "batch", "variant", "attention", "start", "engine_ready_s", "setup_s", "warmup_compile_s",
           "first_graph_s", "capture_s",
           "compile_cache_misses", "step_ms", "forward_ms",
           "matmul_ms", "attention_ms", "allreduce_ms", "other_kernels_ms", "forward_gaps_ms", "sampling_ms",
           "host_ms", "tokens_per_s", "roofline_frac", "prefill_ms", "prefill_matmul_ms", "prefill_attention_ms",
           "prefill_other_kernels_ms", "gpu")
# kernel (GPU) or operator (CPU) name fragments, lower case, first match wins
CATEGORIES = (
    ("allreduce", ("nccl", "all_reduce", "allreduce", "allgather", "all_gather", "c10d::", "modelparallelregion")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax_warp")),
    ("matmul", ("gemm", "gemv", "nvjet", "xmma", "cutlass", "cublas", "splitk", "_skinny", "triton_tem_", "aten::mm",
                "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
)
# inductor's pointwise and reduction kernels, named after the ops whose inputs they make
# (…_decode_attention_index_put_…: rotary and the cache write; …_rsqrt_skinny_2: the norm before the GEMM): "other"
# whatever op names they carry. Records made before this rule (through commit 97742a7) count those named after
# attention as attention (0.04-0.08 ms a step), `_skinny` as other.
ELEMENTWISE = ("triton_poi_", "triton_red_", "triton_per_")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="7b", help="model preset (conf/model)")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=50, help="forwards and draws timed per batch")
    ap.add_argument("--compile-cache", default="auto", help="as a point's compile_cache: auto | off | a folder")
    add_variant_args(ap)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    return ap.parse_args(argv)


def category(name: str) -> str:
    """A kernel's (or operator's) part of a step: one of CATEGORIES' names, or "other"."""
    low = name.lower()
    if low.startswith(ELEMENTWISE):
        return "other"
    return next((cat for cat, parts in CATEGORIES if any(p in low for p in parts)), "other")


def split_profile(events: list[tuple[str, float]], total_ms: float) -> dict[str, float]:
    """(name, duration ms) of every kernel (or operator self time) -> per-category ms and the rest as gaps."""
    out = {"matmul_ms": 0.0, "attention_ms": 0.0, "allreduce_ms": 0.0, "other_kernels_ms": 0.0}
    for name, ms in events:
        cat = category(name)
        out["other_kernels_ms" if cat == "other" else f"{cat}_ms"] += ms
    out["forward_gaps_ms"] = max(0.0, total_ms - sum(out.values()))
    return out


class Timer:
    """Milliseconds per call of `fn` over `repeats` calls: CUDA events around all of them on GPU (their mean); on
    CPU the median of each call's perf_counter time (a shared CPU can stall one call for far longer than the
    forward: on CI a stall once tripled a 3-call mean)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def per_call_ms(self, fn, repeats: int) -> float:
        fn()  # settle
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(repeats):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / repeats
        times_ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times_ms.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times_ms)


def profile_forward(fn, repeats: int, device: torch.device) -> list[tuple[str, float]]:
    """(name, ms per forward) of each GPU kernel (CPU: operator self time) over `repeats` forwards."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    found: dict[str, float] = {}
    for evt in prof.events():
        if device.type == "cuda":
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = evt.device_time
        else:
            us = evt.self_cpu_time_total
        found[evt.name] = found.get(evt.name, 0.0) + us / 1e3 / repeats
    return sorted(found.items(), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    import torch._inductor.config as inductor_config

    args = parse(argv)
    env = DistEnv.from_environ()
    device = torch.device("cuda", env.local_rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cfg = compose([f"model={args.model}", "dataset=synthetic"]).model
    batches = [int(b) for b in args.batches.split(",")]
    records = []
    with model_parallel(env, device):
        if device.type == "cuda":
            prewarm.start()  # as a point does: the compiler's imports while the weights load
        model = build_model(cfg, device, dtype, seed=1)
        model.setup_caches(max(batches), args.prompt_tokens + args.new_tokens)
        sync(device, env)
        startup_s = time.time() - T_PROCESS
        options = inductor_options(args.inductor)
        variant = variant_of(args, options)
        facts = compile_cache.key_facts(compile_cache.model_shape(cfg), device, dtype, env.world_size)
        facts = variant_facts(facts, variant)
        # the compiler's imports, begun before the weights: what is left of them counts as the engine's (as in a
        # point, whose engine waits for them); waited for here, before the compile cache's own inductor imports
        import_wait_s = prewarm.wait()
        with compile_cache.use(args.compile_cache, facts) as cache, inductor_config.patch(options):
            t0 = time.perf_counter()  # as a point's engine_ready_s: after the compile cache is set up
            engine = FastEngine(model, SAMPLING, torch.Generator(device=device).manual_seed(1),
                                **engine_options(args))
            sync(device, env)
            ready_s = import_wait_s + time.perf_counter() - t0
            cache.measure(write_key=env.is_node_leader)
            start = start_of(cache.hits, cache.misses, cache.used)
            if env.rank == 0:
                print(f"{args.model}: model ready {startup_s:.1f} s after start; engine ready in {ready_s:.1f} s "
                      f"({start}: {cache.hits} cache hits, {cache.misses} misses)", flush=True)
            for b in batches:
                row = measure_batch(args, engine, cfg, b, device, env)
                parts = engine.build_s if engine.use_graphs else {k: None for k in engine.build_s}
                records.append({"model": args.model, "shards": env.world_size, "batch": b, "variant": variant,
                                **engine_choices(engine), "start": start, **parts,
                                "import_wait_s": import_wait_s,
                                "startup_s": startup_s, "engine_ready_s": ready_s, **cache.columns(), **row})
            engine.close()
    if env.rank != 0:
        return 0
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    command = "python benchmarks/engine_profile.py " + " ".join(argv if argv is not None else sys.argv[1:])
    card = card_for(gpu)
    elem = metrics.DTYPE_BYTES[str(dtype).removeprefix("torch.")]
    for r in records:
        weights = metrics.weight_bytes_per_step(cfg.dim, cfg.n_layers, cfg.hidden_dim, cfg.vocab_size,
                                                elem)
        kv = metrics.kv_bytes_per_token(cfg.dim, cfg.n_layers, elem)
        roof = metrics.roofline_tokens_per_s(card.mem_bandwidth_gb_s, env.world_size, r["batch"], weights, kv,
                                             r.pop("context_tokens")) if card else None
        r.update({"roofline_tokens_per_s": roof, "roofline_frac": r["tokens_per_s"] / roof if roof else None,
                  "gpu": gpu, "gpus": env.world_size if device.type == "cuda" else 0, "date": now_utc(),
                  "torch": torch.__version__, **provenance.benchmark_record(), "command": command})
    write(args.out, records)
    print(table(records))
    return 0


def sync(device: torch.device, env: DistEnv) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if env.world_size > 1:
        dist.barrier()


def measure_batch(args: argparse.Namespace, engine: FastEngine, cfg, b: int, device: torch.device,
                  env: DistEnv) -> dict:
    gen = torch.Generator().manual_seed(b)
    prompts = [[1] + row for row in torch.randint(3, cfg.vocab_size, (b, args.prompt_tokens - 1),
                                                  generator=gen).tolist()]
    engine.generate(prompts, [8] * b, NoHooks())  # burn-in
    sync(device, env)
    stats = engine.generate(prompts, [args.new_tokens] * b, NoHooks())
    sync(device, env)
    steps_ms = [1e3 * s for s in stats.step_times_s[stats.prefill_steps:]]
    step_ms = statistics.median(steps_ms)
    bucket = engine.bucket_for(b)
    # the replays below run at the calls' mean context (the roofline's), every row at it: the generate call left the
    # rows at their last position, where attention=lens reads 39 % more K/V than its average step (7B, batch 64)
    context = min(args.prompt_tokens + args.new_tokens // 2, engine.room)
    engine.pos[:bucket].fill_(context - 1)
    span = engine.span_for(bucket, context)
    timer = Timer(device)
    forward_ms = timer.per_call_ms(lambda: engine.step(bucket, span), args.repeats)
    sampling_ms = timer.per_call_ms(lambda: engine.draw(bucket, span), args.repeats)  # the captured draw
    kernels = profile_forward(lambda: engine.step(bucket, span), min(args.repeats, 20), device)
    if env.rank == 0:
        print(f"batch {b}: top kernels " + "; ".join(f"{n[:60]} {ms:.3f} ms" for n, ms in kernels[:6]), flush=True)
    prefill = prefill_profile(engine, prompts, timer, device)
    if env.rank == 0:
        print(f"batch {b}: prefill {prefill['prefill_ms']:.2f} ms, top kernels "
              + "; ".join(f"{n[:60]} {ms:.3f} ms" for n, ms in prefill["prefill_top_kernels"][:4]), flush=True)
    return {"step_ms": step_ms, "forward_ms": forward_ms, **split_profile(kernels, forward_ms),
            "sampling_ms": sampling_ms, "host_ms": step_ms - forward_ms - sampling_ms,
            "tokens_per_s": stats.tokens / stats.decode_s if stats.decode_s else None,
            "decode_tokens": stats.tokens, "context_tokens": args.prompt_tokens + args.new_tokens / 2,
            "top_kernels": [[n, ms] for n, ms in kernels[:12]], "prefill_call_ms": 1e3 * stats.prefill_s, **prefill}


PREFILL_REPEATS = 5


def prefill_profile(engine: FastEngine, prompts: list[list[int]], timer: Timer, device: torch.device) -> dict:
    """The prefill of `prompts` alone (its forward to the last tokens' logits, no draw), as generate runs it:
    `prefill_ms` (CUDA events over PREFILL_REPEATS forwards) split as a decode forward is (prefill_matmul_ms,
    prefill_attention_ms, ..., prefill_gaps_ms), and its top kernels. It writes the prompts' cache slots, which the
    next generate call overwrites."""
    tokens = pack_prompts(prompts, max(len(p) for p in prompts)).to(device)
    lens = [len(p) for p in prompts]

    def forward() -> None:
        engine.prefill_logits(tokens, lens)

    prefill_ms = timer.per_call_ms(forward, PREFILL_REPEATS)
    kernels = profile_forward(forward, PREFILL_REPEATS, device)
    split = split_profile(kernels, prefill_ms)
    split["gaps_ms"] = split.pop("forward_gaps_ms")
    return {"prefill_ms": prefill_ms, **{f"prefill_{k}": v for k, v in split.items()},
            "prefill_top_kernels": [[n, ms] for n, ms in kernels[:12]]}


def write(out: Path, new: list[dict]) -> None:
    """Merge `new` into engine-profile.json (same key replaced) and rewrite engine-profile.md."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "engine-profile.json"
    old = json.loads(path.read_text()) if path.exists() else []
    keys = {_key(r) for r in new}
    records = [r for r in old if _key(r) not in keys] + new
    for r in records:
        r.setdefault("variant", "default")  # records made before experiments had variants
    records.sort(key=lambda r: (r["gpu"], r["shards"], r["model"], r.get("variant", "default"), r["start"],
                                r["batch"]))
    write_text(json.dumps(records, indent=1) + "\n", path)
    runs = sorted({(r["gpu"], r["date"][:10], r.get("git_commit") or "not recorded", r["command"]) for r in records})
    lines = ["# Fast engine: decode step breakdown and ready times", "",
             "Written by `benchmarks/engine_profile.py` (see its docstring and docs/engine.md); times per decode",
             "step in ms. Record: [engine-profile.json](engine-profile.json).", "", "Runs:", ""]
    lines += [f"- {gpu}, {date}, commit {commit}: `{cmd}`" for gpu, date, commit, cmd in runs]
    lines += ["", *marked(path, table(records), COLUMNS), ""]
    (out / "engine-profile.md").write_text("\n".join(lines))


def _key(r: dict) -> tuple:
    return tuple(r.get(k, "default" if k == "variant" else None) for k in KEY)  # records before variants: default


def table(records: list[dict]) -> str:
    return markdown(records, COLUMNS)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except compile_cache.CompileCacheError as e:  # one line, as a point would say it
        sys.exit(f"engine_profile: {e}")
