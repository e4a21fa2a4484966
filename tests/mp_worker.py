"""One rank of the model-parallel tests (run by test_model_parallel.py with RANK/WORLD_SIZE set).

    python tests/mp_worker.py <out_dir> <meta_checkpoint_dir>

Rank 0 saves <out_dir>/world<N>.pt: logits of the random-weight model, of the Meta checkpoint, the greedy
tokens of the engines (fast_tuned's batch-1 steps through model/gemv.py's kernel where Triton's interpreter is on,
its row-parallel products summed over the ranks with the residual added by rank 0), and whether it used the kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from energybench.distributed import DistEnv, model_parallel  # noqa: E402
from energybench.engine import NoHooks, Sampling, make_engine  # noqa: E402
from energybench.model.build import build_model  # noqa: E402
from tiny import CPU, TINY, prompts_of, tiny  # noqa: E402

LENGTHS = [5, 11, 2, 8]
LIMITS = [6, 3, 9, 1]


def full_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    bsz, seqlen = tokens.shape
    positions = torch.arange(seqlen).expand(bsz, seqlen)
    mask = torch.full((1, 1, seqlen, seqlen), float("-inf")).triu_(1)
    return model(tokens, positions, n_slots=seqlen, mask=mask, last_only=False)


def main(out_dir: Path, checkpoint: Path, env: DistEnv) -> None:
    tokens = torch.tensor(prompts_of([10, 10, 10], TINY.vocab_size, seed=2))
    prompts = prompts_of(LENGTHS, TINY.vocab_size, seed=3)
    with model_parallel(env, CPU):
        model = build_model(TINY, CPU, torch.float32, seed=5)
        model.setup_caches(4, 32)
        random_logits = full_logits(model, tokens)
        outputs = {}
        tuned_gemv = False
        for name in ("reference", "fast", "fast_tuned"):
            engine = make_engine(name, model, Sampling(0.0, 0.95), torch.Generator().manual_seed(0))
            stats = engine.generate(prompts, LIMITS, NoHooks())
            tuned_gemv = tuned_gemv or bool(getattr(engine, "gemv", False))
            engine.close()
            outputs[name] = stats.outputs
        loaded = build_model(tiny(weights="meta", path=str(checkpoint)), CPU, torch.float32, seed=0)
        loaded.setup_caches(3, 10)
        meta_logits = full_logits(loaded, tokens)
    if env.rank == 0:
        torch.save({"random": random_logits, "meta": meta_logits, "outputs": outputs, "tuned_gemv": tuned_gemv},
                   out_dir / f"world{env.world_size}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), Path(sys.argv[2]), DistEnv.from_environ())
