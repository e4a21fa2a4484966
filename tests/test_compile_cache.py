"""The persistent torch.compile cache: keyed folders, cold then warm in fresh processes, off, bad folders, and
the run.parquet columns a point records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from energybench.engine import compile_cache
from energybench.engine.compile_cache import CompileCacheError, folder_name, key_facts, root_for

REPO = Path(__file__).resolve().parents[1]
SHAPE = {"name": "tiny-test", "dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 1000}

# A fresh process that builds the tiny model, compiles the fast engine's decode layers (on CPU: compile=True,
# no CUDA graphs; argv[4] "gemv": fast_tuned's one-row layer through the Triton kernel, under Triton's interpreter,
# and its compiled prefill) inside compile_cache.use and generates a few tokens; prints the cache use as JSON.
CHILD = """
import json, sys, time
import torch
sys.path.insert(0, sys.argv[3])
from tiny import TINY, CPU, one_process, prompts_of
from energybench.engine import compile_cache
from energybench.engine.base import NoHooks
from energybench.engine.fast import FastEngine
from energybench.engine.sampling import Sampling
from energybench.model.build import build_model
facts = compile_cache.key_facts(json.loads(sys.argv[2]), CPU, torch.float32, 1)
with one_process(), compile_cache.use(sys.argv[1], facts) as cache:
    model = build_model(TINY, CPU, torch.float32, seed=1)
    model.setup_caches(2, 64)
    tuned = sys.argv[4] == "gemv"
    engine = FastEngine(model, Sampling(0.0, 1.0), torch.Generator().manual_seed(1), compile=True, graphs=False,
                        gemv=tuned, compile_prefill=tuned)
    engine.generate(prompts_of([5, 7], TINY.vocab_size, 1), [4, 4], NoHooks())
    engine.generate(prompts_of([6], TINY.vocab_size, 2), [4], NoHooks())  # batch 1: the one-row layer with gemv
    cache.measure()
    print(json.dumps({**cache.columns(), "directory": str(cache.directory)}))
"""


def run_child(setting: str, tmp_path: Path, shape: dict = SHAPE, gemv: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    if gemv:
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-c", CHILD, setting, json.dumps(shape), str(REPO / "tests"),
                           "gemv" if gemv else "plain"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_fresh_process_loads_what_the_first_compiled(tmp_path: Path) -> None:
    shared = tmp_path / "shared-cache"
    cold = run_child(str(shared), tmp_path)
    assert cold["compile_cache_misses"] > 0
    folder = Path(cold["compile_cache_dir"])
    assert folder.parent == shared and folder.name.startswith("tiny-test-s1-")
    key = json.loads((folder / "key.json").read_text())
    assert key["torch"] == torch.__version__ and key["model"] == SHAPE and key["shards"] == 1
    warm = run_child(str(shared), tmp_path)
    assert warm["compile_cache_dir"] == cold["compile_cache_dir"]
    assert warm["compile_cache_misses"] == 0 and warm["compile_cache_hits"] > 0
    other = run_child(str(shared), tmp_path, {**SHAPE, "dim": 128})  # another model: its own folder, cold
    assert other["compile_cache_misses"] > 0 and Path(other["compile_cache_dir"]).parent == shared
    assert other["compile_cache_dir"] != cold["compile_cache_dir"]


def test_fast_tuneds_layers_and_prefill_load_whole_from_the_cache_in_a_second_process(tmp_path: Path) -> None:
    """The one-row layer through the Triton kernel and the compiled prefill: a second process compiles nothing (the
    norm's eps was once a symbolic float that made Dynamo throw its first trace away, a miss on every warm start)."""
    shared = tmp_path / "shared-cache"
    cold = run_child(str(shared), tmp_path, gemv=True)
    assert cold["compile_cache_misses"] > 0
    warm = run_child(str(shared), tmp_path, gemv=True)
    assert warm["compile_cache_misses"] == 0 and warm["compile_cache_hits"] > 0


def test_off_keeps_nothing_and_auto_is_the_users_cache(tmp_path: Path) -> None:
    off = run_child("off", tmp_path)
    assert off["compile_cache_misses"] > 0 and off["compile_cache_dir"] is None
    assert not Path(off["directory"]).exists()  # its temporary folder went with it
    assert root_for("auto", {"XDG_CACHE_HOME": "/c"}) == Path("/c/energybench/compile")
    assert root_for("off") is None and root_for("OFF") is None and root_for("~/x") == Path.home() / "x"
    with pytest.raises(CompileCacheError, match="absolute folder"):
        root_for("relative/cache")


def test_every_fact_of_the_key_changes_the_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")

    def folder(shape: dict = SHAPE, dtype: torch.dtype = torch.float32, shards: int = 1) -> str:
        return folder_name(key_facts(shape, cpu, dtype, shards))

    base = folder()
    assert folder() == base  # the same facts, the same folder
    assert len({base, folder(dtype=torch.float16), folder(shards=2), folder({**SHAPE, "n_layers": 3})}) == 4
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert folder() != base  # another torch
    monkeypatch.undo()
    monkeypatch.setattr(compile_cache, "_source_digest", lambda: "0" * 64)
    assert folder() != base  # changed model or engine code
    monkeypatch.undo()
    monkeypatch.setattr(compile_cache.platform, "machine", lambda: "aarch64")
    assert folder() != base  # another machine (on GPU: the card's name and compute capability)
    facts = key_facts(SHAPE, cpu, torch.float32, 1)
    assert {"torch", "cuda", "triton", "device", "dtype", "shards", "model", "energybench_source"} <= set(facts)


def test_the_key_holds_what_shapes_compiled_code_not_where_weights_come_from() -> None:
    from tiny import TINY

    shape = compile_cache.model_shape(TINY)
    assert shape["dim"] == TINY.dim and "weights" not in shape and "path" not in shape and "tokenizer" not in shape


def test_the_environment_is_restored_and_an_engine_that_compiles_nothing_records_no_folder(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    with compile_cache.use(str(tmp_path / "c"), key_facts(SHAPE, torch.device("cpu"), torch.float32, 1)) as cache:
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache.directory)
        assert os.environ["TRITON_CACHE_DIR"] == str(cache.directory / "triton")
        cache.measure()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else" and "TRITON_CACHE_DIR" not in os.environ
    assert cache.columns() == {"compile_cache_dir": None, "compile_cache_hits": 0, "compile_cache_misses": 0}
    assert not cache.directory.exists()  # nothing compiled: no keyed folder, no key.json


def test_a_folder_that_cannot_be_written_is_one_line_naming_it_but_auto_goes_on(tmp_path: Path, monkeypatch,
                                                                                caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    facts = key_facts(SHAPE, torch.device("cpu"), torch.float32, 1)
    with pytest.raises(CompileCacheError, match=r"compile_cache=.*a-file.* is not a writable folder.*off"):
        with compile_cache.use(str(blocker / "cache"), facts):
            pass
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # auto under a home that cannot hold it
    with compile_cache.use("auto", facts) as cache:  # the point goes on, nothing kept, with a warning
        assert not cache.kept and cache.directory.is_dir()
    assert not cache.directory.exists() and "without a kept cache" in caplog.text


def test_an_engine_that_compiles_nothing_sets_up_and_checks_nothing(tmp_path: Path, monkeypatch) -> None:
    """compiles=False (the reference engine, or any on CPU): even a folder that could not be used is left alone."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    with compile_cache.use(str(blocker / "cache"), key_facts(SHAPE, torch.device("cpu"), torch.float32, 1),
                           compiles=False) as cache:
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else" and cache.directory is None
        cache.measure()
    assert cache.columns() == {"compile_cache_dir": None, "compile_cache_hits": 0, "compile_cache_misses": 0}


def test_a_point_records_its_engine_ready_time_and_cache_columns(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "experiment=quickstart", "samples=4",
                           "batch=4", "max_tokens=4", "meter.idle_s=0", f"out_dir={out}", "compile_cache=off"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import energybench.results as results

    row = results.load(out).iloc[0]
    assert 0 <= row["engine_ready_s"] <= row["load_s"]
    assert row["compile_cache_hits"] == 0 and row["compile_cache_misses"] == 0  # the reference engine: no compile
    assert pd.isna(row["decode_attention"])  # nor a choice of decode attention
    assert pd.isna(row["top_p_kernel"]) and pd.isna(row["pdl"])  # nor of draw or launch
    assert pd.isna(row["blas"]) and pd.isna(row["compile_prefill"])  # nor of BLAS library or prefill
    assert pd.isna(row["kv_together"]) and pd.isna(row["skinny"])  # nor of attention or matmul kernel
    assert pd.isna(row["defer_residual"])  # nor of where the residual adds are made
    assert pd.isna(row["compile_cache_dir"])
    for value, shown in (("", "compile_cache=''"), ("cache", "compile_cache='cache'")):
        bad = subprocess.run([sys.executable, "-m", "energybench.sweep", "experiment=quickstart",
                              f"compile_cache={value}", f"out_dir={tmp_path / 'bad'}"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
        assert bad.returncode != 0 and shown in bad.stderr and "absolute folder" in bad.stderr
        assert not (tmp_path / "bad").exists()
