"""The top-p kernel (engine/top_p_kernel.py, sampling.sample(kernel=True)) under Triton's interpreter on the CPU:
the nucleus it keeps is the sort's, and its draws follow the renormalized nucleus. The fast engine's use of it."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernel needs the triton package (the [test] extra installs it)")

from energybench.engine import NoHooks, Sampling  # noqa: E402
from energybench.engine import sampling as sp  # noqa: E402
from energybench.engine.base import EOS_ID  # noqa: E402
from energybench.engine.fast import FastEngine  # noqa: E402
from tiny import CPU, TINY, cpu_model, prompts_of  # noqa: E402

interpret = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                               reason="Triton's interpreter is off (a GPU host: test_engine_gpu.py runs the kernel)")


def launch(logits: torch.Tensor, noise: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    from energybench.engine import top_p_kernel

    out = torch.empty(logits.shape[0], dtype=torch.long)
    top_p_kernel.launch(logits, noise, out, temperature, top_p)
    return out


@pytest.mark.parametrize("vocab,scale,top_p", [(32000, 1.0, 0.95), (32000, 4.0, 0.5), (1000, 3.0, 0.95),
                                               (37, 0.5, 0.7), (513, 2.0, 0.0)])
@interpret
def test_the_kernel_keeps_the_sorts_nucleus_at_its_edge(vocab: int, scale: float, top_p: float) -> None:
    """Per row, noise that makes one token win if it is kept: the least likely token of the sort's nucleus is drawn,
    the most likely one outside it is not (rows whose edge sits within 1e-6 of top_p, float rounding, are left out)."""
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(8, vocab, generator=gen) * scale
    probs = torch.softmax(logits / 0.8, dim=-1)
    keep = sp.nucleus(probs, top_p)
    sorted_probs = probs.sort(dim=-1, descending=True).values
    before = sorted_probs.cumsum(-1) - sorted_probs
    checked = 0
    for row in range(8):
        n_kept = int(keep[row].sum())
        inner_gap = top_p - before[row, n_kept - 1] if n_kept > 1 else 1.0  # the top token is always kept
        if n_kept == vocab or min(before[row, n_kept] - top_p, inner_gap) < 1e-6:
            continue
        inside = torch.where(keep[row], probs[row], 2.0).argmin()  # the least likely kept
        outside = torch.where(keep[row], -1.0, probs[row]).argmax()  # the most likely left out
        for token, drawn in ((inside, True), (outside, False)):
            noise = torch.ones(1, vocab)
            noise[0, token] = 1e-30  # its score e / noise beats every other
            got = launch(logits[row:row + 1], noise, 0.8, top_p)
            assert (got.item() == token.item()) == drawn, (row, token.item(), drawn)
        checked += 1
    assert checked >= 6


@interpret
def test_the_kernel_draws_what_the_sorted_nucleus_and_the_same_noise_draw() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 32000, generator=gen) * 2
    for top_p in (0.95, 0.3, 1.0):
        noise = torch.empty(16, 32000).exponential_(generator=gen)
        probs = torch.softmax(logits / 0.8, dim=-1)
        want = torch.where(sp.nucleus(probs, top_p), probs / noise, -1.0).argmax(-1)
        assert torch.equal(launch(logits, noise, 0.8, top_p), want), top_p


def test_the_exponential_race_over_the_nucleus_draws_its_renormalized_probabilities() -> None:
    """What the kernel computes (the test above: the same token as argmax over the nucleus of p / E for the same
    noise E ~ Exp(1)), drawn 200,000 times for six tokens whose nucleus at 0.8 is the top four, against their
    renormalized probabilities; the sort's draws beside it."""
    probs = torch.tensor([0.35, 0.25, 0.15, 0.1, 0.09, 0.06]).expand(200000, 6)
    gen = torch.Generator().manual_seed(5)
    keep = sp.nucleus(probs, 0.8)
    raced = torch.where(keep, probs / torch.empty(probs.shape).exponential_(generator=gen), -1.0).argmax(-1)
    sorted_draws = sp.sample_top_p(probs.clone(), 0.8, gen)
    want = torch.tensor([0.35, 0.25, 0.15, 0.1, 0.0, 0.0]) / 0.85
    for drawn in (raced, sorted_draws):
        freq = torch.bincount(drawn, minlength=6).double() / drawn.numel()
        assert freq[4:].sum() == 0 and (freq - want).abs().max() < 0.005, freq


@interpret
def test_kernel_draws_stay_in_the_nucleus_and_spread_over_it() -> None:
    probs = torch.tensor([0.35, 0.25, 0.15, 0.1, 0.09, 0.06])
    logits = (probs.log() * 0.8).expand(300, 6).contiguous()  # softmax(logits / 0.8) = probs
    drawn = sp.sample(logits, Sampling(temperature=0.8, top_p=0.8), torch.Generator().manual_seed(5), kernel=True)
    assert set(drawn.tolist()) == {0, 1, 2, 3}


@interpret
def test_kernel_draws_are_reproducible_by_seed_and_greedy_stays_argmax() -> None:
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(1))
    paper = Sampling(temperature=0.8, top_p=0.95)

    def draw(seed: int, sampling: Sampling = paper) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.stack([sp.sample(logits, sampling, gen, kernel=True) for _ in range(5)])

    assert torch.equal(draw(2), draw(2)) and not torch.equal(draw(2), draw(3))
    greedy = Sampling(temperature=0.0, top_p=0.95)
    assert torch.equal(sp.sample(logits, greedy, torch.Generator(), kernel=True), logits.argmax(-1))


def test_where_the_kernel_runs(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert sp.kernel_usable(CPU, 32000)
    assert not sp.kernel_usable(CPU, sp.MAX_KERNEL_VOCAB + 1)  # a row must fit one program
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not sp.kernel_usable(CPU, 32000)


@pytest.fixture
def model():
    with cpu_model() as m:
        yield m


@interpret
def test_the_fast_engine_draws_through_the_kernel_where_asked(model) -> None:
    paper = Sampling(temperature=0.8, top_p=0.95)
    prompts = prompts_of([3, 12, 7], TINY.vocab_size, seed=4)

    def outputs(seed: int, kernel: bool) -> list[list[int]]:
        engine = FastEngine(model, paper, torch.Generator().manual_seed(seed), top_p_kernel=kernel)
        assert engine.top_p_kernel == kernel
        stats = engine.generate(prompts, [6, 9, 4], NoHooks())
        engine.close()
        return stats.outputs

    assert FastEngine(model, paper, torch.Generator()).top_p_kernel is False  # a CPU: the sort, by default
    a, b = outputs(1, True), outputs(1, True)
    assert a == b and all(len(x) == n or x[-1] == EOS_ID for x, n in zip(a, [6, 9, 4]))
    assert a != outputs(2, True)
    assert all(0 <= t < TINY.vocab_size for x in a for t in x)


def test_asking_for_the_kernel_where_it_cannot_run_is_refused(model, monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError,
                       match=r"top_p_kernel=True needs Triton.*this is cpu with 1000: use top_p_kernel=False"):
        FastEngine(model, Sampling(temperature=0.8, top_p=0.95), torch.Generator(), top_p_kernel=True)
