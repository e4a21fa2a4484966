"""Former home of the local launcher; kept so `from energybench.launch import run_local` still works."""

from energybench.dispatch.local import run_local, run_ranks  # noqa: F401
