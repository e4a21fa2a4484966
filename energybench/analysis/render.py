"""A report as a list of blocks (headings, text, tables, images), rendered to Markdown and to HTML."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "table" | "img"
    text: str = ""  # heading or paragraph text; image caption
    frame: pd.DataFrame | None = None  # for "table"
    path: str = ""  # for "img": path relative to the report


def cell(value: object) -> str:
    """A table cell: 4 significant digits for floats, '-' for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def _rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    flat = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    return [str(c) for c in flat.columns], [[cell(v) for v in row] for row in flat.itertuples(index=False)]


def markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path})")
        elif b.kind == "table" and b.frame is not None:
            head, rows = _rows(b.frame)
            esc = [[c.replace("|", "\\|").replace("\n", " ") for c in r] for r in [head, *rows]]
            out.append("\n".join(["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(head)]
                                 + ["| " + " | ".join(r) + " |" for r in esc[1:]]))
        out.append("")
    return "\n".join(out)


_STYLE = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
          "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}"
          "img{max-width:100%}p{line-height:1.4}")


def to_html(blocks: list[Block], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{html.escape(b.text).replace('`', '')}</p>")
        elif b.kind == "img":
            out.append(f"<figure><img src='{html.escape(b.path)}' alt='{html.escape(b.text)}'></figure>")
        elif b.kind == "table" and b.frame is not None:
            head, rows = _rows(b.frame)
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table>")
    out.append("</body></html>")
    return "\n".join(out)
