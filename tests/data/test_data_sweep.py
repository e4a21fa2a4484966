"""End to end on CPU with the real datasets: the sweep records its workload; length=oracle follows the references."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

import energybench.results as results
from energybench.config import DatasetConfig
from energybench.data import load_workload

REPO = Path(__file__).resolve().parents[2]


def sweep(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "no_proxy": "127.0.0.1,localhost", **environ}
    return subprocess.run([sys.executable, "-m", "energybench.sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_gsm8k_sweep_records_the_file_it_read(tmp_path: Path, shared_datasets: Path,
                                              llama_tokenizer_path: Path) -> None:
    out = tmp_path / "out"
    proc = sweep(tmp_path, "experiment=quickstart", "dataset=gsm8k", f"model.tokenizer={llama_tokenizer_path}",
                 "samples=8", "max_tokens=8", f"out_dir={out}", ENERGYBENCH_DATA_DIR=str(shared_datasets))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    row = results.load(out).iloc[0]
    train = shared_datasets / "gsm8k" / "train.jsonl"  # the default split
    assert row["dataset"] == "gsm8k" and row["status"] == "done"
    assert row["dataset_source"] == f"{train} sha256:{hashlib.sha256(train.read_bytes()).hexdigest()}"
    assert row["tokens"] == 8 * 8
    assert not (tmp_path / "cache").exists()  # found in the data dir: nothing downloaded


def test_oracle_lengths_follow_the_downloaded_references(tmp_path: Path, shared_datasets: Path,
                                                         llama_tokenizer_path: Path, http_server) -> None:
    shutil.copy(shared_datasets / "gsm8k" / "test.jsonl", http_server.root / "test.jsonl")
    url = f"{http_server.url}/test.jsonl"
    sha = hashlib.sha256((http_server.root / "test.jsonl").read_bytes()).hexdigest()
    out, max_tokens = tmp_path / "out", 128  # GSM8K answers run 88/118/160 tokens (quartiles, train): a mix
    proc = sweep(tmp_path, "experiment=quickstart", "dataset=gsm8k", "dataset.split=test", f"dataset.url={url}",
                 f"dataset.sha256={sha}", f"model.tokenizer={llama_tokenizer_path}", "samples=8", "batch=4",
                 f"max_tokens={max_tokens}", "length=oracle", "warmup_batches=0", f"out_dir={out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    row = results.load(out).iloc[0]
    assert row["dataset_source"] == f"{url} sha256:{sha}"
    assert http_server.requests == ["/test.jsonl"]

    from energybench.model.tokenizer import Tokenizer

    workload = load_workload(DatasetConfig(name="gsm8k", path=str(http_server.root / "test.jsonl")), 8, 1, 32000,
                             Tokenizer(llama_tokenizer_path))  # the point's seed is 1
    limits = [min(s.reference_tokens, max_tokens) for s in workload.samples]
    assert min(limits) < max_tokens  # the references, not the cap, set some lengths
    batches = pq.read_table(results.point_dirs(out)[0] / "batches.parquet").to_pandas().sort_values("batch_index")
    assert len(batches) == 2
    for (_, b), group in zip(batches.iterrows(), (limits[:4], limits[4:])):
        if b["eos_stops"] == 0:  # a random model may sample EOS early; then fewer tokens count
            assert b["tokens"] == sum(group)
        else:
            assert b["tokens"] < sum(group)
    assert row["tokens"] == batches["tokens"].sum() < 8 * max_tokens
