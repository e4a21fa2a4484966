"""What the card's memory delivers to simple kernels: the ceiling a decode step's matmuls and attention read against.

    python benchmarks/bandwidth.py --out $OUT          # one GPU

Each pass touches --gb of fp16 data split over buffers that together far exceed the L2 cache, captured as one CUDA
graph and replayed (--repeats, median):
  read   torch.sum over each buffer (one read of every byte; the sums are a few bytes)
  copy   dst.copy_(src) (one read and one write of every byte: both counted)
  triton_read  a Triton kernel summing each buffer in blocks of --block elements (one read, no atomics: each program
               writes its own partial sum), at 4 and 8 warps
`gb_per_s` is the bytes touched over the time; `frac_of_datasheet` divides by the card's datasheet bandwidth
(energybench.device.cards). Records (card, date, commit, versions, command) to <out>/bandwidth.json and a table to
stdout and <out>/bandwidth.md. On CPU (--device cpu, a plumbing check) the passes run eagerly, timed by the clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from energybench.util.files import write_text  # noqa: E402
from energybench.util.tables import markdown  # noqa: E402
from gemv import run_facts, run_line  # noqa: E402

COLUMNS = ("kind", "gb", "buffers", "ms", "gb_per_s", "frac_of_datasheet", "gpu")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=8.0, help="bytes read per pass, in GB (10^9)")
    ap.add_argument("--buffers", type=int, default=16, help="buffers the bytes are split over")
    ap.add_argument("--block", type=int, default=8192, help="elements per program of the Triton read")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def passes(block: int, device_type: str) -> dict:
    """kind -> (fn(buffers, outs) running one pass, bytes touched per byte of the buffers)."""
    import torch

    def read(bufs, outs):
        for b, o in zip(bufs, outs):
            torch.sum(b, dim=0, dtype=torch.float32, out=o[0])

    def copy(bufs, outs):
        for b, o in zip(bufs, outs):
            o.copy_(b)

    found = {"read": (read, 1), "copy": (copy, 2)}
    if device_type == "cuda":
        from bandwidth_kernel import triton_sum

        for warps in (4, 8):
            def tread(bufs, outs, warps=warps):
                for b, o in zip(bufs, outs):
                    triton_sum(b, o, block, warps)
            found[f"triton_read_{warps}w"] = (tread, 1)
    return found


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse(argv)
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    per_buffer = int(args.gb * 1e9 / 2 / args.buffers)  # fp16 elements
    bufs = [torch.randn(per_buffer, device=device).half() for _ in range(args.buffers)]
    common, frac = run_facts("bandwidth.py", argv, gpu)
    records = []
    for kind, (fn, touched) in passes(args.block, device.type).items():
        # a copy writes a buffer's worth; a read one fp32 sum per block (torch.sum uses the first)
        size, dtype = (per_buffer, torch.float16) if kind == "copy" else (-(-per_buffer // args.block), torch.float32)
        outs = [torch.empty(size, device=device, dtype=dtype) for _ in bufs]
        ms = time_pass(fn, bufs, outs, args.repeats, device)
        gb = touched * per_buffer * 2 * args.buffers / 1e9
        gb_s = gb / (ms * 1e-3)
        records.append({"kind": kind, "gb": gb, "buffers": args.buffers, "ms": ms, "gb_per_s": gb_s,
                        "frac_of_datasheet": frac(gb_s), **common})
        del outs
    table = markdown(records, COLUMNS)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(records, indent=1) + "\n", args.out / "bandwidth.json")
        write_text("# Memory bandwidth of simple kernels\n\nWritten by `benchmarks/bandwidth.py`; record: "
                   "[bandwidth.json](bandwidth.json).\n\n" + run_line(common) + table + "\n", args.out / "bandwidth.md")
    return 0


def time_pass(fn, bufs, outs, repeats: int, device) -> float:
    """Median ms of one pass: replays of a CUDA graph of it on GPU; on CPU the clock around eager passes."""
    import statistics

    import torch

    fn(bufs, outs)  # compile/warm
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(bufs, outs)
            times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times)
    from graph_timing import replay_median_ms

    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(bufs, outs)
    return replay_median_ms(graph, repeats)


if __name__ == "__main__":
    raise SystemExit(main())
