"""docs/extending.md "Add an engine", done from outside the package: a module in a tmp folder defines and
registers an engine, $ENERGYBENCH_PLUGINS names it, then a CPU sweep runs with engine=<its name>."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import energybench.results as results
from energybench.config import ConfigError
from energybench.confload import compose
from energybench.engine import NoHooks, Sampling, make_engine, registry
from energybench.model.build import build_model
from tiny import CPU, TINY, one_process, prompts_of

REPO = Path(__file__).resolve().parents[1]

# The recipe's module: an engine that recomputes every sequence from its first token at every step (no reuse
# of earlier keys and values), one sequence at a time. Slow, but the same function as the reference engine.
PLUGIN = '''
"""A site engine: full recomputation, one sequence at a time."""
import time

import torch

from energybench.engine import register_engine
from energybench.engine.base import EOS_ID, BatchStats
from energybench.engine.sampling import sample


class RecomputeEngine:
    def __init__(self, model, sampling, generator):
        self.model, self.sampling, self.generator = model, sampling, generator
        self.device = model.output.weight.device

    def close(self):
        pass

    @torch.inference_mode()
    def generate(self, prompts, limits, hooks):
        out, times = [[] for _ in prompts], []
        hooks.phase_start("prefill")
        t = time.perf_counter()
        for step in range(max(limits)):
            if step == 1:
                hooks.phase_end("prefill")
                hooks.phase_start("decode")
            for ids, limit, new in zip(prompts, limits, out):
                if len(new) == limit or (new and new[-1] == EOS_ID):
                    continue
                n = len(ids) + len(new)
                mask = torch.full((1, 1, n, n), float("-inf"), device=self.device).triu(1)
                logits = self.model(torch.tensor([ids + new], device=self.device),
                                    torch.arange(n, device=self.device)[None], n_slots=n, mask=mask)
                new.append(int(sample(logits, self.sampling, self.generator)[0]))
            times.append(time.perf_counter() - t)
            t += times[-1]
        if max(limits) == 1:
            hooks.phase_end("prefill")
            hooks.phase_start("decode")
        hooks.phase_end("decode")
        lens = [len(p) for p in prompts]
        return BatchStats(responses=len(prompts), prompt_tokens=sum(lens), max_prompt_tokens=max(lens),
                          tokens=sum(map(len, out)), wasted_tokens=0, steps=len(times), prefill_steps=1,
                          prefill_s=times[0], decode_s=sum(times[1:]), step_times_s=times,
                          eos_stops=sum(o[-1] == EOS_ID for o in out), outputs=out)


register_engine("recompute", RecomputeEngine)
'''


def plugin(tmp_path: Path) -> dict[str, str]:
    """The recipe: <site>/site_engines.py, named by $ENERGYBENCH_PLUGINS, its folder on PYTHONPATH."""
    (tmp_path / "site_engines.py").write_text(PLUGIN)
    return {"ENERGYBENCH_PLUGINS": "site_engines", "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}


def sweep(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **environ}
    return subprocess.run([sys.executable, "-m", "energybench.sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_site_engine_runs_a_sweep(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = sweep(tmp_path, "experiment=quickstart", "engine=recompute", "samples=8", "batch=4", "max_tokens=6",
                 f"out_dir={out}", **plugin(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    row = results.load(out).iloc[0]
    assert row["engine"] == "recompute" and row["status"] == "done"
    assert "-recompute-" in row["point_id"]
    assert 0 < row["tokens"] <= 8 * 6


def test_the_site_engine_computes_what_the_reference_engine_does(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ENERGYBENCH_PLUGINS", env["ENERGYBENCH_PLUGINS"])
    monkeypatch.setattr(registry, "_ENGINES", dict(registry._ENGINES))  # this process forgets it afterwards
    monkeypatch.delitem(sys.modules, "site_engines", raising=False)
    monkeypatch.setattr(importlib.import_module("energybench.plugins"), "_loaded", set())
    assert "recompute" in registry.engine_names() and "recompute" not in registry.online_engine_names()
    greedy = Sampling(0.0, 0.95)
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=0)
        model.setup_caches(4, 64)
        prompts, limits = prompts_of([5, 9, 3, 7], TINY.vocab_size, seed=0), [6, 6, 6, 6]
        ours = make_engine("recompute", model, greedy, torch.Generator().manual_seed(0))
        theirs = make_engine("reference", model, greedy, torch.Generator().manual_seed(0))
        assert ours.generate(prompts, limits, NoHooks()).outputs == theirs.generate(prompts, limits, NoHooks()).outputs


def test_an_unregistered_engine_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^engine='recompute': must be one of reference, fast, fast_tuned$"):
        compose(["experiment=quickstart", "engine=recompute"])
    proc = sweep(tmp_path, "experiment=quickstart", "engine=recompute", "workload=online", "online.rate=4",
                 f"out_dir={tmp_path / 'out'}", **plugin(tmp_path))
    assert proc.returncode != 0 and "engine=recompute cannot run workload=online" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_a_plugin_module_that_cannot_be_imported_is_a_one_line_error(tmp_path: Path) -> None:
    proc = sweep(tmp_path, "experiment=quickstart", f"out_dir={tmp_path / 'out'}",
                 ENERGYBENCH_PLUGINS="no_such_site_module")
    assert proc.returncode != 0
    assert "ENERGYBENCH_PLUGINS=no_such_site_module: cannot import no_such_site_module" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_a_plugin_module_that_raises_while_registering_is_a_plugin_error_and_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from energybench.plugins import PluginError, load_plugins

    (tmp_path / "eb_broken_plugin.py").write_text("raise RuntimeError('no licence file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {"ENERGYBENCH_PLUGINS": "eb_broken_plugin"}
    for _ in range(2):  # not remembered as loaded: the second call raises too, rather than skipping it
        with pytest.raises(PluginError, match="cannot import eb_broken_plugin .RuntimeError: no licence file"):
            load_plugins(env)
