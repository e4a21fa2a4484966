"""Regenerate every table in the docs from the committed records; `--check` fails if any table differs.

    python scripts/docs_tables.py           # rewrite README.md and docs/**/*.md between their markers
    python scripts/docs_tables.py --check   # exit 1 (and name the table) if a doc differs from its records

A generated table sits between two markers, in a Markdown comment the reader does not see:

    <!-- table: NAME source: PATH [columns: COL[:FORMAT] ...] [where: KEY=VALUE|KEY!=VALUE ...] [sort: COL ...] -->
    ...generated text...
    <!-- /table -->

NAME picks a renderer (RENDERERS below, and energybench.analysis.findings.TABLES for docs/results), PATH is
the record (a benchmark JSON under docs/benchmarks, or a sweep folder of run.parquet files), relative to the
repository root. Everything outside the markers is left as written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from energybench.analysis import findings  # noqa: E402  (after the path, so a checkout runs it uninstalled)
from energybench.util.tables import markdown, where  # noqa: E402

# A marker starts a line (an indented one, as in a code block that shows the syntax, is text).
MARKER = re.compile(r"^(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)^(<!-- /table -->)", re.S | re.M)
Renderer = Callable[[Path, dict[str, list[str]]], str]


def parse_spec(spec: str) -> tuple[str, dict[str, list[str]]]:
    """'engine source: docs/x.json columns: a b' -> ('engine', {'source': [...], 'columns': ['a', 'b']})."""
    words = shlex.split(spec)
    name, args, key = words[0], {}, None
    for word in words[1:]:
        if word.endswith(":"):
            key = word[:-1]
            args[key] = []
        elif key is None:
            raise ValueError(f"table {name}: {word!r} comes before any 'key:'; write e.g. 'source: PATH'")
        else:
            args[key].append(word)
    if len(args.get("source", [])) != 1:
        raise ValueError(f"table {name}: give exactly one 'source: PATH'")
    return name, args


def _json(source: Path) -> object:
    return json.loads(source.read_text())


def _records(source: Path) -> list[dict]:
    data = _json(source)
    return data["records"] if isinstance(data, dict) else data


def records_table(source: Path, args: dict[str, list[str]]) -> str:
    """Rows of a benchmark record's `records` list (or of the list itself), `where:` filtered."""
    return markdown(where(_records(source), args.get("where", [])), args["columns"])


def meter_runs(source: Path, args: dict[str, list[str]]) -> str:
    """benchmarks/meter.py's runs: one row per run (rate, speed, energy, idle, cross-check, samples)."""
    rows = [{**r, "decode_step_ms": r["tpot_s"] * 1e3, "counter_vs_integral": r["counter_vs_integral"] or "-",
             "gpu_util_pct": "-" if r["gpu_util_pct"] is None else r["gpu_util_pct"]} for r in _json(source)["runs"]]
    cols = args.get("columns") or ["sample_hz:g", "tokens_per_s:.1f", "decode_step_ms:.2f", "duration_s:.2f",
                                   "energy_j:.1f", "idle_power_w:.1f", "net_energy_j:.1f", "energy_per_token_j:.4f",
                                   "counter_vs_integral:.4f", "gpu_util_pct:.1f", "sample_rows"]
    return markdown(rows, cols)


def meter_gpus(source: Path, args: dict[str, list[str]]) -> str:
    """benchmarks/meter.py's per-GPU rows of every run."""
    rows = [{"sample_hz": r["sample_hz"], **g, "counter_vs_integral": g["counter_vs_integral"] or "-"}
            for r in _json(source)["runs"] for g in r["gpus"]]
    cols = args.get("columns") or ["sample_hz:g", "gpu_index", "gpu_uuid", "energy_j:.1f", "idle_power_w:.1f",
                                   "power_w:.1f", "counter_vs_integral:.4f"]
    return markdown(rows, cols)


def meter_summary(source: Path, args: dict[str, list[str]]) -> str:
    """benchmarks/meter.py's summary lines: paired sampler overheads, counter step, sampler tick, per-GPU sums."""
    record = _json(source)
    s, p = record["summary"], record["probe"]
    each = ", ".join(f"{x:.2f}" for x in s["tokens_per_s_overhead_pct_each"]) or "-"
    ci = s.get("tokens_per_s_overhead_pct_ci95")
    ci_text = f"; 95 % confidence interval of the mean: [{ci[0]:.2f}, {ci[1]:.2f}] %" if ci else ""
    overhead = s["tokens_per_s_overhead_pct"]
    return (f"- tokens/s overhead of the 10 Hz sampler: {'-' if overhead is None else format(overhead, '.2f')} % "
            f"(each pair: {each}){ci_text}\n"
            f"- energy counter step: {p['counter_step_s']:.4f} s; sampler tick with a counter read: "
            f"{p['sampler_tick_ms_per_gpu']:.3f} ms per GPU\n"
            f"- per-GPU energies sum to the point's energy: {s['per_gpu_energy_sums']}")


def provenance(source: Path, args: dict[str, list[str]]) -> str:
    """A record's provenance line: its commit (or why none is known) and what it is kept as."""
    data = _json(source)
    commit = data.get("git_commit") if isinstance(data, dict) else None
    note = data.get("provenance", "") if isinstance(data, dict) else ""
    note = note[:1].upper() + note[1:] + ("." if note and not note.endswith(".") else "")
    return f"Record `{source.name}`: commit {f'`{commit}`' if commit else 'not recorded'}. {note}".rstrip()


def points_table(source: Path, args: dict[str, list[str]]) -> str:
    """One row per done point of a sweep folder (run.parquet through energybench.results.points), in point-id
    order or by the columns given in `sort:`."""
    rows = findings.point_rows(source, args.get("where", []))
    for key in reversed(args.get("sort", [])):
        rows.sort(key=lambda r: (r.get(key) is None, r.get(key)))
    return markdown(rows, args["columns"])


RENDERERS: dict[str, Renderer] = {
    "records": records_table, "meter-runs": meter_runs, "meter-gpus": meter_gpus, "meter-summary": meter_summary,
    "provenance": provenance, "points": points_table, **findings.TABLES,
}


def render(spec: str) -> str:
    name, args = parse_spec(spec)
    if name not in RENDERERS:
        raise ValueError(f"table {name}: unknown; choose one of {', '.join(sorted(RENDERERS))}")
    source = REPO / args["source"][0]
    if not source.exists():
        raise ValueError(f"table {name}: source {args['source'][0]} does not exist")
    return RENDERERS[name](source, args).rstrip("\n") + "\n"


def regenerate(text: str) -> str:
    """`text` with every table between markers rendered again from its source."""
    return MARKER.sub(lambda m: m.group(1) + render(m.group("spec")) + m.group(4), text)


def documents(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its records")
    args = ap.parse_args(argv)
    stale = []
    for path in documents():
        text = path.read_text()
        if "<!-- table:" not in text:
            continue
        try:
            new = regenerate(text)
        except ValueError as e:
            print(f"error: {os.path.relpath(path, REPO)}: {e}", file=sys.stderr)
            return 2
        if new != text:
            stale.append(os.path.relpath(path, REPO))
            if not args.check:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(new)
                tmp.replace(path)
    for path in stale:
        print(f"{'differs from its records' if args.check else 'regenerated'}: {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
