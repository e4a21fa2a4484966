"""The draw of the next tokens alone: Meta's sort against energybench's top-p kernel.

    python benchmarks/sampling.py --out $OUT        # one GPU; LLaMA's 32,000-token vocabulary

Temperature 0.8, top-p 0.95 over float32 logits [batch, vocab] (normal, standard deviation --stds: 1 is what the
benchmarks' random weights give, 4 a peakier distribution), each way of drawing captured as a CUDA graph with the
generator registered, as the fast engine captures its draw, and replayed (--repeats, median; `ms` is one replay,
what the engine pays per step):
  sort       engine/sampling.py sample(): softmax, sort, cumulative sum, mask, multinomial (the reference engine,
             and the fast engine before the kernel)
  kernel     sample(kernel=True): exponential noise from the generator, then engine/top_p_kernel.py, one program per
             row (the fast engine's draw on a GPU), with the warps top_p_kernel.warps_for picks
  kernel_wN  the kernel at N warps per program (--warps): which count the rule should pick
`agree` is the share of rows where the kernel, given the same noise, draws the token that the sort's nucleus and
that noise give (argmax of p / noise over the nucleus): 1.0 unless a row's nucleus edge sits within float rounding
of top_p. Records (with commit, card, versions, command) go to <out>/sampling.json, a table to stdout and
<out>/sampling.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from clock import now_utc  # noqa: E402
from graph_timing import replay_median_ms  # noqa: E402
from energybench.util.files import write_text  # noqa: E402
from energybench.util.tables import markdown  # noqa: E402

COLUMNS = ("method", "batch", "vocab", "logits_std", "warps", "ms", "agree", "gpu")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--stds", default="1,4", help="standard deviations of the logits")
    ap.add_argument("--warps", default="4,8,16,32", help="warp counts of the kernel_wN rows")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", type=Path)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from energybench import provenance
    from energybench.engine import top_p_kernel
    from energybench.engine.sampling import Sampling, nucleus, sample, sample_top_p_kernel

    args = parse(argv)
    device = torch.device("cuda", 0)
    gpu = torch.cuda.get_device_name(device)
    paper = Sampling(temperature=0.8, top_p=0.95)
    command = "python benchmarks/sampling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    block = top_p_kernel.block_for(args.vocab)

    def warped(warps: int):
        return lambda logits, sampling, generator: sample_top_p_kernel(logits, sampling, generator, warps)

    methods = {"sort": (0, lambda lg, s, g: sample(lg, s, g)),
               "kernel": (top_p_kernel.warps_for(block), lambda lg, s, g: sample(lg, s, g, kernel=True)),
               **{f"kernel_w{w}": (w, warped(w)) for w in (int(x) for x in args.warps.split(","))}}
    records = []
    for std in (float(x) for x in args.stds.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            gen = torch.Generator(device=device).manual_seed(batch)
            logits = torch.randn(batch, args.vocab, device=device, generator=gen) * std
            agree = agreement(logits, paper, gen, top_p_kernel, nucleus)
            for name, (warps, fn) in methods.items():
                fn(logits, paper, gen)  # compile, settle
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                graph.register_generator_state(gen)
                with torch.cuda.graph(graph):
                    fn(logits, paper, gen)
                ms = replay_median_ms(graph, args.repeats)
                del graph
                records.append({"method": name, "batch": batch, "vocab": args.vocab, "logits_std": std,
                                "warps": warps or None, "ms": ms, "agree": None if name == "sort" else agree,
                                "temperature": paper.temperature, "top_p": paper.top_p, "repeats": args.repeats,
                                "gpu": gpu, "date": now_utc(), "torch": torch.__version__,
                                **provenance.benchmark_record(),
                                "command": command})
    print(markdown(records, COLUMNS))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(records, indent=1) + "\n", args.out / "sampling.json")
        write_markdown(records, args.out / "sampling.md")
    return 0


def agreement(logits, sampling, gen, top_p_kernel, nucleus, trials: int = 8) -> float:
    """The share of rows (over `trials` noise draws) where the kernel draws the sort nucleus's token for the same
    noise."""
    import torch

    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    keep = nucleus(probs, sampling.top_p)
    same, total = 0, 0
    for _ in range(trials):
        noise = torch.empty(logits.shape, device=logits.device).exponential_(generator=gen)
        out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        top_p_kernel.launch(logits, noise, out, sampling.temperature, sampling.top_p)
        want = torch.where(keep, probs / noise, -1.0).argmax(-1)
        same += int((out == want).sum())
        total += out.numel()
    return same / total


def write_markdown(records: list[dict], path: Path) -> None:
    """sampling.md: the runs (card, date, commit, command) and the table."""
    runs = sorted({(r["gpu"], r["date"][:10], r.get("git_commit") or "not recorded", r["command"]) for r in records})
    lines = ["# The draw of the next tokens", "",
             "Written by `benchmarks/sampling.py` (its docstring says what each method is); see docs/engine.md.",
             "Record: [sampling.json](sampling.json).", "", "Runs (card, date, commit, command):", "",
             *[f"- {gpu}, {date}, commit {commit}: `{cmd}`" for gpu, date, commit, cmd in runs], "",
             markdown(records, COLUMNS)]
    write_text("\n".join(lines) + "\n", path)


if __name__ == "__main__":
    raise SystemExit(main())
