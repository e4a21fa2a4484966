"""torch.compile's imports on a thread while the model's weights load.

The first `torch.compile` of a process imports inductor (lowerings, decompositions, code templates, Triton):
measured 2.8-3.5 s on an H200 host (`setup_s` in docs/benchmarks/engine-profile-before.json, 7B), every point
again, since under Slurm each point is its own process. Loading the weights is mostly copies and kernels that
run without the interpreter lock, so a point that will compile starts these imports first (`start`) and its
engine waits for them (`wait`) before compiling: the same imports, hidden behind the load.

After the imports the thread computes the compile caches' source keys (`KEYS`: hashes of torch's and Triton's files,
which every cache lookup of a process needs once; 0.4 s of a warm 7B build on an H200 host profiled): functions of
files alone, cached by torch, so the engine's first lookup finds them ready. Nothing that touches the GPU runs there.

Nothing else in the process may import inductor between `start` and `wait` (two threads importing one
package's circular modules can see each other's half-initialized modules), so callers start it right before
loading the weights, after the compile cache's folder is set up, and the engine waits first thing.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time

log = logging.getLogger("energybench.engine")

MODULES = ("torch._dynamo", "torch._inductor.compile_fx", "torch._inductor.codecache",
           "torch._inductor.codegen.triton")
# (module, function) of the cached source keys computed after the imports; one that a torch version lacks is skipped
KEYS = (("torch._inductor.codecache", "torch_key"), ("torch._inductor.codecache", "triton_key"),
        ("triton.runtime.cache", "triton_key"))
_thread: threading.Thread | None = None


def start() -> None:
    """Begin importing MODULES on a daemon thread (once per process; a later call does nothing)."""
    global _thread
    if _thread is not None:
        return
    _thread = threading.Thread(target=_import_all, name="energybench-compiler-imports", daemon=True)
    _thread.start()


def wait() -> float:
    """Wait for the imports `start` began (nothing if it was not called); returns the seconds waited."""
    if _thread is None:
        return 0.0
    t0 = time.perf_counter()
    _thread.join()
    return time.perf_counter() - t0


def _import_all() -> None:
    t0 = time.perf_counter()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 (the engine imports it again and raises there, in its own thread)
            log.debug("compiler imports: %s: %s", name, e)
            return
    log.debug("compiler imports done in %.1f s", time.perf_counter() - t0)
    for module, function in KEYS:
        key = getattr(sys.modules.get(module), function, None)
        if key is None:
            continue
        try:
            key()
        except Exception as e:  # noqa: BLE001 (the compiler computes it again where it needs it, and raises there)
            log.debug("compiler keys: %s.%s: %s", module, function, e)
    log.debug("compiler imports and keys done in %.1f s", time.perf_counter() - t0)
