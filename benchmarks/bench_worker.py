"""One rank of benchmarks/engine.py: build a model, time and meter each engine, append records (rank 0)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import torch
import torch._inductor.config as inductor_config
import torch.distributed as dist

from energybench import provenance
from energybench.confload import compose
from energybench.distributed import DistEnv, model_parallel
from energybench.engine import NoHooks, Sampling, compile_cache, make_engine
from energybench.device.cards import card_for
from energybench.engine.fast import FastEngine
from energybench.model.build import build_model
from energybench.results import metrics
from clock import now_utc
from variants import inductor_options, variant_facts, variant_name

SAMPLING = Sampling(temperature=0.8, top_p=0.95)
WARMUP_TOKENS = 8


class GpuEnergy:
    """NVML total-energy counter of this rank's GPU, found by UUID (CUDA indices can be renumbered)."""

    def __init__(self, device: torch.device) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        self.handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)

    def read_j(self) -> float:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3  # mJ -> J


def run_worker(args: argparse.Namespace, t_process: float) -> int:
    try:
        return _run(args, t_process)
    except compile_cache.CompileCacheError as e:  # one line, as a point would say it
        print(f"engine.py: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, t_process: float) -> int:
    env = DistEnv.from_environ()
    device = torch.device(args.device, env.local_rank) if args.device == "cuda" else torch.device("cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.cuda.set_device(device)
    cfg = compose([f"model={args.worker}", "dataset=synthetic"]).model
    batches = [int(b) for b in args.batches.split(",")]
    engines = args.engines.split(",")
    with model_parallel(env, device):
        bench = Bench(args, env, device, t_process)
        model = build_model(cfg, device, dtype, seed=1)
        model.setup_caches(max(batches), args.prompt_tokens + args.new_tokens)
        bench.model_ready()
        bench.roofline = roofline(cfg, device, dtype, env.world_size, args)
        facts = compile_cache.key_facts(compile_cache.model_shape(cfg), device, dtype, env.world_size)
        options = inductor_options(args.inductor)
        variant = variant_name(args.pack, options, args.attention)
        # ours, by their registered names; fast_tuned packs the model's projections in place, so it runs last
        for name in sorted((e for e in engines if e != "transformers"), key=lambda e: e == "fast_tuned"):
            ours = name == "fast"  # the experiments are the fast engine's; the reference runs as it is
            bench.variant = variant if ours else "default"
            with compile_cache.use(args.compile_cache, variant_facts(facts, bench.variant)) as cache, \
                    inductor_config.patch(options if ours else {}):
                t0 = time.perf_counter()
                generator = torch.Generator(device=device).manual_seed(1)
                if ours and args.no_compile:
                    engine, name = FastEngine(model, SAMPLING, generator, compile=False, pack=args.pack,
                                              attention=args.attention), "fast-eager"
                elif ours:
                    engine = FastEngine(model, SAMPLING, generator, pack=args.pack, attention=args.attention)
                else:
                    engine = make_engine(name, model, SAMPLING, generator)
                bench.sync()
                ready_s = time.perf_counter() - t0
                cache.measure(write_key=env.is_node_leader)
                ready = {"engine_ready_s": ready_s, "compile_cache_hits": cache.hits,
                         "compile_cache_misses": cache.misses, "attention": getattr(engine, "attention", None),
                         **getattr(engine, "build_s", {})}
                for batch in batches:
                    prompts = bench.prompts(batch, cfg.vocab_size)
                    bench.measure(name, args.worker, batch, ready, _ours(engine, prompts, args.new_tokens))
                engine.close()
        del model
        torch.cuda.empty_cache()
        if "transformers" in engines and env.world_size == 1:
            bench.variant = "default"
            t0 = time.perf_counter()
            hf = hf_model(cfg, device, dtype)
            ready = {"engine_ready_s": time.perf_counter() - t0}
            for batch in batches:
                prompts = bench.prompts(batch, cfg.vocab_size)
                bench.measure("transformers", args.worker, batch, ready, _hf(hf, prompts, args.new_tokens))
    return 0


class Bench:
    def __init__(self, args: argparse.Namespace, env: DistEnv, device: torch.device, t_process: float) -> None:
        self.args, self.env, self.device, self.t_process = args, env, device, t_process
        cuda = device.type == "cuda"
        self.energy = GpuEnergy(device) if cuda else None  # CPU: a plumbing check, no energy
        self.startup_s: float | None = None
        self.gpu = torch.cuda.get_device_name(device) if cuda else "cpu"
        self.variant = "default"
        self.roofline: Callable[[int], float] | None = None  # batch -> roofline tokens/s (see roofline())

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.env.world_size > 1:
            dist.barrier()

    def total(self, value: float) -> float:
        """Sum of `value` over ranks (every rank owns one GPU)."""
        if self.env.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def model_ready(self) -> None:
        self.sync()
        self.startup_s = self.total(time.time() - self.t_process) / self.env.world_size
        if self.env.rank == 0:
            print(f"{self.args.worker}: model ready {self.startup_s:.1f} s after process start", flush=True)

    def prompts(self, batch: int, vocab: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(batch)
        ids = torch.randint(3, vocab, (batch, self.args.prompt_tokens - 1), generator=gen)
        return [[1] + row for row in ids.tolist()]

    def measure(self, engine: str, model: str, batch: int, ready: dict, run: Run) -> None:
        """Warm up, then meter whole generate calls; `run(new_tokens)` returns (tokens, wasted). `ready`:
        engine_ready_s, and the compile cache's hits and misses for our engines."""
        new = self.args.new_tokens
        run(WARMUP_TOKENS)  # burn-in, then measure
        self.sync()
        e0, t0 = self.total(self.energy.read_j() if self.energy else 0.0), time.perf_counter()
        tokens = wasted = reps = 0
        extra: dict = {}
        while True:  # whole generate calls until the window is long enough for the counter (~100 ms steps)
            got, lost, extra = run(new)
            tokens, wasted, reps = tokens + got, wasted + lost, reps + 1
            self.sync()
            if self.total(float(time.perf_counter() - t0 < self.args.min_window_s)) == 0:  # every rank agrees
                break
        duration_s = time.perf_counter() - t0
        energy_j = self.total(self.energy.read_j() if self.energy else 0.0) - e0
        if self.env.rank != 0:
            return
        step_ms = extra.get("decode_step_ms")
        roof = self.roofline(batch) if self.roofline else None
        record = {
            "engine": engine, "variant": self.variant, "model": model, "batch": batch, "shards": self.env.world_size,
            "prompt_tokens": self.args.prompt_tokens, "new_tokens": new, "tokens": tokens,
            "wasted_tokens": wasted, "generate_calls": reps, "duration_s": duration_s,
            "tokens_per_s": tokens / duration_s, "energy_j": energy_j, "energy_per_token_j": energy_j / tokens,
            "power_per_gpu_w": energy_j / duration_s / self.env.world_size, "load_s": self.startup_s,
            "startup_s": self.startup_s, **ready, "gpu": self.gpu, "roofline_tokens_per_s": roof,
            "roofline_frac": batch * 1e3 / step_ms / roof if roof and step_ms else None,
            "gpus": self.env.world_size, "date": now_utc(), "torch": torch.__version__,
            **provenance.record(), "command": os.environ.get("EB_COMMAND", ""), **extra,
        }
        print(json.dumps(record), flush=True)
        with (self.args.out / "records.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


Run = Callable[[int], tuple[int, int, dict]]


def roofline(cfg, device: torch.device, dtype: torch.dtype, shards: int, args: argparse.Namespace):
    """batch -> results.metrics.roofline_tokens_per_s of this card and model at the calls' mean context (prompt
    + half the new tokens); None off a known card. A row's roofline_frac is its decode rate (batch over the
    median decode step) over it: prefill is left out, as the roofline leaves it out."""
    card = card_for(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if card is None:
        return None
    elem = metrics.DTYPE_BYTES[str(dtype).removeprefix("torch.")]
    weights = metrics.weight_bytes_per_step(cfg.dim, cfg.n_layers, cfg.hidden_dim, cfg.vocab_size, elem)
    kv = metrics.kv_bytes_per_token(cfg.dim, cfg.n_layers, elem)
    context = args.prompt_tokens + args.new_tokens / 2
    return lambda batch: metrics.roofline_tokens_per_s(card.mem_bandwidth_gb_s, shards, batch, weights, kv, context)


def _ours(engine, prompts: list[list[int]], new_tokens: int) -> Run:
    def run(limit: int) -> tuple[int, int, dict]:
        stats = engine.generate(prompts, [min(limit, new_tokens)] * len(prompts), NoHooks())
        steps = sorted(stats.step_times_s[stats.prefill_steps:]) or [0.0]
        return stats.tokens, stats.wasted_tokens, {"prefill_s": stats.prefill_s,
                                                   "decode_step_ms": 1e3 * steps[len(steps) // 2]}

    return run


def hf_model(cfg, device: torch.device, dtype: torch.dtype):
    """transformers' LlamaForCausalLM of the same shape, random weights created on the device in `dtype`."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, max_position_embeddings=cfg.max_seq_len,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _hf(model, prompts: list[list[int]], new_tokens: int) -> Run:
    ids = torch.tensor(prompts, device=model.device)

    def run(limit: int) -> tuple[int, int, dict]:
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=SAMPLING.temperature, top_p=SAMPLING.top_p, top_k=0,
                                 max_new_tokens=min(limit, new_tokens), pad_token_id=0, eos_token_id=2)
        new = out[:, ids.shape[1]:].tolist()
        kept = [row[: row.index(2) + 1] if 2 in row else row for row in new]
        counted = sum(len(k) for k in kept)
        return counted, sum(len(r) for r in new) - counted, {}

    return run
