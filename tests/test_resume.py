"""A re-run of a point (resume=false, or a requeued job) restarts it from scratch and marks the attempt."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from energybench.point import run_point
from energybench.results.layout import point_dir
from energybench.results.store import read_status


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine, OpenMP's spinning threads slow a tiny model tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rerun_keeps_earlier_batches_marked_and_replaces_the_run_row(quick, one_thread) -> None:
    cfg = quick("resume=false")
    pdir = point_dir(cfg)
    assert run_point(cfg).state == "done"
    first = pq.read_table(pdir / "run.parquet").to_pylist()[0]
    assert run_point(cfg).state == "done"
    second = pq.read_table(pdir / "run.parquet").to_pylist()[0]
    assert (first["attempt"], second["attempt"], read_status(pdir)["attempt"]) == (1, 2, 2)
    batches = pq.read_table(pdir / "batches.parquet").to_pandas()
    per_attempt = batches.groupby("attempt")["batch_index"].count().to_dict()
    assert per_attempt == {1: 3, 2: 3}  # 8 prompts in batches of 4, plus one warm-up, each time
    measured = batches[(batches["attempt"] == 2) & ~batches["warmup"]]
    assert measured["tokens"].sum() == second["tokens"] == 8 * 8  # metrics from the last attempt only
