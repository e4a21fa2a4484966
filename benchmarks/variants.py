"""Fast-engine experiments shared by benchmarks/engine.py and engine_profile.py: --apart, --gemv, --attention and
--inductor KEY=VALUE, recorded as a row's `variant` and added to the compile cache's key (a variant never loads
another's kernels)."""

from __future__ import annotations


def inductor_options(pairs: list[str]) -> dict[str, object]:
    """--inductor KEY=VALUE ... -> {KEY: value} (Python literals; anything else stays text), each KEY checked
    against torch._inductor.config (SystemExit with one line naming a key it does not have)."""
    import ast

    import torch._inductor.config as inductor

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"--inductor {pair!r}: give KEY=VALUE, e.g. coordinate_descent_tuning=True")
        target = inductor
        for part in key.split(".")[:-1]:
            target = getattr(target, part, None)
        if target is None or not hasattr(target, key.split(".")[-1]):
            raise SystemExit(f"--inductor {pair!r}: torch._inductor.config has no {key}")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def variant_name(pack: bool, options: dict[str, object], attention: str | None = None, gemv: bool = False,
                 span_budget: float | None = None, blas: str | None = None, compile_prefill: bool = False,
                 kv_together: bool = False, skinny: bool = False, defer_residual: bool = False) -> str:
    """The row's `variant`: what was asked beyond the fast engine's defaults (an attention named on the command
    line is part of it; the attention the engine ran is the row's `attention` column either way)."""
    parts = (["apart"] if not pack else []) + (["gemv"] if gemv else [])
    parts += [f"attention={attention}"] if attention else []
    parts += [f"span_budget={span_budget:g}"] if span_budget is not None else []
    parts += [f"blas={blas}"] if blas else []
    parts += ["compile_prefill"] if compile_prefill else []
    parts += ["kv_together"] if kv_together else []
    parts += ["skinny"] if skinny else []
    parts += ["defer_residual"] if defer_residual else []
    parts += [f"{k}={v}" for k, v in sorted(options.items())]
    return "+".join(parts) or "default"


def variant_of(args, options: dict[str, object]) -> str:
    """variant_name of the fast engine experiments parsed by add_variant_args (and --inductor's options)."""
    return variant_name(args.pack, options, args.attention, args.gemv, args.span_budget, args.blas,
                        args.compile_prefill, args.kv_together, args.skinny, args.defer_residual)


def engine_options(args) -> dict[str, object]:
    """FastEngine's keyword arguments for the experiments parsed by add_variant_args."""
    return {"pack": args.pack, "attention": args.attention, "gemv": args.gemv, "span_budget": args.span_budget,
            "blas": args.blas, "compile_prefill": args.compile_prefill, "kv_together": args.kv_together,
            "skinny": args.skinny, "defer_residual": args.defer_residual}


def variant_argv(args) -> list[str]:
    """The command line that add_variant_args parses back into `args`' experiments (for a worker process)."""
    argv = ["--apart"] if not args.pack else []
    argv += ["--attention", args.attention] if args.attention else []
    argv += ["--gemv"] if args.gemv else []
    argv += ["--blas", args.blas] if args.blas else []
    argv += ["--compile-prefill"] if args.compile_prefill else []
    argv += ["--kv-together"] if args.kv_together else []
    argv += ["--skinny"] if args.skinny else []
    argv += ["--defer-residual"] if args.defer_residual else []
    argv += ["--span-budget", str(args.span_budget)] if args.span_budget is not None else []
    return argv + [a for pair in args.inductor for a in ("--inductor", pair)]


def engine_choices(engine: object) -> dict[str, object]:
    """A benchmark record's columns of what the engine chose when it was built: run.parquet's (point.engine_columns),
    its decode attention as `attention`, as the records have always named it."""
    from energybench.point import engine_columns  # here: this module stays torch-free for engine.py's parent

    columns = engine_columns(engine)
    return {"attention": columns.pop("decode_attention"), **columns}


def start_of(hits: int, misses: int, used: bool = True) -> str:
    """How a compiling engine started, from its compile cache's counters: cold (compiled everything), warm (loaded
    everything), partly warm, or no compile (the cache was not used, or nothing compiled). engine_profile.py's
    `start` column and part of engine.py's record identity."""
    if not used or not (hits or misses):
        return "no compile"
    return "warm" if not misses else "cold" if not hits else "partly warm"


def variant_facts(facts: dict, variant: str) -> dict:
    """The compile cache's key facts of `variant`: the default shares the points' folder, any other has its own."""
    return facts if variant == "default" else {**facts, "variant": variant}


def add_variant_args(ap) -> None:
    ap.add_argument("--apart", dest="pack", action="store_false",
                    help="wq/wk/wv and w1/w3 as five matmuls, as Meta's layers (FastEngine pack=False; it packs them)")
    ap.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                    help="set torch._inductor.config.KEY before compiling, e.g. coordinate_descent_tuning=True")
    ap.add_argument("--gemv", action="store_true",
                    help="batch-1 matmuls through energybench's Triton kernel (FastEngine gemv=True; model/gemv.py)")
    ap.add_argument("--span-budget", type=float, default=None, metavar="FRACTION",
                    help="build fewer attention spans for small batches (FastEngine span_budget; default: every span)")
    ap.add_argument("--blas", choices=("cublas", "cublaslt"), default=None,
                    help="the BLAS library the decode graphs are captured with (FastEngine blas=; default: "
                         "PyTorch's setting)")
    ap.add_argument("--compile-prefill", action="store_true",
                    help="prefill through compiled layers, built with the engine (FastEngine compile_prefill=True)")
    ap.add_argument("--kv-together", action="store_true",
                    help="the decode attention kernel loading each tile's K and V at once, with its own tiles "
                         "(FastEngine kv_together=True; needs attention lens)")
    ap.add_argument("--skinny", action="store_true",
                    help="batch 2-16 matmuls through energybench's Triton GEMM (FastEngine skinny=True; "
                         "model/skinny.py)")
    ap.add_argument("--defer-residual", action="store_true",
                    help="each layer's last residual add made in the next layer's first kernel (FastEngine "
                         "defer_residual=True)")
    ap.add_argument("--attention", choices=("lens", "mask"), default=None,
                    help="the fast engine's decode attention (FastEngine attention=; default: lens on a GPU with "
                         "Triton, mask elsewhere)")
