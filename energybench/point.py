"""One grid point, end to end; owns the order: load -> shard -> warm up -> measure -> write.

Runs on every rank of the point (SPMD). Rank 0 writes the point's files; every file is written
whole and renamed into place, so a killed job leaves only complete ones.

    python -m energybench.point [--config point=<id>/config.yaml | <overrides>...]

runs one point in this process with the rank taken from the environment (torchrun or srun).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
import time
import traceback
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import torch
import yaml

from energybench import provenance
from energybench.config import ConfigError, PointConfig, from_mapping
from energybench.data import Sample, load_workload
from energybench.distributed import DistEnv, gather, model_parallel
from energybench.device.gpus import job_gpus
from energybench.energy.meter import Meter, Reading
from energybench.energy.session import measurement
from energybench.engine import BatchStats, Sampling, compile_cache, make_engine, prewarm
from energybench.engine.registry import engine_entry
from energybench.model.build import build_model
from energybench.power.cap import power_limits
from energybench.progress import Progress, setup_logging
from energybench.results.columns import config_columns
from energybench.results.layout import Point, write_config
from energybench.results.metrics import ratio, run_metrics, sum_or_none
from energybench.results.schema import BATCHES, RUN, table
from energybench.results.failures import error_path, error_reason
from energybench.results.status import PointOutcome, mark_done, mark_failed, mark_running
from energybench.results.store import read_status, write_parquet, write_text
from energybench.threads import size_torch_threads

log = logging.getLogger("energybench.point")


class Terminated(Exception):
    """SIGTERM or SIGINT arrived (Slurm preemption, time limit, scancel, Ctrl-C)."""


def run_point(point: Point | PointConfig, env: DistEnv | None = None) -> PointOutcome:
    """Measure one point on this rank; rank 0 records status, tables and the failure reason if any."""
    point = point if isinstance(point, Point) else Point.of(point)
    cfg, pid, pdir = point.cfg, point.id, point.dir
    env = env or DistEnv.single()
    setup_logging(env.rank)
    _error_path(pdir, env).unlink(missing_ok=True)  # an earlier attempt's
    if env.rank == 0:
        write_config(cfg, pdir)
        (pdir / "run.parquet").unlink(missing_ok=True)  # a re-run replaces the row of an earlier attempt
        mark_running(pdir, host=env.hostname, slurm_job_id=env.slurm_job_id,
                     git_commit=provenance.code()["git_commit"])  # which code ran it, beside its state
    try:
        with signals_raise():
            row = _measure(cfg, env, pid, pdir)
    except Exception as e:  # the point fails, the sweep goes on
        reason = _reason(e)
        log.error("point %s failed: %s", pid, reason)
        log.debug("%s", traceback.format_exc())
        if env.rank == 0:
            _status_or_log(pdir, "failed", reason)
        _record_error(e, pdir, env)
        return PointOutcome(pid, "failed", reason, interrupted=isinstance(e, Terminated))
    if env.rank == 0:
        why = _status_or_log(pdir, "done")
        if why is not None:  # the results are on disk but the point cannot be marked done: not a result
            return PointOutcome(pid, "failed", why)
    return PointOutcome(pid, "done", None, row)


def _status_or_log(pdir: Path, state: str, reason: str | None = None) -> str | None:
    """Mark the point done or failed; if the disk refuses (full, read-only), log it and return why instead of
    raising, so the point still ends with its reason and the sweep goes on (the status stays `running`, and
    readers see it `interrupted` once this process is gone)."""
    try:
        if state == "done":
            mark_done(pdir)
        else:
            mark_failed(pdir, str(reason))
    except OSError as e:
        why = f"cannot write {pdir / 'status.json'}: {_reason(e)}"
        log.error("point %s: %s", pdir.name, why)
        return why
    return None


@contextmanager
def _first_error(pdir: Path, env: DistEnv) -> Iterator[None]:
    """Record an exception in errors/rank-<k>.json as it is raised, before any teardown runs: the
    teardown of a failing rank (its collectives, its process group) breaks the ranks waiting on it, and
    the launcher names the rank whose error came first (energybench.results.failures)."""
    try:
        yield
    except BaseException as e:
        _record_error(e, pdir, env)
        raise


def _record_error(e: BaseException, pdir: Path, env: DistEnv) -> None:
    """errors/rank-<k>.json = {reason, failed_at_unix_s} of this rank's first error (a SIGTERM from the
    launcher during the teardown that follows must not replace it), on multi-rank points."""
    path = _error_path(pdir, env)
    if env.world_size == 1 or path.exists():
        return
    write_text(json.dumps({"reason": _reason(e), "failed_at_unix_s": time.time()}) + "\n", path)


def _error_path(pdir: Path, env: DistEnv) -> Path:
    return error_path(pdir, env.rank)


_reason = error_reason  # one line per exception (energybench.results.failures)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an exception so every `finally` (files, power limits) runs."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"received {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def pick_device(name: str, env: DistEnv) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device is visible; use device=cpu or device=auto")
    count = torch.cuda.device_count()
    if count >= env.local_world_size:
        return torch.device("cuda", env.local_rank)
    if count == 1:  # one GPU per task, as srun --gpus-per-task=1 gives
        return torch.device("cuda", 0)
    raise ConfigError(f"{env.local_world_size} ranks on this node but {count} GPUs are visible; "
                      f"use shards <= {count} per node")


def cache_facts(cfg: PointConfig, device: torch.device, dtype: torch.dtype) -> dict:
    """What the point's compiled code depends on (compile_cache.key_facts): the model's shape, not where its
    weights come from."""
    return compile_cache.key_facts(compile_cache.model_shape(cfg.model), device, dtype, cfg.shards)


def load_engine(cfg: PointConfig, env: DistEnv, device: torch.device, dtype: torch.dtype, cleanup: ExitStack,
                longest_prompt: int, online: bool = False) -> tuple[object, compile_cache.CacheUse, float]:
    """The point's compile cache, model and engine (the online one with `online`): the cache first (a folder it
    cannot use fails the point before the model loads), the compiler's imports on a thread while the weights load
    (an engine that compiles), a KV cache for `longest_prompt` + max_tokens positions, then the engine, closed by
    `cleanup` (its CUDA graphs freed while NCCL is still up). Returns (engine, cache use, engine_ready_s)."""
    compiles = engine_compiles(cfg.engine, device)
    compiled = cleanup.enter_context(compile_cache.use(cfg.compile_cache, cache_facts(cfg, device, dtype), compiles))
    if compiles:
        prewarm.start()
    model = build_model(cfg.model, device, dtype, cfg.seed)
    model.setup_caches(cfg.batch, min(cfg.model.max_seq_len, longest_prompt + cfg.max_tokens))
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    t_engine = time.perf_counter()
    engine = make_engine(cfg.engine, model, Sampling(cfg.temperature, cfg.top_p), generator, online=online)
    cleanup.callback(engine.close)
    engine_ready_s = time.perf_counter() - t_engine
    compiled.measure(write_key=env.is_node_leader)
    return engine, compiled, engine_ready_s


# run.parquet column, the fast engine's attribute, its type (a site's engine may have an attribute of that name that
# means something else: only a value of the type is recorded)
ENGINE_CHOICES = (("decode_attention", "attention", str), ("top_p_kernel", "top_p_kernel", bool), ("pdl", "pdl", bool),
                  ("blas", "blas", str), ("compile_prefill", "compile_prefill", bool),
                  ("kv_together", "kv_together", bool), ("skinny", "skinny", bool),
                  ("defer_residual", "defer_residual", bool))


def engine_columns(engine: object) -> dict:
    """run.parquet's columns of what a fast engine chose when it was built: `decode_attention` (`lens` or `mask`:
    engine/fast.py attention_mode), `top_p_kernel` (its draw through engine/top_p_kernel.py, or Meta's sort),
    `pdl` (its Triton kernels as programmatic dependent launches: model.gemv.pdl_on), `blas` (the BLAS library
    its decode graphs were captured with, where it chose one: fast_tuned's "cublaslt" on a GPU; null: PyTorch's
    setting), `compile_prefill` (its prefill through compiled layers, or eager), `kv_together` (its decode
    attention kernel loading K and V at once: fast_tuned's on a GPU) and `skinny` (its decode matmuls through
    model/skinny.py's op: the Triton GEMM at 2-16 rows, and up to 64 for the shapes of skinny.WIDE_CONFIGS, w1/w3's
    with SwiGLU in its epilogue; fast_tuned's on a compute capability 9.0+ card) and `defer_residual` (each layer's
    last residual add made in the next layer's first kernel: fast_tuned's on a GPU). None for an engine without these
    choices (`reference`, a site's)."""
    return {column: value if isinstance(value := getattr(engine, attribute, None), kind) else None
            for column, attribute, kind in ENGINE_CHOICES}


def engine_compiles(engine: str, device: torch.device) -> bool:
    """Whether the point's engine compiles: one whose registry entry says so, on a GPU (on CPU engines run eager).
    Only then does the point set up the compile cache and import the compiler while its weights load."""
    return device.type == "cuda" and engine_entry(engine).compiles


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def _measure(cfg: PointConfig, env: DistEnv, pid: str, pdir: Path) -> dict | None:
    if env.world_size != cfg.shards:
        raise ConfigError(f"shards={cfg.shards} but {env.world_size} processes were started for the point; "
                          f"start one per shard (srun --ntasks={cfg.shards})")
    threads = size_torch_threads(env)
    if cfg.workload == "online":  # requests over time, continuous batching: its own module
        from energybench.online import measure_online

        return measure_online(cfg, env, pid, pdir, threads)
    device = pick_device(cfg.device, env)
    dtype = pick_dtype(cfg.dtype, device)
    started_at = dt.datetime.now(dt.timezone.utc)
    # cleanup runs before the group is torn down; _first_error records an error before either runs
    with model_parallel(env, device), ExitStack() as cleanup, _first_error(pdir, env):
        t0 = time.perf_counter()
        tokenizer = None
        if cfg.model.tokenizer and cfg.dataset.name != "synthetic":  # synthetic prompts are token ids already
            from energybench.model.tokenizer import Tokenizer

            tokenizer = Tokenizer(cfg.model.tokenizer)
        workload = load_workload(cfg.dataset, cfg.samples, cfg.seed, cfg.model.vocab_size, tokenizer)
        batches = [_prepare(b, cfg) for b in workload.batches(cfg.batch)]
        longest = max(len(p) for prompts, _ in batches for p in prompts)
        engine, compiled, engine_ready_s = load_engine(cfg, env, device, dtype, cleanup, longest)
        load_s = time.perf_counter() - t0
        log.info("point %s: %d prompts in %d batches, model loaded in %.1f s on %s",
                 pid, len(workload.samples), len(batches), load_s, device)

        attempt = gather(env, (read_status(pdir) or {}).get("attempt", 1) if env.rank == 0 else 0)[0]
        with job_gpus(cfg.meter.gpu, cfg.power_cap, env, device) as node, \
                power_limits(cfg.power, cfg.power_cap, env, node.gpus, _state_dir(cfg, pdir)) as caps, \
                measurement(cfg.meter, env, device, node, caps.gpus, caps.notes, pdir,
                            {"point_id": pid, "attempt": attempt}) as m, _first_error(pdir, env):
            m.idle()  # the idle baseline, at the point's power cap, before the warm-up
            generation, batch_log = _run_batches(cfg, env, engine, m.meter, batches, pid, pdir, attempt)
            energy = m.summary(generation, pid, attempt, pdir)
        if env.rank != 0:
            return None
        assert generation is not None and energy is not None
        row = {
            **config_columns(cfg),
            "status": "done",
            "dataset_source": workload.source,
            "dtype": str(dtype).removeprefix("torch."),
            "device": device.type,
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "gpus": env.world_size if device.type == "cuda" else 0,
            "nodes": env.num_nodes,
            "hostnames": ",".join(env.nodelist),
            "slurm_job_id": env.slurm_job_id,
            "attempt": attempt,
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.timezone.utc),
            "load_s": load_s,
            "engine_ready_s": engine_ready_s,
            **engine_columns(engine),
            **compiled.columns(),
            "torch_threads": threads,
            "samples_with_replacement": workload.with_replacement,
            **provenance.record(),
            **run_metrics(batch_log.measured_rows(), generation.duration_s, generation.total_energy_j,
                          energy["idle_power_w"]),
            **energy,
        }
        write_parquet(table([row], RUN), pdir / "run.parquet")
        return row


def _run_batches(cfg: PointConfig, env: DistEnv, engine, meter: Meter, batches: list, pid: str, pdir: Path,
                 attempt: int) -> tuple[Reading | None, BatchLog]:
    """Warm-up batches, then the measured ones inside the `generation` window (rank 0 gets its Reading)."""
    batch_log = BatchLog(pdir / "batches.parquet", pid, attempt, enabled=env.rank == 0,
                         every_s=cfg.meter.flush_s)
    try:
        for w in range(cfg.warmup_batches):  # burn-in, then measure
            prompts, limits = batches[w % len(batches)]
            batch_log.add(w, True, *_generate(engine, meter, f"warmup{w}", prompts, limits))
        progress = Progress(len(batches), pid, enabled=env.rank == 0)
        meter.begin("generation")
        for i, (prompts, limits) in enumerate(batches):
            stats, readings, started = _generate(engine, meter, f"batch{i}", prompts, limits)
            batch_log.add(i, False, stats, readings, started)
            progress.update(stats.tokens, stats.duration_s)
        generation = meter.end("generation")
        progress.close()
    finally:
        batch_log.flush()  # an interrupted attempt keeps the batches it finished
    return generation, batch_log


def _state_dir(cfg: PointConfig, pdir: Path) -> Path:
    """Where each node's power-state file goes: power.state_dir, else the point's power-state/."""
    return Path(cfg.power.state_dir).expanduser() if cfg.power.state_dir else pdir / "power-state"


def _prepare(samples: list[Sample], cfg: PointConfig) -> tuple[list[list[int]], list[int]]:
    """Prompt ids (kept within the context window) and each response's token limit."""
    room = cfg.model.max_seq_len - cfg.max_tokens  # >= 1 (config check)
    prompts = [list(s.prompt_ids) if len(s.prompt_ids) <= room
               else [s.prompt_ids[0], *s.prompt_ids[len(s.prompt_ids) - (room - 1):]] for s in samples]
    if cfg.length == "oracle":
        limits = [max(1, min(s.reference_tokens, cfg.max_tokens)) for s in samples]
    else:
        limits = [cfg.max_tokens] * len(samples)
    return prompts, limits


def _generate(engine, meter: Meter, name: str, prompts: list[list[int]],
              limits: list[int]) -> tuple[BatchStats, dict[str, Reading], dt.datetime]:
    started = dt.datetime.now(dt.timezone.utc)
    hooks = meter.phase_hooks(name)
    stats = engine.generate(prompts, limits, hooks)
    return stats, hooks.readings, started


class BatchLog:
    """Batch rows of a point, rewritten to batches.parquet (whole file, renamed) at most every `every_s`.

    A requeued or re-run point starts from scratch; the rows of its earlier attempts stay in the file,
    each marked with its `attempt`, and only this attempt's rows feed the metrics."""

    def __init__(self, path: Path, pid: str, attempt: int, enabled: bool, every_s: float = 5.0) -> None:
        self.path, self.pid, self.attempt, self.enabled, self.every_s = path, pid, attempt, enabled, every_s
        self.earlier = _earlier_attempts(path, attempt) if enabled else []
        self.rows: list[dict] = []
        self._written = time.monotonic()

    def add(self, index: int, warmup: bool, stats: BatchStats, readings: dict[str, Reading],
            started: dt.datetime) -> None:
        if not self.enabled:
            return
        prefill, decode = readings["prefill"], readings["decode"]
        duration_s = prefill.duration_s + decode.duration_s
        decode_steps = stats.steps - stats.prefill_steps
        self.rows.append({
            "point_id": self.pid, "batch_index": index, "warmup": warmup, "attempt": self.attempt,
            "started_at": started, "responses": stats.responses, "prompt_tokens": stats.prompt_tokens,
            "max_prompt_tokens": stats.max_prompt_tokens, "tokens": stats.tokens,
            "wasted_tokens": stats.wasted_tokens, "eos_stops": stats.eos_stops, "steps": stats.steps,
            "prefill_steps": stats.prefill_steps, "prefill_s": prefill.duration_s,
            "decode_s": decode.duration_s, "duration_s": duration_s, "ttft_s": prefill.duration_s,
            "tpot_s": decode.duration_s / decode_steps if decode_steps else None,
            "tokens_per_s": ratio(stats.tokens, duration_s),
            "energy_j": sum_or_none([prefill.total_energy_j, decode.total_energy_j]),
            "prefill_energy_j": prefill.total_energy_j, "decode_energy_j": decode.total_energy_j,
            "step_times_s": stats.step_times_s,
        })
        if time.monotonic() - self._written >= self.every_s:
            self.flush(durable=False)  # inside the generation window

    def flush(self, durable: bool = True) -> None:
        if self.enabled and self.rows:
            write_parquet(table(self.earlier + self.rows, BATCHES), self.path, durable)
            self._written = time.monotonic()

    def measured_rows(self) -> list[dict]:
        return [r for r in self.rows if not r["warmup"]]


def _earlier_attempts(path: Path, attempt: int) -> list[dict]:
    if not path.is_file():
        return []
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as e:  # truncated by a full disk or a crash: this attempt replaces it
        log.warning("%s does not read back (%s); its earlier attempts' rows are lost", path, str(e).splitlines()[0])
        return []
    return [r for r in rows if r["attempt"] is not None and r["attempt"] < attempt]


def _read_config(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" on line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{where} ({getattr(e, 'problem', None) or e}); "
                          "pass a point's config.yaml") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m energybench.point", description="Run one point on this rank.")
    ap.add_argument("--config", type=Path, help="a point's config.yaml (instead of overrides)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for energybench.sweep (no sweeps)")
    args = ap.parse_args(argv)
    try:
        if args.config:
            cfg = from_mapping(PointConfig, _read_config(args.config))
        else:
            from energybench.confload import compose

            cfg = compose(args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outcome = run_point(cfg, DistEnv.from_environ())
    return 0 if outcome.state == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
