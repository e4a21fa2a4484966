"""Measure the joint (prompt, reference) token-length histograms that dataset=synthetic draws from.

    python scripts/measure_lengths.py --datasets ../shared/datasets \
        --tokenizer ../shared/tokenizers/llama/tokenizer.model

Prompts are built exactly as dataset=alpaca / dataset=gsm8k build them (default templates, BOS
included); references are the dataset's answers. GSM8K is measured on the split that dataset=gsm8k
draws from by default (conf/dataset/gsm8k.yaml: train), so synthetic like=gsm8k follows what
dataset=gsm8k measures. Writes energybench/data/lengths.json.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import yaml

from energybench.config import DatasetConfig
from energybench.confload import conf_dir
from energybench.data import FIELDS, prompts_and_references
from energybench.data.records import read_records
from energybench.data.source import sha256_of
from energybench.model.tokenizer import Tokenizer

ALPACA_FILE = "alpaca/alpaca_data_5k.jsonl"


def default_gsm8k_split() -> str:
    """The split dataset=gsm8k uses unless told otherwise."""
    return yaml.safe_load((conf_dir() / "dataset" / "gsm8k.yaml").read_text())["split"]


def measure(name: str, path: Path, tokenizer: Tokenizer) -> dict:
    pairs = prompts_and_references(DatasetConfig(name=name), read_records(path, FIELDS[name]))
    counts = collections.Counter(
        (len(tokenizer.encode(p, bos=True)), len(tokenizer.encode(r, bos=False))) for p, r in pairs
    )
    prompts = np.repeat([k[0] for k in counts], list(counts.values()))
    refs = np.repeat([k[1] for k in counts], list(counts.values()))
    summary = {
        f"{what}_{stat}": int(fn(arr))
        for what, arr in (("prompt", prompts), ("reference", refs))
        for stat, fn in (("median", np.median), ("max", np.max))
    }
    print(f"{name}: {len(pairs)} records, {summary}")
    return {
        "source": f"{path.parent.name}/{path.name}",
        "sha256": sha256_of(path),
        "records": len(pairs),
        "tokenizer_sha256": sha256_of(tokenizer.path),
        **summary,
        "pairs": sorted([p, r, c] for (p, r), c in counts.items()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, required=True, help="folder with alpaca/ and gsm8k/")
    ap.add_argument("--tokenizer", type=Path, required=True, help="LLaMA tokenizer.model")
    ap.add_argument("--gsm8k-split", default=default_gsm8k_split(), choices=("train", "test"),
                    help="GSM8K split to measure (default: dataset=gsm8k's default, %(default)s)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "energybench/data/lengths.json")
    args = ap.parse_args()
    tokenizer = Tokenizer(args.tokenizer)
    files = {"alpaca": ALPACA_FILE, "gsm8k": f"gsm8k/{args.gsm8k_split}.jsonl"}
    tables = {name: measure(name, args.datasets / rel, tokenizer) for name, rel in files.items()}
    args.out.write_text(json.dumps(tables, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
