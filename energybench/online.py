"""One online point (workload=online): requests arrive over time into the continuous-batching engine; the
steady window, ramp-up and drain are metered, and each request gets its share of the energy.

Windows, opened at the scheduler's step edges (the same on every rank): `rampup` from the start of serving
until every slot has been in use at once or a request has finished (from then on requests leave as they
arrive), `generation` (the steady state, the headline metrics) until the last request has arrived, `drain`
until the last one is done. Files: requests.parquet, steps.parquet and run.parquet (with the usual
gpus.parquet and samples/).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from energybench import provenance
from energybench.config import PointConfig
from energybench.data import load_workload
from energybench.data.arrivals import arrival_times_s
from energybench.distributed import DistEnv, gather, model_parallel
from energybench.energy.attribution import Read, request_energy_j, step_energy_j
from energybench.device.gpus import job_gpus
from energybench.energy.meter import Meter, Reading
from energybench.energy.session import measurement
from energybench.engine.continuous import Edge, Request, Step, Trace
from energybench.power.cap import power_limits
from energybench.results.columns import config_columns
from energybench.results.metrics import online_metrics, request_times, slo_met
from energybench.results.schema import REQUESTS, RUN, STEPS, table
from energybench.results.store import read_status, write_parquet

log = logging.getLogger("energybench.online")
WINDOWS = ("rampup", "generation", "drain")


class NoSteadyState(RuntimeError):
    """The last request arrived before the slots filled or any request finished: nothing to measure."""


class Windows:
    """The engine's observer: opens rampup -> generation -> drain at step edges, and on each node leader
    reads the GPU energy counters at step edges at most every `read_s` (and at every window edge)."""

    def __init__(self, meter: Meter, requests: int, read_s: float) -> None:
        self.meter, self.requests, self.read_s = meter, requests, read_s
        self.phase = ""
        self.bounds: dict[str, list[int]] = {}  # window -> [first step, end step)
        self.edges_s: dict[str, float] = {"rampup": 0.0}  # window -> start, seconds after serving started
        self.reads: list[Read] = []
        self.steps: list[Step] = []
        self._read_at = 0.0

    def begin(self) -> None:
        self.meter.begin("rampup")
        self.phase, self.bounds["rampup"] = "rampup", [0, 0]
        self._keep_edge(0)

    def edge(self, edge: Edge) -> None:
        arrived_all = edge.arrived >= self.requests
        if self.phase == "rampup" and (edge.filled or edge.finished or arrived_all):
            if arrived_all:
                raise NoSteadyState(
                    f"all {self.requests} requests arrived before the steady state (every slot busy or a request "
                    "done) began: nothing to measure; send more requests (online.requests or online.duration_s) "
                    "or raise online.rate")
            self._switch("generation", edge)
        elif self.phase == "generation" and arrived_all:
            self._switch("drain", edge)
        elif self.meter.counters is not None and time.perf_counter() - self._read_at >= self.read_s \
                and edge.steps > self.reads[-1][0]:
            self.reads.append((edge.steps, _gpu(self.meter.counters.read())))
            self._read_at = time.perf_counter()

    def step(self, step: Step) -> None:
        self.steps.append(step)

    def end(self) -> dict[str, Reading] | None:
        """Close drain (one gather for the three windows); rank 0 gets the readings by window name."""
        self.bounds["drain"][1] = len(self.steps)
        reading = self.meter.end("drain")
        self._keep_edge(len(self.steps))
        if reading is None:
            return None
        return {r.name: r for r in self.meter.readings if r.name in WINDOWS}

    def _switch(self, new: str, edge: Edge) -> None:
        self.meter.switch(self.phase, new)  # one edge; its reading is gathered with drain's, after the windows
        self.bounds[self.phase][1] = edge.steps
        self.phase, self.bounds[new], self.edges_s[new] = new, [edge.steps, edge.steps], edge.at_s
        self._keep_edge(edge.steps)

    def _keep_edge(self, boundary: int) -> None:
        if self.meter.counters is not None:
            self.reads.append((boundary, _gpu(self.meter.last_counts)))
            self._read_at = time.perf_counter()


def _gpu(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if k.startswith("gpu:")}


def measure_online(cfg: PointConfig, env: DistEnv, pid: str, pdir: Path, threads: int | None = None) -> dict | None:
    """point._measure for workload=online: load, warm up, serve the requests in the three windows, write."""
    from energybench.point import _first_error, _state_dir, engine_columns, load_engine, pick_device, pick_dtype

    device = pick_device(cfg.device, env)
    dtype = pick_dtype(cfg.dtype, device)
    started_at = dt.datetime.now(dt.timezone.utc)
    with model_parallel(env, device), ExitStack() as cleanup, _first_error(pdir, env):
        t0 = time.perf_counter()
        requests, source = _requests(cfg)
        longest = max(len(r.prompt) for r in requests)
        engine, compiled, engine_ready_s = load_engine(cfg, env, device, dtype, cleanup, longest, online=True)
        load_s = time.perf_counter() - t0
        log.info("point %s: %d requests at %g/s over %.0f s, model loaded in %.1f s on %s", pid, len(requests),
                 cfg.online.rate, requests[-1].arrival_s, load_s, device)
        attempt = gather(env, (read_status(pdir) or {}).get("attempt", 1) if env.rank == 0 else 0)[0]
        ids = {"point_id": pid, "attempt": attempt}
        with job_gpus(cfg.meter.gpu, cfg.power_cap, env, device) as node, \
                power_limits(cfg.power, cfg.power_cap, env, node.gpus, _state_dir(cfg, pdir)) as caps, \
                measurement(cfg.meter, env, device, node, caps.gpus, caps.notes, pdir, ids) as m, \
                _first_error(pdir, env):
            m.idle()
            for w in range(cfg.warmup_batches):  # burn-in (outside every window), then serve
                chunk = requests[(w * cfg.batch) % len(requests):][: cfg.batch]
                hooks = m.meter.phase_hooks(f"warmup{w}")
                engine.generate([r.prompt for r in chunk], [r.limit for r in chunk], hooks)
            windows = Windows(m.meter, len(requests), cfg.online.counter_read_s)
            windows.begin()
            serve_at = dt.datetime.now(dt.timezone.utc)
            traces = engine.serve(requests, windows, cfg.online.prefill_tokens)
            readings = windows.end()
            reads = [r for node_reads in gather(env, windows.reads) for r in node_reads]
            energy = m.summary(readings["generation"] if readings else None, pid, attempt, pdir)  # type: ignore
        if env.rank != 0:
            return None
        assert readings is not None and energy is not None
        return _write(cfg, env, pdir, ids, windows, traces, reads, readings, energy, serve_at, {
            "dataset_source": source, "dtype": str(dtype).removeprefix("torch."), "device": device.type,
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "gpus": env.world_size if device.type == "cuda" else 0, "nodes": env.num_nodes,
            "hostnames": ",".join(env.nodelist), "slurm_job_id": env.slurm_job_id, "attempt": attempt,
            "started_at": started_at, "load_s": load_s, "engine_ready_s": engine_ready_s,
            **engine_columns(engine), **compiled.columns(),
            "torch_threads": threads})


def _requests(cfg: PointConfig) -> tuple[list[Request], str | None]:
    """One prompt per arrival, drawn as an offline point draws its samples (seeded), in arrival order; and
    where the prompts came from."""
    from energybench.point import _prepare

    o = cfg.online
    assert o.rate is not None  # config check: workload=online needs it
    times = arrival_times_s(o.rate, o.burstiness, cfg.seed if o.seed is None else o.seed, o.requests, o.duration_s)
    tokenizer = None
    if cfg.model.tokenizer and cfg.dataset.name != "synthetic":
        from energybench.model.tokenizer import Tokenizer

        tokenizer = Tokenizer(cfg.model.tokenizer)
    workload = load_workload(cfg.dataset, len(times), cfg.seed, cfg.model.vocab_size, tokenizer)
    prompts, limits = _prepare(workload.samples, cfg)
    return [Request(i, p, lim, t) for i, (p, lim, t) in enumerate(zip(prompts, limits, times))], workload.source


def _write(cfg: PointConfig, env: DistEnv, pdir: Path, ids: dict, windows: Windows, traces: list[Trace],
           reads: list[Read], readings: dict[str, Reading], energy: dict, serve_at: dt.datetime,
           columns: dict) -> dict:
    """Rank 0: steps.parquet, requests.parquet, then run.parquet; returns the run row."""
    steps = windows.steps
    step_j = step_energy_j([s.duration_s for s in steps], reads)
    shares = [s.tokens for s in steps]
    whole = request_energy_j(step_j, shares, 0, len(steps))
    first, stop = windows.bounds["generation"]
    steady = request_energy_j(step_j, shares, first, stop)
    start_s, end_s = windows.edges_s["generation"], windows.edges_s["drain"]
    step_rows = [_step_row(s, e, _window(s.index, windows.bounds), serve_at) | ids for s, e in zip(steps, step_j)]
    request_rows = [_request_row(t, whole, steady, (start_s, end_s), cfg) | ids for t in traces]
    write_parquet(table(step_rows, STEPS), pdir / "steps.parquet")
    write_parquet(table(request_rows, REQUESTS), pdir / "requests.parquet")
    ramp, drain = readings["rampup"], readings["drain"]
    row = {
        **config_columns(cfg), "status": "done", **columns,
        "finished_at": dt.datetime.now(dt.timezone.utc), **provenance.record(),
        **online_metrics(request_rows, [r for r in step_rows if r["window"] == "generation"], (start_s, end_s),
                         readings["generation"].total_energy_j, energy["idle_power_w"]),
        "rampup_s": ramp.duration_s, "drain_s": drain.duration_s,
        "rampup_energy_j": ramp.total_energy_j, "drain_energy_j": drain.total_energy_j,
        **energy,
    }
    write_parquet(table([row], RUN), pdir / "run.parquet")
    log.info("point %s: ramp-up %.1f s, steady %.1f s (%d requests, mean live %.1f, %.0f tokens/s, achieved %.2f/s), "
             "drain %.1f s", ids["point_id"], ramp.duration_s, row["duration_s"], row["responses"],
             row["mean_live"] or 0.0, row["tokens_per_s"] or 0.0, row["achieved_rate_rps"] or 0.0, drain.duration_s)
    return row


def _window(index: int, bounds: dict[str, list[int]]) -> str:
    return next(name for name in WINDOWS if bounds[name][0] <= index < bounds[name][1])


def _step_row(s: Step, energy_j: float | None, window: str, serve_at: dt.datetime) -> dict:
    return {"step_index": s.index, "kind": s.kind, "window": window,
            "started_at": serve_at + dt.timedelta(seconds=s.end_s - s.duration_s), "end_s": s.end_s,
            "duration_s": s.duration_s, "rows": s.rows, "live": s.live, "tokens": sum(t for _, t in s.tokens),
            "new_tokens": s.new_tokens, "energy_j": energy_j}


def _request_row(t: Trace, whole: dict[int, float] | None, steady: dict[int, float] | None,
                 window_s: tuple[float, float], cfg: PointConfig) -> dict:
    assert t.admitted_s is not None and t.first_token_s is not None and t.finished_s is not None, t
    times = request_times(t.arrival_s, t.admitted_s, t.first_token_s, t.finished_s, t.output_tokens)
    return {"request_index": t.index, "arrival_s": t.arrival_s, "admitted_s": t.admitted_s,
            "first_token_s": t.first_token_s, "finished_s": t.finished_s, "prompt_tokens": t.prompt_tokens,
            "output_tokens": t.output_tokens, "eos": t.eos, **times,
            "energy_j": None if whole is None else whole.get(t.index, 0.0),
            "window_energy_j": None if steady is None else steady.get(t.index, 0.0),
            "in_window": window_s[0] <= t.arrival_s < window_s[1],
            "slo_met": slo_met(times["ttft_s"], times["tpot_s"], cfg.online.slo_ttft_s, cfg.online.slo_tpot_s)}
