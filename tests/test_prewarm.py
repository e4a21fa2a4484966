"""The compiler's imports on a thread while the weights load (engine/prewarm.py)."""

from __future__ import annotations

import subprocess
import sys

from energybench.engine import registry
from energybench.engine.registry import engine_entry, register_engine


def test_the_imports_run_on_a_thread_and_the_wait_returns_once_they_are_done() -> None:
    code = """
import sys, threading
from energybench.engine import prewarm
assert "torch._inductor.compile_fx" not in sys.modules
assert prewarm.wait() == 0.0                     # nothing started: nothing to wait for
prewarm.start(); prewarm.start()                 # once per process
assert [t.name for t in threading.enumerate()].count("energybench-compiler-imports") <= 1
waited = prewarm.wait()
assert all(m in sys.modules for m in prewarm.MODULES), [m for m in prewarm.MODULES if m not in sys.modules]
assert waited >= 0.0 and prewarm.wait() < 0.1    # joined: a second wait returns at once
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_after_the_imports_the_thread_computes_the_cache_keys_and_a_failing_one_does_not_stop_it() -> None:
    code = """
import threading
import torch._inductor.codecache as codecache
from energybench.engine import prewarm
called = []
def key(name, fail=False):
    def f():
        called.append((name, threading.current_thread().name))
        if fail:
            raise RuntimeError(name)
    return f
codecache.torch_key, codecache.triton_key = key("torch", fail=True), key("triton")
prewarm.start()
prewarm.wait()
assert [n for n, _ in called][:2] == ["torch", "triton"], called
assert {t for _, t in called} == {"energybench-compiler-imports"}, called
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_engines_that_compile_say_so(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_ENGINES", dict(registry._ENGINES))  # the registration below stays here
    assert engine_entry("fast").compiles and engine_entry("fast_tuned").compiles
    assert not engine_entry("reference").compiles
    register_engine("site_compiled_test", "energybench.engine.fast:FastEngine", compiles=True)
    assert engine_entry("site_compiled_test").compiles
