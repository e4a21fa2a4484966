"""Generation: KV-cache decoding, sampling rules, and the reference and fast engines against each other."""

from __future__ import annotations

import pytest
import torch

from energybench.engine import NoHooks, Sampling, make_engine
from energybench.engine.base import EOS_ID
from energybench.engine.sampling import sample
from energybench.model.build import build_model
from tiny import CPU, TINY, cpu_model, one_process, prompts_of

GREEDY = Sampling(temperature=0.0, top_p=0.95)
PAPER = Sampling(temperature=0.8, top_p=0.95)


@pytest.fixture
def model():
    with cpu_model() as m:
        yield m


def causal(width: int) -> torch.Tensor:
    return torch.full((1, 1, width, width), float("-inf")).triu_(1)


@pytest.mark.parametrize("fused", [False, True])
def test_kv_cache_decoding_equals_full_recomputation(model, fused: bool) -> None:
    tokens = torch.tensor(prompts_of([20, 20], TINY.vocab_size, seed=1))
    positions = torch.arange(20).expand(2, 20)
    full = model(tokens, positions, n_slots=20, mask=causal(20), last_only=False)  # [2, 20, V]
    prefill = 6
    variant = model.variant(fused=fused)
    variant(tokens[:, :prefill], positions[:, :prefill], n_slots=prefill, mask=causal(prefill))
    for cur in range(prefill, 20):  # one position at a time through the cache
        step = variant(tokens[:, cur : cur + 1], positions[:, cur : cur + 1], n_slots=cur + 1)
        assert (step - full[:, cur]).abs().max().item() <= 1e-5, cur


def test_defer_residual_hands_each_layers_last_residual_add_to_the_next(model) -> None:
    """A layer given `pending` (the layer before's feed-forward output, not yet added) returns (h, its own) whose sum
    is the plain layer's output for x + pending; the fused variant with defer_residual hands every layer one (zeros to
    the first), so compiled layers add it in their first kernel, to the same logits; without it (the `fast` engine)
    and in Meta's arithmetic the layers are called as before."""
    x, pending = torch.randn(2, 2, 3, TINY.dim, generator=torch.Generator().manual_seed(5)).unbind(0)
    positions = torch.arange(3).expand(2, 3)
    freqs, layer = model.freqs_real[positions], model.layers[0]
    with torch.inference_mode():
        h, out = layer(x, positions, 3, freqs, causal(3), True, pending=pending)
        assert torch.equal(h + out, layer(x + pending, positions, 3, freqs, causal(3), True))
    tokens = torch.tensor(prompts_of([3, 3], TINY.vocab_size, seed=4))
    logits = {}
    for fused, defer in ((True, True), (True, False), (False, False)):
        seen: list[torch.Tensor | None] = []
        hooks = [lay.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs.get("pending")),
                                               with_kwargs=True) for lay in model.layers]
        logits[fused, defer] = model.variant(fused=fused, defer_residual=defer)(tokens, positions, n_slots=3,
                                                                               mask=causal(3), last_only=False)
        for hook in hooks:
            hook.remove()
        assert len(seen) == TINY.n_layers
        if defer:
            assert not seen[0].any() and all(p is not None and p.shape == (2, 3, TINY.dim) for p in seen)
        else:
            assert seen == [None] * TINY.n_layers
    assert (logits[True, True] - logits[True, False]).abs().max().item() <= 1e-5
    with pytest.raises(AssertionError, match="choices of the fused variant"):
        model.variant(fused=False, defer_residual=True)


def test_a_fast_engine_with_defer_residual_gives_the_reference_tokens() -> None:
    """FastEngine(defer_residual=True): prefill and decode through layers that hand their last residual add on, to
    the reference's greedy tokens; `fast` (the default) leaves every layer as it was."""
    from energybench.engine.fast import FastEngine

    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=7)
        model.setup_caches(4, 64)
        prompts, limits = prompts_of([5, 9, 3], TINY.vocab_size, seed=4), [4, 12, 7]
        expected = make_engine("reference", model, GREEDY, torch.Generator().manual_seed(0)).generate(
            prompts, limits, NoHooks()).outputs
        engine = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), defer_residual=True)
        assert engine.defer_residual and engine.decoder.defer_residual and engine.prefiller.defer_residual
        assert engine.generate(prompts, limits, NoHooks()).outputs == expected
        plain = make_engine("fast", model, GREEDY, torch.Generator().manual_seed(0))
        assert not (plain.defer_residual or plain.decoder.defer_residual or plain.prefiller.defer_residual)


def test_decode_with_per_row_lengths_equals_full_recomputation(model) -> None:
    """kv_lens: each row attends to its own slots [0, pos] (rows at different positions in one step), the
    decode path of attention=lens; the same logits as recomputing every sequence whole."""
    tokens = torch.tensor(prompts_of([20, 20, 20], TINY.vocab_size, seed=1))
    positions = torch.arange(20).expand(3, 20)
    full = model(tokens, positions, n_slots=20, mask=causal(20), last_only=False)  # [3, 20, V]
    fused = model.variant(fused=True)
    starts = [4, 9, 13]  # each row is prefilled to its own length, alone in its cache row
    for row, n in enumerate(starts):
        fused(tokens[row : row + 1, :n], positions[row : row + 1, :n], n_slots=n, mask=causal(n),
              rows=torch.tensor([row]))
    pos = torch.tensor(starts)
    while int(pos.max()) < 20:
        step_pos = pos.clamp(max=19)
        logits = fused(tokens[torch.arange(3), step_pos].view(3, 1), step_pos.view(3, 1), n_slots=20,
                       kv_lens=(step_pos + 1).to(torch.int32))
        for row in range(3):
            if pos[row] < 20:
                assert (logits[row] - full[row, pos[row]]).abs().max().item() <= 1e-5, (row, int(pos[row]))
        pos += 1


def test_top_p_never_samples_outside_the_nucleus() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=gen)
    sampling = Sampling(temperature=0.8, top_p=0.6)
    probs, order = torch.softmax(logits / 0.8, dim=-1).sort(dim=-1, descending=True)
    before = probs.cumsum(-1) - probs  # mass strictly before each token
    nucleus = [set(order[r, before[r] <= 0.6].tolist()) for r in range(3)]
    drawn = torch.stack([sample(logits, sampling, gen) for _ in range(500)])  # [500, 3]
    for r in range(3):
        seen = set(drawn[:, r].tolist())
        assert seen <= nucleus[r], seen - nucleus[r]
        assert len(seen) > 1  # a real distribution, not argmax


def test_temperature_zero_is_argmax() -> None:
    logits = torch.randn(5, 100, generator=torch.Generator().manual_seed(1))
    got = sample(logits, Sampling(temperature=0.0, top_p=0.95), torch.Generator().manual_seed(2))
    assert torch.equal(got, logits.argmax(-1))


LENGTHS, LIMITS = [3, 12, 7, 1, 9], [5, 20, 3, 9, 1]


def run(model, name: str, sampling: Sampling, seed: int = 0):
    engine = make_engine(name, model, sampling, torch.Generator().manual_seed(seed))
    stats = engine.generate(prompts_of(LENGTHS, TINY.vocab_size, seed=4), LIMITS, NoHooks())
    engine.close()
    return stats


def test_reference_and_fast_give_identical_greedy_tokens(model) -> None:
    ref, fast = run(model, "reference", GREEDY), run(model, "fast", GREEDY)
    assert [len(o) for o in ref.outputs] == LIMITS  # no EOS among these: every response runs to its limit
    assert fast.outputs == ref.outputs
    assert ref.tokens == fast.tokens == sum(LIMITS)
    # the reference runs every row from the shortest prompt to the longest prompt + limit
    assert ref.steps == max(n + lim for n, lim in zip(LENGTHS, LIMITS)) - min(LENGTHS)
    assert ref.wasted_tokens == sum(max(n + lim for n, lim in zip(LENGTHS, LIMITS)) - n for n in LENGTHS) - ref.tokens
    # the fast engine stops rows as they finish: one prefill, then steps until the longest limit
    assert fast.steps == max(LIMITS) and fast.prefill_steps == 1
    assert fast.wasted_tokens < ref.wasted_tokens


@pytest.mark.parametrize("attention", ["lens", "mask"])
def test_both_decode_attentions_give_the_reference_tokens(model, attention: str) -> None:
    """attention=lens (each row reads its own length) and =mask (one span for all rows) are the same function."""
    from energybench.engine.fast import FastEngine

    model.setup_caches(8, 200)  # spans of 64, 128, 192 and 256 slots for attention=mask
    ref = run(model, "reference", GREEDY)
    engine = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), attention=attention)
    assert engine.attention == attention
    assert engine.spans == ([256] if attention == "lens" else [64, 128, 192, 256])
    assert engine.generate(prompts_of(LENGTHS, TINY.vocab_size, seed=4), LIMITS, NoHooks()).outputs == ref.outputs


def test_an_unknown_decode_attention_is_refused_by_name(model) -> None:
    from energybench.engine.fast import FastEngine

    with pytest.raises(ValueError, match="attention='paged': use one of lens, mask"):
        FastEngine(model, GREEDY, torch.Generator().manual_seed(0), attention="paged")


def test_the_default_decode_attention_is_lens_where_the_triton_kernel_runs(monkeypatch) -> None:
    """attention=None: each row's own length on a GPU whose card, dtype and head size the split kernel takes, the
    masked span elsewhere (a CPU; a card without it). attention=lens on a GPU takes either kernel, and neither is a
    one-line error naming the card and the fix."""
    from energybench.engine import fast

    gpu = torch.device("cuda", 0)
    assert fast.attention_mode(None, CPU, torch.float32, 128) == "mask"
    monkeypatch.setattr(fast, "split_usable", lambda device, dtype, head_dim: head_dim == 128)
    monkeypatch.setattr(fast, "flash_usable", lambda device, dtype: False)
    assert fast.attention_mode(None, gpu, torch.float16, 128) == "lens"
    assert fast.attention_mode(None, gpu, torch.float16, 100) == "mask"  # a head size the kernel does not take
    assert fast.attention_mode("mask", gpu, torch.float16, 128) == "mask"
    monkeypatch.setattr(fast.torch.cuda, "get_device_name", lambda device: "Tesla V100")
    with pytest.raises(ValueError, match="attention=lens needs Triton or FlashAttention-2.*Tesla V100.*attention=mask"):
        fast.attention_mode("lens", gpu, torch.float16, 100)
    monkeypatch.setattr(fast, "flash_usable", lambda device, dtype: True)  # FlashAttention's kernel takes it
    assert fast.attention_mode("lens", gpu, torch.float16, 100) == "lens"
    assert fast.attention_mode(None, gpu, torch.float16, 100) == "mask"


def test_end_of_sequence_stops_a_response_in_both_engines(model) -> None:
    before = run(model, "reference", GREEDY)
    # make EOS win where sequence 1 would emit its 4th token: EOS's output row := that token's, scaled up
    token = before.outputs[1][3]
    with torch.no_grad():
        model.output.weight[EOS_ID] = model.output.weight[token] * 1.5
    ref, fast = run(model, "reference", GREEDY), run(model, "fast", GREEDY)
    assert fast.outputs == ref.outputs
    assert ref.outputs[1][-1] == EOS_ID and len(ref.outputs[1]) <= 4
    assert ref.eos_stops == fast.eos_stops >= 1
    assert fast.steps < ref.steps


def test_a_fast_batch_ended_by_its_limits_stops_at_the_last_limit(model) -> None:
    """The decode loop reads its live count one step late (fast._LaggedCount) but bounds it by the limits: a batch
    whose rows end at their limits runs max(limits) - 1 decode steps, none more."""
    stats = run(model, "fast", GREEDY)
    assert [len(o) for o in stats.outputs] == LIMITS  # no EOS drawn: every row ran to its limit
    assert stats.steps == 1 + max(LIMITS) - 1


def test_a_fast_batch_ended_by_eos_runs_one_step_more_counted_as_waste(model) -> None:
    """Every row draws EOS at its 4th token: the loop learns it one step late, so one more step runs (at the
    bucket of the rows it last knew alive) and its rows are wasted tokens."""
    engine = make_engine("fast", model, GREEDY, torch.Generator().manual_seed(0))
    draws = []

    def draw(logits: torch.Tensor) -> torch.Tensor:  # the prefill's draw, then one per decode step
        draws.append(logits.shape[0])
        tokens = logits.argmax(-1)
        return torch.full_like(tokens, EOS_ID) if len(draws) == 4 else tokens

    engine.sample = draw
    stats = engine.generate(prompts_of(LENGTHS, TINY.vocab_size, seed=4), LIMITS, NoHooks())
    engine.close()
    want = [min(4, n) for n in LIMITS]  # limits 5, 20, 3, 9, 1
    assert [len(o) for o in stats.outputs] == want
    assert [o[-1] == EOS_ID for o in stats.outputs] == [n >= 4 for n in LIMITS]
    assert stats.steps == 1 + 4  # prefill, tokens 2 and 3, the EOS step, the step that finds them all done
    computed = len(LENGTHS) + sum(draws[1:])  # the prefill's rows, then every decode step's bucket
    assert stats.tokens == sum(want) and stats.wasted_tokens == computed - sum(want)
    assert draws[-1] == draws[-2]  # the extra step ran at the bucket of the EOS step


@pytest.mark.parametrize("name", ["reference", "fast", "fast_tuned"])
def test_same_seed_same_tokens(model, name: str) -> None:
    a, b, c = run(model, name, PAPER, seed=3), run(model, name, PAPER, seed=3), run(model, name, PAPER, seed=4)
    assert a.outputs == b.outputs
    assert a.outputs != c.outputs


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def phase_start(self, phase: str) -> None:
        self.events.append(f"start {phase}")

    def phase_end(self, phase: str) -> None:
        self.events.append(f"end {phase}")


@pytest.mark.parametrize("name", ["reference", "fast", "fast_tuned"])
def test_engines_report_phases_and_times(model, name: str) -> None:
    hooks = Recorder()
    engine = make_engine(name, model, PAPER, torch.Generator().manual_seed(0))
    stats = engine.generate(prompts_of(LENGTHS, TINY.vocab_size, seed=4), LIMITS, hooks)
    assert hooks.events == ["start prefill", "end prefill", "start decode", "end decode"]
    assert stats.prompt_tokens == sum(LENGTHS) and stats.max_prompt_tokens == max(LENGTHS)
    assert len(stats.step_times_s) == stats.steps and all(t > 0 for t in stats.step_times_s)
    assert stats.prefill_s > 0 and stats.decode_s > 0
    assert stats.tokens == sum(len(o) for o in stats.outputs) <= sum(LIMITS)


def test_llama_tokenizer_ids(llama_tokenizer_path) -> None:
    from energybench.model.tokenizer import Tokenizer

    tok = Tokenizer(llama_tokenizer_path)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 32000)
    ids = tok.encode("Hello world", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and tok.decode(ids[1:-1]) == "Hello world"


def test_a_new_fast_engine_starts_from_an_empty_compiled_code_cache() -> None:
    """Points of a local sweep share one process; compiled code of an earlier point (whose guards name
    that point's freed model-parallel group) must not pile up to dynamo's recompile limit."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from energybench.engine.fast import FastEngine
    from energybench.model.llama import TransformerBlock

    def compiled_entries() -> int:
        return len(_debug_get_cache_entry_list(TransformerBlock.forward.__code__))

    tokens = prompts_of([5, 9], TINY.vocab_size, seed=2)
    for point in range(2):
        with one_process():
            m = build_model(TINY, CPU, torch.float32, seed=7)
            m.setup_caches(4, 32)
            engine = FastEngine(m, GREEDY, torch.Generator().manual_seed(0), compile=True, graphs=False)
            assert compiled_entries() == 0, point  # the earlier point's code is gone
            out = engine.generate(tokens, [3, 3], NoHooks())
            assert compiled_entries() > 0  # this point compiled its layers
            assert [len(o) for o in out.outputs] == [3, 3]


def test_a_compiled_prefill_is_built_with_the_engine_and_serves_every_width() -> None:
    """compile_prefill: the prompts' forward through compiled layers, compiled while the engine is built, after which
    no batch or prompt width compiles anything; its logits are the eager prefill's. One compiled forward serves every
    batch: a batch of one runs as two rows (unless the engine's max_batch is 1: then that forward is for one row).
    One-token prompts stay eager."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from energybench.engine.fast import FastEngine, pack_prompts
    from energybench.model.llama import TransformerBlock

    def compiled_entries() -> int:
        return len(_debug_get_cache_entry_list(TransformerBlock.forward.__code__))

    with cpu_model(max_batch=4, max_seq=48) as m:
        eager = FastEngine(m, GREEDY, torch.Generator().manual_seed(0), compile=False, compile_prefill=True)
        assert not eager.compile_prefill and eager.prefiller is eager.eager  # nothing compiles: nothing to build
        engine = FastEngine(m, GREEDY, torch.Generator().manual_seed(0), compile=True, graphs=False,
                            compile_prefill=True)
        assert engine.compile_prefill and engine.build_s["prefill_compile_s"] > 0
        built = compiled_entries()
        assert built == 1  # not one for a batch of one besides
        for seed, lengths in enumerate(([5, 9], [12, 3, 7, 2], [30], [1, 1], [2, 17, 4])):
            prompts = prompts_of(lengths, TINY.vocab_size, seed=seed)
            with torch.inference_mode():  # as generate() calls it
                tokens = pack_prompts(prompts, max(lengths))
                got = engine.prefill_logits(tokens, lengths)
                want = eager.prefill_logits(tokens, lengths)
            assert got.shape == (len(lengths), TINY.vocab_size)
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), lengths
        assert compiled_entries() == built  # every batch and width ran the code compiled at build
    with cpu_model(max_batch=1, max_seq=48) as m:  # no second cache row: the forward is compiled for one
        engine = FastEngine(m, GREEDY, torch.Generator().manual_seed(0), compile=True, graphs=False,
                            compile_prefill=True)
        eager = FastEngine(m, GREEDY, torch.Generator().manual_seed(0), compile=False)
        built = compiled_entries()
        assert built == 1
        tokens = pack_prompts(prompts_of([11], TINY.vocab_size, seed=9), 11)
        with torch.inference_mode():
            got, want = engine.prefill_logits(tokens, [11]), eager.prefill_logits(tokens, [11])
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4) and compiled_entries() == built


@pytest.mark.parametrize("fused", [False, True])
def test_packed_projections_compute_the_same_logits_and_tokens(model, fused: bool) -> None:
    tokens = torch.tensor(prompts_of([12, 12], TINY.vocab_size, seed=3))
    positions = torch.arange(12).expand(2, 12)
    variant = model.variant(fused=fused)
    before = variant(tokens, positions, n_slots=12, mask=causal(12), last_only=False)
    from energybench.engine.fast import FastEngine

    greedy_before = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), pack=False).generate(
        prompts_of([5, 9], TINY.vocab_size, seed=4), [6, 6], NoHooks()).outputs
    assert not model.packed
    wq = model.layers[0].attention.wq.weight.clone()
    model.pack_projections()
    model.pack_projections()  # idempotent
    attn, ffn = model.layers[0].attention, model.layers[0].feed_forward
    assert model.packed and torch.equal(attn.wq.weight, wq)  # the same values, now views of one buffer
    assert attn.wq.weight.data_ptr() == attn.wqkv.data_ptr() and ffn.w1.weight.data_ptr() == ffn.w13.data_ptr()
    after = model.variant(fused=fused)(tokens, positions, n_slots=12, mask=causal(12), last_only=False)
    assert (after - before).abs().max().item() <= 1e-5
    packed = FastEngine(model, GREEDY, torch.Generator().manual_seed(0))  # the engine's default
    assert packed.generate(prompts_of([5, 9], TINY.vocab_size, seed=4), [6, 6], NoHooks()).outputs == greedy_before
    moved = model.layers[1].to(torch.float64)  # a move after packing keeps the weights views of the buffers
    assert moved.attention.wq.weight.data_ptr() == moved.attention.wqkv.data_ptr()
    ffn = moved.feed_forward
    assert ffn.w3.weight.data_ptr() == ffn.w13.data_ptr() + ffn.w1.weight.numel() * ffn.w13.element_size()
    assert moved.attention.wqkv.dtype == torch.float64


def test_fast_packs_and_fast_tuned_is_fast_with_the_same_tokens(model) -> None:
    """engine=fast packs the model's projections (views of one buffer afterwards); fast_tuned is the fast engine
    with batch-1 matmuls through the Triton kernel where it can run (a GPU; the CPU tests run it under Triton's
    interpreter, test_gemv.py) and the fast engine elsewhere: the same greedy tokens either way."""
    import os

    prompts = prompts_of([5, 9], TINY.vocab_size, seed=4)
    assert not model.packed
    plain = make_engine("fast", model, GREEDY, torch.Generator().manual_seed(0))
    assert model.packed and not plain.gemv
    tuned = make_engine("fast_tuned", model, GREEDY, torch.Generator().manual_seed(0))
    assert tuned.gemv == (os.environ.get("TRITON_INTERPRET") == "1")
    assert plain.blas is None and tuned.blas is None  # cuBLASLt is a choice of a CUDA card's graphs
    assert not plain.kv_together and not tuned.kv_together  # the split kernel's form: a CUDA card's
    assert not plain.skinny and not tuned.skinny  # the batch 2-16 GEMM: a Hopper card's
    assert tuned.generate(prompts, [6, 6], NoHooks()).outputs == plain.generate(prompts, [6, 6], NoHooks()).outputs


def test_the_fast_engines_blas_choice_is_checked(model) -> None:
    """blas= names a library of PyTorch's (cublas, cublaslt) and applies to a CUDA card's captured graphs: anything
    else is refused with the value and the fix, as is kv_together with the masked attention; blas_library(None)
    leaves PyTorch's setting alone."""
    from energybench.engine.fast import FastEngine, blas_library

    with pytest.raises(ValueError, match=r"blas='mkl' is not a BLAS library.*use one of \('cublas', 'cublaslt'\)"):
        FastEngine(model, GREEDY, torch.Generator(), blas="mkl")
    with pytest.raises(ValueError, match=r"blas='cublaslt' chooses .* this engine runs on cpu without graphs: "
                                         r"use blas=None"):
        FastEngine(model, GREEDY, torch.Generator(), blas="cublaslt")
    with pytest.raises(ValueError, match=r"kv_together=True is a form of the attention=lens kernel; this engine has "
                                         r"attention='mask': use kv_together=False"):
        FastEngine(model, GREEDY, torch.Generator(), attention="mask", kv_together=True)
    before = torch.backends.cuda.preferred_blas_library()
    with blas_library(None):
        assert torch.backends.cuda.preferred_blas_library() == before
    assert torch.backends.cuda.preferred_blas_library() == before


def test_span_budget_keeps_fewer_spans_for_small_batches() -> None:
    from energybench.engine.fast import batch_spans

    spans = [64, 128, 192, 256]  # no budget (the default) keeps every span: the engine test below
    # budget 0.5 of 340 KiB of weights, 1 KiB of K/V per token: 340 / batch slots of padding allowed
    weights, kv = 340 * 1024 * 2, 1024
    assert batch_spans(spans, 1, 0.5, weights, kv) == [256]
    assert batch_spans(spans, 2, 0.5, weights, kv) == [64, 256]
    assert batch_spans(spans, 4, 0.5, weights, kv) == [128, 256]
    assert batch_spans(spans, 8, 0.5, weights, kv) == spans


def test_fast_engine_with_a_span_budget_gives_the_reference_tokens(model) -> None:
    """Fewer spans for small batches change which slots a step reads past its rows, not what it computes."""
    from energybench.engine.fast import FastEngine

    model.setup_caches(8, 200)
    ref = run(model, "reference", GREEDY)
    engine = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), span_budget=0.5)
    assert engine.spans_of[1] == [256] and engine.spans_of[8] == [64, 128, 192, 256]
    assert engine.span_for(1, 70) == 256 and engine.span_for(8, 70) == 128
    assert engine.generate(prompts_of(LENGTHS, TINY.vocab_size, seed=4), LIMITS, NoHooks()).outputs == ref.outputs
    default = FastEngine(model, GREEDY, torch.Generator().manual_seed(0))
    assert all(spans == default.spans for spans in default.spans_of.values())
