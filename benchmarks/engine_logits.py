"""The fast engine's logits against the reference's, on the same weights, on real GPUs (fp16 and fp32).

    python benchmarks/engine_logits.py --model 7b --shards 1 --out $OUT
    python benchmarks/engine_logits.py --model 7b --shards 2 --out $OUT     # two ranks, one GPU each (NCCL)

Random weights. A batch of --batch sequences of --prompt-tokens random ids followed by --new-tokens more random
ids (teacher forcing: both engines see the same tokens, so one early difference cannot change what follows):
  reference  Meta's arithmetic (`model.variant(fused=False)`, eager, complex rotary, matmul attention): one
             forward over the whole sequence, logits at every position
  fast       what a point's fast engine runs: the eager fused prefill over the prompt, then one decode step
             per new token, each the compiled layers replayed as a CUDA graph (FastEngine.step); with --gemv
             (as fast_tuned runs) the Triton kernel takes the matmuls of batch-1 steps only: give --batch 1
Compared at each new token's position (the decode steps' logits): `rel_rms` = RMS(fast - reference) /
RMS(reference), `max_abs`, and `argmax_agree` (the share of positions whose most likely token is the same). A
row passes when rel_rms <= --tolerance of its dtype (defaults: fp16 2e-2, fp32 1e-4; on CPU the fp32 engines
give the same greedy tokens and logits within 1e-5: tests/test_engine.py). Records go to <out>/engine-logits.json (merged by key) and a table to
<out>/engine-logits.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from energybench.util.tables import markdown  # noqa: E402 (torch-free)
from variants import add_variant_args, engine_options, inductor_options, variant_of  # noqa: E402 (torch-free)

KEY = ("model", "shards", "dtype", "variant", "batch", "gpu")
COLUMNS = ("model", "shards", "dtype", "variant", "batch", "positions", "rel_rms", "max_abs", "ref_rms", "argmax_agree",
           "tolerance", "ok", "gpu")
TOLERANCE = {"float16": 2e-2, "float32": 1e-4}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="7b", help="model preset (conf/model)")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--dtypes", default="float16,float32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--tolerance", action="append", default=[], metavar="DTYPE=VALUE",
                    help="largest rel_rms that passes (defaults: float16=2e-2, float32=1e-4)")
    add_variant_args(ap)  # the fast engine's experiments, as benchmarks/engine.py takes them
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gemv and args.batch != 1:  # teacher forcing keeps every row: the kernel would never run
        ap.error(f"--gemv with --batch {args.batch}: the Triton kernel takes batch-1 steps only; give --batch 1")
    return args


def tolerances(args: argparse.Namespace) -> dict[str, float]:
    found = dict(TOLERANCE)
    for pair in args.tolerance:
        name, _, value = pair.partition("=")
        try:
            found[name] = float(value)
        except ValueError:
            raise SystemExit(f"--tolerance {pair!r}: give DTYPE=NUMBER, e.g. float16=2e-2") from None
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        code = worker(args)
        sys.stdout.flush()
        os._exit(code)  # skip interpreter teardown: NCCL and graph destructors can hang a rank there
    from engine import rank_env  # benchmarks/engine.py
    from energybench.distributed import free_port

    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/engine_logits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    port = free_port()
    procs = []
    for rank in range(args.shards):
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                       *(argv if argv is not None else sys.argv[1:])],
                                      env=rank_env(rank, args.shards, port, command)))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c != 0), 0)


def worker(args: argparse.Namespace) -> int:
    import torch
    import torch._inductor.config as inductor_config

    from clock import now_utc
    from energybench import provenance
    from energybench.confload import compose
    from energybench.distributed import DistEnv, model_parallel
    from energybench.engine import Sampling
    from energybench.engine.fast import FastEngine
    from energybench.model.build import build_model

    env = DistEnv.from_environ()
    device = torch.device("cuda", env.local_rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    cfg = compose([f"model={args.model}", "dataset=synthetic"]).model
    limits = tolerances(args)
    options = inductor_options(args.inductor)
    variant = variant_of(args, options)
    p, n, b = args.prompt_tokens, args.new_tokens, args.batch
    tokens = torch.randint(3, cfg.vocab_size, (b, p + n), generator=torch.Generator().manual_seed(5)).to(device)
    records = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        with model_parallel(env, device), torch.inference_mode():
            model = build_model(cfg, device, dtype, seed=1)
            model.setup_caches(b, p + n)
            width = p + n
            causal = torch.full((1, 1, width, width), float("-inf"), device=device, dtype=dtype).triu_(1)
            positions = torch.arange(width, device=device).expand(b, width)
            ref = model.variant(fused=False)(tokens, positions, n_slots=width, mask=causal, last_only=False)
            ref = ref[:, p - 1: p + n - 1].float()  # logits that predict each new token: [b, n, vocab]
            with inductor_config.patch(options):  # compiled and captured here, as a point's engine is
                engine = FastEngine(model, Sampling(0.0, 0.95), torch.Generator(device=device).manual_seed(0),
                                    **engine_options(args))
            pre = torch.arange(p, device=device).expand(b, p)
            last = torch.full((b,), p - 1, device=device)
            fast = [engine.eager(tokens[:, :p], pre, n_slots=p, mask=causal[..., :p, :p], logits_at=last).float()]
            bucket = engine.bucket_for(b)
            for t in range(p, p + n - 1):  # decode steps: token t at position t, as generate() feeds them
                engine.tok.zero_()
                engine.pos.zero_()
                engine.tok[:b, 0] = tokens[:, t]
                engine.pos[:b, 0] = t
                span = engine.span_for(bucket, t + 1)
                fast.append(engine.step(bucket, span)[:b].float().clone())
            got = torch.stack(fast, dim=1)  # [b, n, vocab]
            engine.close()
            diff = got - ref
            ref_rms = ref.pow(2).mean().sqrt().item()
            rel_rms = diff.pow(2).mean().sqrt().item() / ref_rms
            gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            records.append({
                "model": args.model, "shards": env.world_size, "dtype": dtype_name, "variant": variant,
                "attention": engine.attention, "pdl": engine.pdl, "batch": b, "positions": n,
                "prompt_tokens": p, "rel_rms": rel_rms, "max_abs": diff.abs().max().item(), "ref_rms": ref_rms,
                "argmax_agree": (got.argmax(-1) == ref.argmax(-1)).float().mean().item(),
                "tolerance": limits[dtype_name], "ok": rel_rms <= limits[dtype_name], "gpu": gpu,
                "date": now_utc(), "torch": torch.__version__, **provenance.benchmark_record(),
                "command": os.environ.get("EB_COMMAND", ""),
            })
            del model, engine
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if env.rank == 0:
        for r in records:
            print(json.dumps(r), flush=True)
        write(args.out, records)
        print(markdown(records, COLUMNS))
    return 0 if all(r["ok"] for r in records) else 1


def write(out: Path, new: list[dict]) -> None:
    from engine import marked  # benchmarks/engine.py: the docs_tables markers around a table
    from energybench.util.files import write_text

    path = out / "engine-logits.json"
    old = json.loads(path.read_text()) if path.exists() else []
    keys = {tuple(r[k] for k in KEY) for r in new}
    records = [r for r in old if tuple(r.get(k) for k in KEY) not in keys] + new
    records.sort(key=lambda r: (r["gpu"], r["model"], r["shards"], r["dtype"], r["variant"]))
    write_text(json.dumps(records, indent=1) + "\n", path)
    runs = sorted({(r["gpu"], r["date"][:10], r.get("git_commit") or "not recorded", r["command"]) for r in records})
    lines = ["# Fast engine logits against the reference's", "",
             "Written by `benchmarks/engine_logits.py` (its docstring says what is compared and how); see",
             "docs/engine.md. Record: [engine-logits.json](engine-logits.json).", "", "Runs (card, date, commit, command):",
             "", *[f"- {gpu}, {date}, commit {commit}: `{cmd}`" for gpu, date, commit, cmd in runs], "",
             *marked(path, markdown(records, COLUMNS), COLUMNS)]
    write_text("\n".join(lines) + "\n", out / "engine-logits.md")


if __name__ == "__main__":
    T0 = time.time()
    sys.exit(main())
