"""Fast-engine points one after another in one process, as a local sweep runs them: does every point
decode at the same speed, and does dynamo's compiled-code cache stay bounded?

    python benchmarks/points_in_process.py [--points 5] [--out DIR] [override ...]

Each point builds its model and engine and tears down its process group, as `cluster=local` does. Before
`FastEngine` reset the code cache (docs/engine.md), every point added entries to the cache of
`TransformerBlock.forward` (guards on the freed model-parallel group) until `recompile_limit` (8) sent the
4th point's layers to eager code: decode step 9.4 -> 12.8 ms on an H100. Prints a table per point (decode
step, tokens/s, cache entries) and writes DIR/points_in_process.json. GPU only; no meter, no power cap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energybench import provenance
from energybench.confload import compose  # noqa: E402
from energybench.launch import run_local  # noqa: E402
from energybench.model.llama import TransformerBlock  # noqa: E402
from energybench.results.layout import point_dir  # noqa: E402

POINT = ["model=7b", "dataset=synthetic", "samples=256", "batch=64", "engine=fast", "meter.gpu=none",
         "power.backend=none", "power.policy=observe", "resume=false"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    ap.add_argument("--results", type=Path, default=Path("/tmp/points-in-process"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("points_in_process.py needs a CUDA GPU (the fast engine compiles only there)")
    rows: list[dict] = []
    record = {"date": dt.date.today().isoformat(), **provenance.benchmark_record(),
              "command": " ".join(["python", *sys.argv]),
              "gpu_name": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "point": [*POINT, *args.overrides], "points": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    print("| point | state | wall s | tokens/s | decode step ms | compiled entries |\n|---|---|---|---|---|---|")
    for i in range(args.points):
        cfg = compose([*POINT, *args.overrides, f"out_dir={args.results}", f"sweep=p{i}"])
        t0 = time.monotonic()
        outcome = run_local(cfg)
        run = pq.read_table(point_dir(cfg) / "run.parquet").to_pylist()[0] if outcome.state == "done" else {}
        rows.append({"point": i, "state": outcome.state, "reason": outcome.reason, "wall_s": time.monotonic() - t0,
                     "tokens_per_s": run.get("tokens_per_s"), "tpot_s": run.get("tpot_s"),
                     "compiled_entries": len(_debug_get_cache_entry_list(TransformerBlock.forward.__code__))})
        r = rows[-1]
        step = f"{r['tpot_s'] * 1e3:.2f}" if r["tpot_s"] else "-"
        speed = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        print(f"| {i} | {r['state']} | {r['wall_s']:.1f} | {speed} | {step} | {r['compiled_entries']} |", flush=True)
        (args.out / "points_in_process.json").write_text(json.dumps(record, indent=1) + "\n")  # a timeout keeps it
    return 0 if all(r["state"] == "done" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
