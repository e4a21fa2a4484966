"""`python -m energybench.report <sweep dir>... [--out DIR]`: a Markdown + HTML report with PNG figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from energybench.advise import FACTORS, add_factor_arguments, factor_error
from energybench.analysis.report import write_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m energybench.report",
                                 description="Report of one or several sweeps: what varied, which points failed "
                                             "and why, tables and every figure.")
    ap.add_argument("paths", nargs="+", type=Path, help="sweep directories (<out_dir>/<sweep>), out_dirs or points")
    ap.add_argument("--out", type=Path, help="report directory (default: <path>/report for one path, "
                                             "./energybench-report for several); replaced whole")
    ap.add_argument("--no-html", action="store_true", help="write report.md only")
    add_factor_arguments(ap)
    args = ap.parse_args(argv)
    if factor_error(args):
        print(f"error: {factor_error(args)}", file=sys.stderr)
        return 2
    for p in args.paths:
        if not p.expanduser().is_dir():
            print(f"error: {p}: no such results directory; pass <out_dir>/<sweep> (e.g. results/quickstart)",
                  file=sys.stderr)
            return 2
    out = args.out or (args.paths[0] / "report" if len(args.paths) == 1 else Path("energybench-report"))
    try:
        report = write_report(args.paths, out, html=not args.no_html,
                              factors={dest: getattr(args, dest) for _, dest, _ in FACTORS})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {report}" + ("" if args.no_html else f" (and {report.with_suffix('.html')})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
