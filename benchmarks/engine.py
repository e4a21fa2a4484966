"""Engine benchmark: tokens/s and J/token of `reference`, `fast`, `fast_tuned` and HF `transformers` on real GPUs.

    python benchmarks/engine.py                          # one GPU: 7b and 13b, the four engines, batch 1/16/64
    python benchmarks/engine.py --shards 2 --models 65b  # two GPUs of one host: 65b

Random fp16 weights, prompts of 100 random tokens, 128 new tokens (temperature 0.8, top-p 0.95). Each
model runs in fresh processes (one per shard), so `startup_s` is process start to model ready. With
--shards N > 1, transformers (which has no tensor parallelism here) runs after the sharded engines in one
process whose model has its layers split over the N GPUs as `device_map` does (variant `device_map`). Energy is
the NVML total-energy counter of every GPU used, read after synchronizing the device, over a window of
whole generate calls (at least --min-window-s). Records go to <out>/engine.json and a table to
<out>/engine.md (merged with earlier records of other cards or models); <out>/records.jsonl grows as
each measurement ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


T_PROCESS = time.time()  # before torch is imported
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # energybench without installing it, as the ranks get it via PYTHONPATH
sys.path.insert(0, str(REPO / "benchmarks"))
from energybench.util.tables import markdown  # noqa: E402 (torch-free)
from variants import add_variant_args, start_of, variant_argv  # noqa: E402 (torch-free)
KEY = ("engine", "variant", "model", "batch", "shards", "prompt_tokens", "new_tokens", "gpu")
COLUMNS = ("model", "shards", "engine", "variant", "batch", "tokens_per_s", "energy_per_token_j", "power_per_gpu_w", "decode_step_ms",
           "prefill_s", "startup_s", "engine_ready_s", "compile_cache_misses", "roofline_frac", "gpu")
ENGINE_ORDER = {"reference": 0, "fast": 1, "fast_tuned": 2, "fast-eager": 3, "transformers": 4}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma list of presets (default: 7b,13b; 65b with --shards > 1)")
    ap.add_argument("--engines", default="reference,fast,fast_tuned,transformers",
                    help="registered engine names (energybench.engine.registry) and transformers")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--min-window-s", type=float, default=3.0, help="shortest energy window per measurement")
    ap.add_argument("--no-compile", action="store_true",
                    help="fast engine without torch.compile (CUDA graphs of the eager step), recorded as fast-eager")
    ap.add_argument("--compile-cache", default="auto",
                    help="torch.compile cache, as a point's compile_cache: auto | off | a folder")
    add_variant_args(ap)  # fast engine experiments, recorded as the rows' variant
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: plumbing check with model tiny
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # model preset, run as one rank
    ap.add_argument("--hf-gpus", type=int, default=1, help=argparse.SUPPRESS)  # worker: transformers over N GPUs
    args = ap.parse_args(argv)
    args.models = args.models or ("7b,13b" if args.shards == 1 else "65b")
    return args


# ---- parent: one set of rank processes per model, then the tables -----------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        from bench_worker import run_worker  # imports torch

        code = run_worker(args, T_PROCESS)  # its records are written and closed by now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip interpreter teardown: NCCL and graph destructors can hang a rank there
    args.out.mkdir(parents=True, exist_ok=True)
    records_path = args.out / "records.jsonl"
    started = records_path.stat().st_size if records_path.exists() else 0
    command = "python benchmarks/engine.py " + " ".join(argv if argv is not None else sys.argv[1:])
    failed = []
    for model in args.models.split(","):
        code = launch(args, model, command)
        if code != 0:
            failed.append(f"{model} (exit {code})")
    with records_path.open() if records_path.exists() else open(os.devnull) as f:
        f.seek(started)
        new = [json.loads(line) for line in f if line.strip()]
    write_docs(args.out, new)
    print(table(new))
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def rank_env(rank: int, world: int, port: int, command: str) -> dict[str, str]:
    """The environment of rank `rank` of `world` on this host (torchrun's variables, one GPU per rank), with the
    record's command in EB_COMMAND and this checkout and benchmarks/ on PYTHONPATH. Also engine_logits.py's."""
    return {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "NCCL_NVLS_ENABLE": "0", "EB_COMMAND": command,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")])}


def launch(args: argparse.Namespace, model: str, command: str) -> int:
    """Start `shards` ranks of this script for `model` and wait for them all; with shards > 1, transformers
    after them in one process over the same GPUs."""
    engines = args.engines.split(",")
    if args.shards == 1 or "transformers" not in engines:
        return _ranks(args, model, command, args.engines, args.shards)
    ours = ",".join(e for e in engines if e != "transformers")
    code = _ranks(args, model, command, ours, args.shards) if ours else 0
    return code or _ranks(args, model, command, "transformers", 1, hf_gpus=args.shards)


def _ranks(args: argparse.Namespace, model: str, command: str, engines: str, shards: int, hf_gpus: int = 1) -> int:
    from energybench.distributed import free_port  # here: the launcher only (it imports torch)

    port = free_port()
    procs = []
    for rank in range(shards):
        env = rank_env(rank, shards, port, command)
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", model, "--models", model,
                "--engines", engines, "--batches", args.batches, "--shards", str(shards), "--hf-gpus", str(hf_gpus),
                "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
                "--min-window-s", str(args.min_window_s), "--out", str(args.out), "--device", args.device,
                "--compile-cache", args.compile_cache]
        argv += ["--no-compile"] if args.no_compile else []
        argv += variant_argv(args)
        procs.append(subprocess.Popen(argv, env=env))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c != 0), 0)


HISTORY = """Rows without a commit were made by code older than the commit that added them (22d03ce for the H100
rows, 2c59a58 for the 65B rows: each row's `git_commit` is null and its `provenance` says so); they are kept
as history, not current. The `fast` rows of those runs were removed: they were measured before the fast
engine's prefill became eager (4c1e489) and never re-run. Numbers of both engines through the whole
pipeline, with their commit: [../results/README.md](../results/README.md)."""


def write_docs(out: Path, new: list[dict]) -> None:
    """Merge `new` into engine.json (replacing records with the same key) and rewrite engine.md: the rows
    that name their commit as current, the others as history."""
    path = out / "engine.json"
    old = json.loads(path.read_text()) if path.exists() else []
    keys = {key(r) for r in new}
    records = [r for r in old if key(r) not in keys] + new
    records.sort(key=_order)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    tmp.replace(path)
    runs = sorted({(r["gpu"], r["date"][:10], r.get("git_commit") or "not recorded", r["command"]) for r in records})
    lines = ["# Engine benchmark", "",
             "LLaMA, random fp16 weights, prompt 100 tokens, 128 new tokens, temperature 0.8, top-p 0.95.",
             "Energy from the NVML total-energy counter of every GPU used (device synchronized before each",
             "read); `energy_per_token_j` sums every GPU, `power_per_gpu_w` is their mean power.",
             "`engine_ready_s` is building the engine (the fast engine's compilation and CUDA graph capture);",
             "`compile_cache_misses` 0 means it loaded everything from the compile cache (a warm start).",
             "Written by `benchmarks/engine.py`; see docs/engine.md. Record: [engine.json](engine.json).", "",
             "Runs (card, date, commit, command):", ""]
    lines += [f"- {gpu}, {date}, commit {commit}: `{cmd}`" for gpu, date, commit, cmd in runs]
    current = [r for r in records if r.get("git_commit")]
    history = [r for r in records if not r.get("git_commit")]
    if current:
        lines += ["", "## Current (records that name their commit)", "",
                  *marked(path, table(current), COLUMNS, "git_commit!=None")]
    if history:
        lines += ["", "## History (before records named their commit)", "", HISTORY, "",
                  *marked(path, table(history), COLUMNS, "git_commit=None")]
    (out / "engine.md").write_text("\n".join(lines) + "\n")


def marked(record: Path, text: str, columns: tuple[str, ...], where: str = "") -> list[str]:
    """The table between scripts/docs_tables.py's markers when the record is in this checkout (so `--check` keeps
    it equal to the record), else as it is. Also used by engine_profile.py."""
    try:
        source = record.resolve().relative_to(REPO)
    except ValueError:
        return [text]
    condition = f" where: {where}" if where else ""
    return [f"<!-- table: records source: {source} columns: {' '.join(columns)}{condition} -->", text,
            "<!-- /table -->"]


def key(r: dict) -> tuple:
    """A record's identity; rows from before variants existed are the default variant. A cold and a warm
    start of the same engine (compile cache misses, or only hits) are two records."""
    return (*(r.get(k, "default" if k == "variant" else None) for k in KEY), start(r))


def start(r: dict) -> str:
    """The record's start (variants.start_of): cold, warm, partly warm or no compile."""
    return start_of(r.get("compile_cache_hits") or 0, r.get("compile_cache_misses") or 0)


def _order(r: dict) -> tuple:
    size = "".join(c for c in r["model"] if c.isdigit())
    return (r["gpu"], r["shards"], int(size or 0), r["model"], ENGINE_ORDER.get(r["engine"], 9), r["batch"])


def table(records: list[dict]) -> str:
    return markdown(records, COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
