"""Build a sweep report: Markdown + PNG figures (+ HTML), written whole into place; works on partial sweeps."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd

import energybench
import energybench.results as results
from energybench.results.metrics import CROSS_CHECK_TOLERANCE, carbon_cost
import energybench.analysis.report_sections as sections
from energybench.analysis import FIGURES
from energybench.analysis.extra import TIMELINE_COLUMNS
from energybench.analysis.grid import done, sort_values, value_label, varied
from energybench.analysis.online import report_blocks as online_blocks
from energybench.analysis.render import Block, markdown, to_html
from energybench.analysis.tables import (efficiency_table, memory_table, power_cap_table, status_table,
                                         summary_table, utilization_table)

FIXED = ("model", "dataset", "gpu_name", "batch", "max_tokens", "shards", "power_cap_w", "samples", "engine",
         "length", "temperature", "top_p", "dtype", "cluster")
TIMELINE_POINTS = 4


def _scope(points: pd.DataFrame) -> list[Block]:
    counts = points["status"].value_counts()
    tally = ", ".join(f"{n} {state}" for state, n in counts.items())
    blocks = [Block("p", f"{len(points)} points: {tally}.")]
    d = done(points) if len(done(points)) else points
    dims = varied(d)
    if dims:
        blocks.append(Block("h2", "What the sweep varied"))
        blocks.append(Block("p", "; ".join(
            f"{a}: {', '.join(value_label(a, v) for v in sort_values(a, d[a].tolist()))}" for a in dims)))
    fixed = [f"{a}={value_label(a, d[a].iloc[0])}" for a in FIXED if a in d and a not in dims and len(d)]
    blocks.append(Block("p", "Fixed: " + ", ".join(fixed) + "."))
    return blocks


def _not_done(points: pd.DataFrame) -> list[Block]:
    table = status_table(points)
    if table.empty:
        return [Block("h2", "Points not done"), Block("p", "None: every point finished.")]
    return [Block("h2", "Points not done"),
            Block("p", "These points are listed, not plotted. failed: the reason is the point's error; running: "
                       "its process (or Slurm job) is still alive, or cannot be checked from this host; "
                       "interrupted: its process or job is gone without recording a result (killed, out of disk, "
                       "node lost); broken: its run.parquet does not read back. Re-run the sweep to resume."),
            Block("table", frame=table)]


def _table(title: str, frame: pd.DataFrame, intro: str = "") -> list[Block]:
    blocks = [Block("h2", title)] + ([Block("p", intro)] if intro else [])
    if frame.attrs.get("note"):
        blocks.append(Block("p", f"Note: {frame.attrs['note']}."))
    if not frame.empty:
        blocks.append(Block("table", frame=frame))
    return blocks


def _timeline_points(points: pd.DataFrame) -> list[Path]:
    d = done(points)
    dirs = [Path(p) for p in d["point_dir"] if (Path(p) / "samples").is_dir()]
    if len(dirs) <= TIMELINE_POINTS:
        return dirs
    step = (len(dirs) - 1) / (TIMELINE_POINTS - 1)
    return [dirs[round(i * step)] for i in range(TIMELINE_POINTS)]


def _figures(points: pd.DataFrame, fig_dir: Path, dpi: int) -> list[Block]:
    blocks = [Block("h2", "Figures")]
    chosen = _timeline_points(points)
    samples = results.gpu_samples(*chosen, columns=TIMELINE_COLUMNS) if chosen else pd.DataFrame()
    for spec in FIGURES:
        fig = spec.draw(samples if spec.input == "samples" else points)
        title = fig.get_suptitle() or spec.name
        blocks.append(Block("h3", title))
        if fig.empty:
            blocks.append(Block("p", f"Not drawn: {fig.notes[0]}."))
            continue
        fig.savefig(fig_dir / f"{spec.name}.png", dpi=dpi)
        blocks.append(Block("img", title, path=f"figures/{spec.name}.png"))
        blocks.append(Block("p", spec.how_to_read))
        blocks.extend(Block("p", f"Note: {n}.") for n in fig.notes)
    return blocks


def _checks(points: pd.DataFrame) -> list[Block]:
    d = done(points)
    rows = []
    for col in [c for c in d.columns if c.endswith("_notes")]:
        for _, r in d[d[col].notna() & (d[col].astype(str) != "")].iterrows():
            rows.append({"point_id": r["point_id"], "note": f"{col}: {r[col]}"})
    if "counter_vs_integral" in d:
        off = d[(d["counter_vs_integral"] - 1).abs() > CROSS_CHECK_TOLERANCE]
        rows += [{"point_id": r["point_id"], "note": f"counter_vs_integral={r['counter_vs_integral']:.3f}: energy "
                  f"counter and integrated power samples disagree by more than {CROSS_CHECK_TOLERANCE:.0%}"}
                 for _, r in off.iterrows()]
    if not rows:
        return []
    return _table("Measurement warnings", pd.DataFrame(rows))


def build(paths: Sequence[str | Path], fig_dir: Path, dpi: int = 110,
          factors: dict[str, float | None] | None = None) -> tuple[list[Block], pd.DataFrame]:
    """The report's blocks for the sweeps under `paths`; figures are written into `fig_dir`. `factors`
    (intensity_g_per_kwh, pue, usd_per_kwh) replace the points' own carbon and cost factors."""
    points = carbon_cost(results.points(*paths), **(factors or {}))
    if points.empty:
        raise ValueError(f"no points under {', '.join(map(str, paths))}: pass a sweep directory "
                         "(<out_dir>/<sweep>) or an out_dir")
    sweeps = ", ".join(sorted(points["sweep"].dropna().astype(str).unique()))
    blocks = [Block("h1", f"energybench report: {sweeps}"),
              Block("p", f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by energybench "
                         f"{energybench.__version__} from {', '.join(str(Path(p)) for p in paths)}. "
                         "Methodology, formulas and how to read each figure: docs/methodology.md.")]
    blocks += _scope(points) + _not_done(points)
    blocks += _table("Results", summary_table(points), "One row per finished point (measured window; warm-up "
                     "excluded). J/token = energy of every GPU of the job / generated tokens.")
    blocks += _figures(points, fig_dir, dpi)
    blocks += online_blocks(points, fig_dir, dpi)
    blocks += _table("Power cap (paper Table III)", power_cap_table(points),
                     "% change against the highest cap of the same configuration.")
    blocks += _table("GPU utilization, % (paper Table IV)", utilization_table(points))
    blocks += _table("GPU memory used, fraction (paper Table V)", memory_table(points))
    blocks += _table("Efficiency against physical limits", efficiency_table(points),
                     "roofline: HBM-bandwidth bound of decode from the card's datasheet bandwidth; floor: idle "
                     "power x roofline time per token.")
    blocks += sections.recommendation(points, paths) + sections.carbon_cost(points) + sections.sacct(points)
    blocks += _checks(points)
    blocks += _table("Known GPUs", pd.DataFrame(results.cards_table()),
                     "Datasheet memory bandwidth (GB/s = 10^9 bytes/s), board power and memory used for the "
                     "roofline; a card not listed here gets no roofline "
                     "(add it: docs/extending.md, \"Add a GPU card\").")
    return blocks, points


MARKER = ".energybench-report"  # written into every report directory: only such a directory is ever replaced


def out_problem(paths: Sequence[str | Path], out: Path) -> str | None:
    """Why `out` must not be (re)placed by a report, or None: it holds or is one of the inputs, or it is an
    existing non-empty directory that this command did not write (no MARKER file in it)."""
    out = out.expanduser().resolve()
    for p in paths:
        src = Path(p).expanduser().resolve()
        if out == src or out in src.parents:
            return (f"--out {out}: it holds the results being reported ({src}); choose a new directory, "
                    f"e.g. --out {src / 'report'}")
    if out.exists() and not out.is_dir():
        return f"--out {out}: a file, not a report directory; choose a new directory"
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        return (f"--out {out}: an existing directory that energybench.report did not write (no {MARKER} in it); "
                "it replaces only its own reports: choose a new or empty directory")
    return None


def write_report(paths: Sequence[str | Path], out: Path, html: bool = True,
                 factors: dict[str, float | None] | None = None) -> Path:
    """Write report.md (+ report.html) and figures/*.png to `out`, replacing it whole if it is a report this
    function wrote (MARKER); returns report.md. ValueError (nothing touched) for any other `out`."""
    why = out_problem(paths, out)
    if why is not None:
        raise ValueError(why)
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "figures").mkdir()
        blocks, _ = build(paths, tmp / "figures", factors=factors)
        (tmp / "report.md").write_text(markdown(blocks))
        if html:
            (tmp / "report.html").write_text(to_html(blocks, blocks[0].text))
        (tmp / MARKER).write_text("written by python -m energybench.report, which replaces this directory whole\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "report.md"
