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
from energybench.engine import NoHooks, Sampling, compile_cache, make_engine, prewarm
from energybench.engine.registry import engine_entry
from energybench.device.cards import card_for
from energybench.engine.fast import FastEngine
from energybench.model.build import build_model
from energybench.results import metrics
from clock import now_utc
from variants import engine_choices, engine_options, inductor_options, variant_facts, variant_of

SAMPLING = Sampling(temperature=0.8, top_p=0.95)
WARMUP_TOKENS = 8


class GpuEnergy:
    """NVML total-energy counters of this rank's GPUs (one, or every GPU of a transformers model split over
    several), found by UUID (CUDA indices can be renumbered); read_j is their sum."""

    def __init__(self, devices: list[torch.device]) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handles = []
        for device in devices:
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
            self.handles.append(pynvml.nvmlDeviceGetHandleByUUID(uuid))

    def read_j(self) -> float:
        return sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles) / 1e3  # mJ -> J


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
    if args.hf_gpus > 1:  # transformers alone, its layers split over several GPUs of this one process
        return _run_hf_split(args, cfg, batches, dtype, t_process)
    with model_parallel(env, device):
        bench = Bench(args, env, device, t_process)
        compiling = device.type == "cuda" and not args.no_compile
        if compiling and any(engine_entry(e).compiles for e in engines if e != "transformers"):
            prewarm.start()  # as a point does: the compiler's imports while the weights load
        model = build_model(cfg, device, dtype, seed=1)
        model.setup_caches(max(batches), args.prompt_tokens + args.new_tokens)
        bench.model_ready()
        bench.roofline = roofline(cfg, device, dtype, env.world_size, args)
        facts = compile_cache.key_facts(compile_cache.model_shape(cfg), device, dtype, env.world_size)
        options = inductor_options(args.inductor)
        variant = variant_of(args, options)
        # the compiler's imports, begun before the weights: what is left counts toward the first compiling engine's
        # ready time (as in a point); waited for before the compile cache's own inductor imports
        import_wait_s = prewarm.wait()
        # ours, by their registered names (fast and fast_tuned pack the model's projections in place: same values, and
        # the reference reads the same weights through views of the packed buffers); fast_tuned runs last
        for name in sorted((e for e in engines if e != "transformers"), key=lambda e: e == "fast_tuned"):
            ours = name == "fast"  # the experiments are the fast engine's; the reference runs as it is
            bench.variant = variant if ours else "default"
            with compile_cache.use(args.compile_cache, variant_facts(facts, bench.variant)) as cache, \
                    inductor_config.patch(options if ours else {}):
                t0 = time.perf_counter()
                generator = torch.Generator(device=device).manual_seed(1)
                if ours and args.no_compile:
                    engine, name = FastEngine(model, SAMPLING, generator, compile=False,
                                              **engine_options(args)), "fast-eager"
                elif ours:
                    engine = FastEngine(model, SAMPLING, generator, **engine_options(args))
                else:
                    engine = make_engine(name, model, SAMPLING, generator)
                bench.sync()
                ready_s = time.perf_counter() - t0
                if compiling and engine_entry(name).compiles:
                    ready_s, import_wait_s = ready_s + import_wait_s, 0.0
                cache.measure(write_key=env.is_node_leader)
                ready = {"engine_ready_s": ready_s, "compile_cache_hits": cache.hits,
                         "compile_cache_misses": cache.misses, **engine_choices(engine),
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


def _run_hf_split(args: argparse.Namespace, cfg, batches: list[int], dtype: torch.dtype, t_process: float) -> int:
    """transformers' model over GPUs 0..hf_gpus-1 of one process, layers split as `device_map` does (accelerate's
    dispatch_model: each GPU holds a run of layers, activations move between them; one GPU works at a time).
    Energy and power are those of all of them; the row's shards is the GPU count, its variant `device_map`."""
    devices = [torch.device("cuda", i) for i in range(args.hf_gpus)]
    bench = Bench(args, DistEnv.single(), devices[0], t_process, devices=devices)
    bench.variant = "device_map"
    t0 = time.perf_counter()
    hf = hf_model(cfg, devices[0], dtype, devices=devices)
    bench.model_ready()
    bench.roofline = roofline(cfg, devices[0], dtype, len(devices), args)
    ready = {"engine_ready_s": time.perf_counter() - t0}
    for batch in batches:
        prompts = bench.prompts(batch, cfg.vocab_size)
        bench.measure("transformers", args.worker, batch, ready, _hf(hf, prompts, args.new_tokens))
    return 0


class Bench:
    def __init__(self, args: argparse.Namespace, env: DistEnv, device: torch.device, t_process: float,
                 devices: list[torch.device] | None = None) -> None:
        """devices: every GPU this rank's measurements cover (default: `device`)."""
        self.args, self.env, self.device, self.t_process = args, env, device, t_process
        cuda = device.type == "cuda"
        self.devices = devices or [device]
        self.gpus = len(self.devices) * env.world_size  # GPUs of the measurement, all ranks
        self.energy = GpuEnergy(self.devices) if cuda else None  # CPU: a plumbing check, no energy
        self.startup_s: float | None = None
        self.gpu = torch.cuda.get_device_name(device) if cuda else "cpu"
        self.variant = "default"
        self.roofline: Callable[[int], float] | None = None  # batch -> roofline tokens/s (see roofline())

    def sync(self) -> None:
        if self.device.type == "cuda":
            for device in self.devices:
                torch.cuda.synchronize(device)
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
            "engine": engine, "variant": self.variant, "model": model, "batch": batch, "shards": self.gpus,
            "prompt_tokens": self.args.prompt_tokens, "new_tokens": new, "tokens": tokens,
            "wasted_tokens": wasted, "generate_calls": reps, "duration_s": duration_s,
            "tokens_per_s": tokens / duration_s, "energy_j": energy_j, "energy_per_token_j": energy_j / tokens,
            "power_per_gpu_w": energy_j / duration_s / self.gpus, "load_s": self.startup_s,
            "startup_s": self.startup_s, **ready, "gpu": self.gpu, "roofline_tokens_per_s": roof,
            "roofline_frac": batch * 1e3 / step_ms / roof if roof and step_ms else None,
            "gpus": self.gpus, "date": now_utc(), "torch": torch.__version__,
            **provenance.benchmark_record(), "command": os.environ.get("EB_COMMAND", ""), **extra,
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


def hf_model(cfg, device: torch.device, dtype: torch.dtype, devices: list[torch.device] | None = None):
    """transformers' LlamaForCausalLM of the same shape, random weights created on the device in `dtype`.
    devices (more than one): the model is built on `device`, then its layers are split into equal runs over
    `devices` (embeddings with the first, final norm and output with the last) and dispatched with accelerate's
    dispatch_model, as from_pretrained(device_map=...) does."""
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
    if devices and len(devices) > 1:
        from accelerate import dispatch_model

        n, layers = len(devices), cfg.n_layers
        where = [d.index if d.type == "cuda" else d.type for d in devices]  # accelerate's names: 0, 1, ... or cpu
        device_map = {"model.embed_tokens": where[0], "model.rotary_emb": where[0],
                      **{f"model.layers.{i}": where[i * n // layers] for i in range(layers)},
                      "model.norm": where[-1], "lm_head": where[-1]}
        model = dispatch_model(model, device_map=device_map)
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
