"""The fast engine: the reference engine's model and sampling, with finished sequences stopped early,
a static KV cache and the decode step compiled and replayed as CUDA graphs on GPU."""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from typing import Iterator

import torch
import torch.fx.experimental._config as fx_config

from energybench.engine import prewarm
from energybench.engine.base import EOS_ID, BatchStats, PhaseHooks, StepClock, count_generated
from energybench.engine.sampling import Sampling, kernel_usable, sample
from energybench.model import gemv as gemv_kernel
from energybench.model import skinny as skinny_gemm
from energybench.model.decode_attention import flash_usable, split_usable
from energybench.model.llama import CACHE_ALIGN, Transformer

log = logging.getLogger(__name__)

MAX_SLOT_BUCKETS = 16  # attention spans captured per batch size (multiples of CACHE_ALIGN), attention="mask"
ATTENTION_MODES = ("lens", "mask")
BLAS_LIBRARIES = ("cublas", "cublaslt")


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes a decode step is built for: powers of two below max_batch, then max_batch."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


def slot_buckets(max_seq: int) -> list[int]:
    """Attention spans (cache slots read) a decode step is built for, ending at the cache length."""
    step = CACHE_ALIGN * max(1, -(-max_seq // (CACHE_ALIGN * MAX_SLOT_BUCKETS)))
    return sorted({min(s, max_seq) for s in range(step, max_seq + step, step)})


def batch_spans(spans: list[int], batch: int, budget: float, weight_bytes: int, kv_bytes_per_token: int) -> list[int]:
    """The spans the steps of batch bucket `batch` are built for under FastEngine's span_budget: only as many of
    `spans` as keep the extra K/V a step may read past its longest row under `budget` x the weights it reads anyway:
    a span is dropped (its steps run at the next larger one kept) while batch x (that larger span - it) x
    kv_bytes_per_token stays within budget x weight_bytes. Small batches read few K/V bytes, so they keep one or two
    spans, and the engine captures (and a warm start loads) fewer graphs."""
    slack_slots = budget * weight_bytes / (batch * kv_bytes_per_token)
    kept = [spans[-1]]
    for span in reversed(spans[:-1]):
        if kept[-1] - span > slack_slots:
            kept.append(span)
    return sorted(kept)


@contextlib.contextmanager
def _dynamic_shapes(constant_floats: bool = False) -> Iterator[None]:
    """Compile batch size and span as symbols, without tying them to equal static sizes (duck shaping):
    one compiled layer serves every (batch > 1, span < cache length) step. constant_floats (the engines with the
    gemv kernel): the model's float attributes (RMSNorm's eps) are constants of the compiled code, not symbolic
    floats. A symbolic eps cannot reach the gemv custom op, so Dynamo threw its first trace of the one-row layer away
    and traced again with eps fixed, in every process, and the thrown-away trace's lookup was a compile-cache miss
    on every warm start (docs/engine.md). The engines without it keep eps an input, as their records measured."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(fx_config.patch(use_duck_shape=False))
        if constant_floats:
            import torch._dynamo.config as dynamo_config  # here: torch imports Dynamo lazily

            stack.enter_context(dynamo_config.patch(specialize_float=True))
        yield


@contextlib.contextmanager
def blas_library(name: str | None) -> Iterator[None]:
    """PyTorch's matmuls run through `name` ("cublas": cuBLAS's own API, "cublaslt": cuBLASLt, which picks other
    kernels for some shapes; torch.backends.cuda.preferred_blas_library) inside the block, and through what was
    set before after it. None leaves the setting alone. A graph captured inside keeps the kernels chosen then."""
    if name is None:
        yield
        return
    before = torch.backends.cuda.preferred_blas_library()
    torch.backends.cuda.preferred_blas_library(name)
    try:
        yield
    finally:
        torch.backends.cuda.preferred_blas_library(before)


def _fit(buckets: list[int], n: int) -> int:
    return next(b for b in buckets if b >= n)


def aligned_span(n: int, max_seq: int) -> int:
    """The cache slots [0, span) that hold positions below n: n rounded up to CACHE_ALIGN, at most max_seq."""
    return min(-(-n // CACHE_ALIGN) * CACHE_ALIGN, max_seq)


def attention_mode(setting: str | None, device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    """The decode attention an engine runs: `lens` (each row reads its own length; on GPU the split-KV Triton
    kernel, or FlashAttention's variable-length kernel where Triton is not) or `mask` (one span for all rows,
    through a mask). None is lens on a GPU where the Triton kernel runs (model/decode_attention.py), mask elsewhere
    (a CPU; a card, dtype or head size the kernel does not take)."""
    if setting is None:
        return "lens" if device.type == "cuda" and split_usable(device, dtype, head_dim) else "mask"
    if setting not in ATTENTION_MODES:
        raise ValueError(f"attention={setting!r}: use one of {', '.join(ATTENTION_MODES)}")
    lens_on_gpu = setting == "lens" and device.type == "cuda"
    if lens_on_gpu and not (split_usable(device, dtype, head_dim) or flash_usable(device, dtype)):
        raise ValueError(f"attention=lens needs Triton or FlashAttention-2 (compute capability 8.0+, fp16/bf16); "
                         f"this is {torch.cuda.get_device_name(device)} with {dtype}: use attention=mask")
    return setting


class FastEngine:
    """Same function as ReferenceEngine, computed with as little waste as the hardware allows.

    Prefill: one eager forward over all prompts (right-padded; the causal mask keeps pads out of every
    real position), logits taken at each prompt's last token. Decode: one token per live sequence per step;
    row r sits at its own position and attends to its own slots (see `attention` below). When the live sequences
    fit a smaller batch bucket, their cache rows are moved to the front (`_compact`) and the step runs at that
    size. On GPU each (batch, span) step (one span per batch with attention=lens) is built once
    (layers torch.compiled, whole step captured as a CUDA graph, collectives included, and the draw of the
    next tokens captured as a second graph) and replayed.

    Decode attention (`attention`, see attention_mode): `lens` (the default on a GPU where Triton runs) gives each
    row its own context length (pos + 1) and calls energybench's split-KV Triton kernel, which reads only those
    slots (`model/decode_attention.py`): a step needs no span, so one graph per batch size and a quicker start,
    and on an H200 the kernel is faster than cuDNN's over the span at batch 1, 16 and 64 (docs/engine.md:
    benchmarks/decode_attention.py). `mask` (the default elsewhere) attends every row to a span (a multiple of
    CACHE_ALIGN covering the longest row) through a mask, one graph per (batch, span); on an H200 PyTorch runs
    cuDNN's kernel for it.
    """

    def __init__(self, model: Transformer, sampling: Sampling, generator: torch.Generator,
                 compile: bool | None = None, graphs: bool | None = None, pack: bool = True,
                 attention: str | None = None, gemv: bool = False, span_budget: float | None = None,
                 top_p_kernel: bool | None = None, blas: str | None = None, compile_prefill: bool = False,
                 kv_together: bool = False, skinny: bool = False, defer_residual: bool = False) -> None:
        """compile / graphs: None is on for GPU, off for CPU. pack: one matmul for wq/wk/wv and one for w1/w3
        (`model.pack_projections()`, in place; same values; False leaves the model as it is: five matmuls on a
        model nobody packed). attention: see the class. gemv: the decode step's batch-1 matmuls through
        energybench's Triton kernel (model/gemv.py) instead of cuBLAS (`fast_tuned`). span_budget (attention=mask):
        see batch_spans; None (the default) builds every span for every batch bucket. top_p_kernel: draw the next
        tokens through energybench's Triton top-p kernel (engine/sampling.py, kernel=True; the same distribution,
        no sort of the vocabulary); None is on where it runs on a GPU (sampling.kernel_usable), off on a CPU.
        blas: the BLAS library the decode graphs' matmuls are captured with (blas_library: "cublas" or
        "cublaslt"; None: PyTorch's setting, cuBLAS unless changed); prefill runs on PyTorch's setting.
        compile_prefill: prefill through compiled layers too (where the engine compiles), built for every prompt
        width at once (dynamic shapes) and compiled while the engine is built (_compile_prefill); prompts of one
        token stay eager. Off: prefill runs the eager layers (see prefill_logits). kv_together (attention=lens):
        the decode steps' split-KV attention kernel loads each tile's K and V at once, with its own tiles
        (model/decode_attention.py split_plan; `fast_tuned` on a GPU); off a GPU attention=lens runs no kernel and
        the choice changes nothing. skinny: the decode steps' matmuls of 2 to 16 rows through energybench's Triton
        GEMM (model/skinny.py) instead of cuBLAS, and of up to 64 rows for the weight shapes it was measured faster
        on (skinny.WIDE_CONFIGS), w1/w3's product with SwiGLU in its epilogue (`fast_tuned` on a compute capability
        9.0+ card, fp16). defer_residual: each layer's last residual add made by the next layer, in its first kernel
        with its norm (Transformer.variant; prefill and decode, not the batch-1 steps through gemv; `fast_tuned` on a
        CUDA card)."""
        t_start = time.perf_counter()
        cuda = model.output.weight.device.type == "cuda"
        compiling = cuda if compile is None else compile
        if compiling:
            prewarm.wait()  # the compiler's imports, if the point started them while its weights loaded
        if pack:
            model.pack_projections()
        self.model = model
        self.sampling = sampling
        self.generator = generator
        self.device = model.output.weight.device
        self.dtype = model.output.weight.dtype
        assert model.max_batch > 0, "call model.setup_caches() before building the engine"
        self.use_graphs = cuda if graphs is None else graphs
        self.attention = attention_mode(attention, self.device, self.dtype, model.cfg.head_dim)
        if gemv and not gemv_kernel.usable(self.device, self.dtype):
            raise ValueError(f"gemv=True needs Triton and a CUDA card of compute capability 8.0+ in fp16/bf16 "
                             f"(or TRITON_INTERPRET=1 on a CPU); this is {self.device} with {self.dtype}: "
                             f"use gemv=False")
        self.gemv = gemv
        if skinny and not skinny_gemm.usable(self.device, self.dtype):
            raise ValueError(f"skinny=True needs Triton and a CUDA card of compute capability 9.0+ in fp16 (or "
                             f"TRITON_INTERPRET=1 on a CPU); this is {self.device} with {self.dtype}: use skinny=False")
        self.skinny = skinny
        if kv_together and self.attention != "lens":
            raise ValueError(f"kv_together=True is a form of the attention=lens kernel; this engine has "
                             f"attention={self.attention!r}: use kv_together=False")
        self.kv_together = kv_together
        self.defer_residual = defer_residual
        if blas not in (None, *BLAS_LIBRARIES):
            raise ValueError(f"blas={blas!r} is not a BLAS library the engine knows; use one of {BLAS_LIBRARIES} "
                             f"or None (PyTorch's setting)")
        if blas is not None and not (cuda and self.use_graphs):
            raise ValueError(f"blas={blas!r} chooses the library of a CUDA card's captured decode graphs; this engine "
                             f"runs on {self.device} {'with' if self.use_graphs else 'without'} graphs: use blas=None")
        self.blas = blas
        vocab = model.cfg.vocab_size
        if top_p_kernel is None:
            top_p_kernel = self.device.type == "cuda" and kernel_usable(self.device, vocab)
        elif top_p_kernel and not kernel_usable(self.device, vocab):
            raise ValueError(f"top_p_kernel=True needs Triton on a CUDA card of compute capability 8.0+ (or "
                             f"TRITON_INTERPRET=1 on a CPU) and a vocabulary of at most 65,536; this is {self.device} "
                             f"with {vocab}: use top_p_kernel=False")
        self.top_p_kernel = top_p_kernel
        self.pdl = gemv_kernel.pdl_on(self.device)  # its Triton kernels as programmatic dependent launches
        self.max_batch, self.max_seq = model.max_batch, model.max_seq
        self.batches = batch_buckets(self.max_batch)
        self.spans = [self.max_seq] if self.attention == "lens" else slot_buckets(self.max_seq)
        self.spans_of = {b: list(self.spans) for b in self.batches}  # batch bucket -> the spans its steps are built for
        if span_budget is not None:
            from energybench.results import metrics  # the roofline's byte counts (pulls in pyarrow: only here)

            cfg, elem = model.cfg, model.output.weight.element_size()  # whole-model bytes: the shard count cancels
            weight_bytes = metrics.weight_bytes_per_step(cfg.dim, cfg.n_layers, cfg.hidden_dim, cfg.vocab_size, elem)
            kv_bytes = metrics.kv_bytes_per_token(cfg.dim, cfg.n_layers, elem)
            self.spans_of = {b: batch_spans(self.spans, b, span_budget, weight_bytes, kv_bytes) for b in self.batches}
        self.room = min(model.cfg.max_seq_len, self.max_seq)  # positions a sequence may use
        # static inputs of the decode step: the step for batch size b reads rows [:b]
        self.tok = torch.zeros((self.max_batch, 1), dtype=torch.long, device=self.device)
        self.pos = torch.zeros((self.max_batch, 1), dtype=torch.long, device=self.device)
        self.slot_ids = torch.arange(self.max_seq, device=self.device)
        self.eager = model.variant(fused=True, defer_residual=defer_residual)  # prefill, and decode without compile
        self.decoder = self.eager  # decode without compile
        choices = {"gemv": gemv, "kv_together": kv_together, "skinny": skinny, "defer_residual": defer_residual}
        if gemv or kv_together or skinny:
            self.decoder = model.variant(fused=True, **choices)
        self.prefiller = self.eager  # prompts' forward
        self.compile_prefill = compile_prefill and compiling
        if compiling:
            # Points of a local sweep share one process. Dynamo's compiled code of an earlier point guards
            # on fairscale's model-parallel group, which that point's teardown freed: every point added
            # entries until recompile_limit (8) made the 4th point's layers run eagerly: decode step 9.4 ->
            # 12.8 ms on an H100 (docs/engine.md). Start each engine from an empty code cache.
            torch.compiler.reset()
            self.decoder = model.variant(fused=True, compile=True, **choices)
            if self.compile_prefill:  # its own compiled wrappers: prefill's guards apart from decode's
                self.prefiller = model.variant(fused=True, compile=True, defer_residual=defer_residual)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}  # logits [b, vocab]
        self.draws: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}  # next tokens [b]
        # where building the engine went (GPU): setting up (packing, compiled wrappers), first calls of each step
        # (tracing, compiling or loading from the cache; first_graph_s of them the first step's, which also
        # initializes the compiler) and graph capture
        self.build_s = {"setup_s": 0.0, "warmup_compile_s": 0.0, "first_graph_s": 0.0, "capture_s": 0.0,
                        "prefill_compile_s": 0.0}
        self._pool = None
        self._logits: torch.Tensor | None = None  # the last eager step's logits (no graphs), for draw()
        self.build_s["setup_s"] = time.perf_counter() - t_start
        if self.use_graphs:
            self._capture_all()
        if self.compile_prefill:
            self._compile_prefill()

    # ---- one decode step -------------------------------------------------------------------------

    def _decode(self, b: int, s: int) -> torch.Tensor:
        """Logits [b, vocab] for tokens self.tok[:b] at positions self.pos[:b], attending to slots [0, s)
        (attention=lens: row r to its slots [0, pos[r]])."""
        pos = self.pos[:b]
        if self.attention == "lens":
            kv_lens = (pos.view(b) + 1).to(torch.int32)
            return self.decoder(self.tok[:b], pos, n_slots=s, kv_lens=kv_lens)
        hidden = self.slot_ids[:s].view(1, 1, 1, s) > pos.view(b, 1, 1, 1)  # [b, 1, 1, s] slots in the future
        mask = torch.zeros((b, 1, 1, s), dtype=self.dtype, device=self.device).masked_fill_(hidden, float("-inf"))
        return self.decoder(self.tok[:b], pos, n_slots=s, mask=mask)

    @torch.inference_mode()
    def _capture_all(self) -> None:
        """Compile and capture every (batch, span) step now, so no generate call pays for it. Warm-up
        and capture run on zero inputs: they only write cache slots 0 and 1, which every prefill
        overwrites."""
        self.tok.zero_()
        self.pos.zero_()
        with _dynamic_shapes(self.gemv), blas_library(self.blas):
            for b in self.batches:  # ascending: compiles for batch 1, then once for every larger batch
                for s in self.spans_of[b]:
                    self._capture(b, s)
        torch.cuda.synchronize(self.device)
        log.info("fast engine: %d decode graphs captured (batch: spans %s)", len(self.graphs), self.spans_of)

    @torch.inference_mode()
    def _compile_prefill(self) -> None:
        """Compile the prefill forward now (or load it from the compile cache), so no generate call pays for it: one
        call for each batch the compiled code tells apart (2 and more, and max_batch, whose cache rows the forward
        reads whole; a batch of one is run as two rows by prefill_logits, so it has no code of its own unless max_batch
        is 1), at a width of 2 (any width of 2 or more runs the same code). Writes cache slots 0 and 1 of rows the next
        prefill overwrites; draws nothing."""
        t0 = time.perf_counter()
        for b in sorted({min(2, self.max_batch), self.max_batch}):  # batch 1 runs as 2 rows (prefill_logits)
            self.prefill_logits(torch.zeros((b, 2), dtype=torch.long, device=self.device), [2] * b)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.build_s["prefill_compile_s"] = time.perf_counter() - t0
        log.info("fast engine: prefill compiled in %.1f s", self.build_s["prefill_compile_s"])

    def _capture(self, b: int, s: int) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        t0 = time.perf_counter()
        with torch.cuda.stream(stream):
            for _ in range(2):  # compile (first call of a shape) and settle lazy initialisation
                self.sample(self._decode(b, s))
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self._decode(b, s)
        self._pool = graph.pool()
        self.graphs[(b, s)] = (graph, logits)
        # the draw reads this graph's logits; its own graph, so a profile can replay the forward alone. The
        # generator is registered with the graph: each replay draws new numbers from it (seeded, reproducible).
        draw = torch.cuda.CUDAGraph()
        draw.register_generator_state(self.generator)
        with torch.cuda.graph(draw, pool=self._pool):
            tokens = self.sample(logits)
        self.draws[(b, s)] = (draw, tokens)
        torch.cuda.synchronize(self.device)
        self.build_s["warmup_compile_s"] += t1 - t0  # tracing and compiling (or loading from the cache), warm-up
        if len(self.graphs) == 1:
            self.build_s["first_graph_s"] = t1 - t0
        self.build_s["capture_s"] += time.perf_counter() - t1

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of each row of `logits` [b, vocab] (float32): the engine's sampling, through the top-p
        kernel where the engine takes it."""
        return sample(logits, self.sampling, self.generator, kernel=self.top_p_kernel)

    def bucket_for(self, n: int) -> int:
        """The batch bucket (the smallest of self.batches) that holds n rows: the size a step of n rows runs at."""
        return _fit(self.batches, n)

    def span_for(self, b: int, n: int) -> int:
        """The span a step at batch bucket `b` runs when its longest row needs `n` cache slots (n <= room)."""
        return _fit(self.spans_of[b], n)

    def step(self, b: int, s: int) -> torch.Tensor:
        """One decode forward at batch bucket `b` and span `s` on the current static inputs (the graph replayed on
        GPU): logits [b, vocab]. For profiles (benchmarks/engine_profile.py); generate() calls it per token."""
        return self._step(b, s)

    def draw(self, b: int, s: int) -> torch.Tensor:
        """The next tokens [b] drawn from the last step's logits at (b, s) (its captured graph replayed on GPU).
        For profiles; generate() calls next_tokens()."""
        if not self.use_graphs:
            return self.sample(self._logits)
        graph, tokens = self.draws[(b, s)]
        graph.replay()
        return tokens

    def next_tokens(self, b: int, s: int) -> torch.Tensor:
        """One decode step at batch bucket `b` and span `s` and the draw from its logits: tokens [b] (on GPU, a
        buffer of the captured graph, overwritten by the next step at (b, s))."""
        self._step(b, s)
        return self.draw(b, s)

    def _step(self, b: int, s: int) -> torch.Tensor:
        if not self.use_graphs:
            with _dynamic_shapes(self.gemv):
                self._logits = self._decode(b, s)
                return self._logits
        graph, logits = self.graphs[(b, s)]
        graph.replay()
        return logits

    # ---- generation ------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], limits: list[int], hooks: PhaseHooks) -> BatchStats:
        bsz, lens = len(prompts), [len(p) for p in prompts]
        dev, max_len = self.device, max(lens)
        assert 0 < bsz <= self.max_batch, (bsz, self.max_batch)
        assert max_len < self.room, (max_len, self.room)
        limits = [max(1, min(lim, self.room - n)) for n, lim in zip(lens, limits)]
        tokens = pack_prompts(prompts, max_len).to(dev)  # host work before the window, as the reference engine does
        clock = StepClock(dev)
        counts = _LaggedCount(dev)  # its pinned buffers, set up outside the measured windows
        hooks.phase_start("prefill")
        clock.mark()
        first = self._prefill(tokens, lens)
        out = torch.full((bsz + 1, max(limits)), -1, dtype=torch.long, device=dev)  # row bsz: scratch
        out[:bsz, 0] = first
        limit_t = torch.tensor(limits, device=dev)
        rows = _Rows(self.max_batch, bsz, dev)
        rows.limit[:bsz] = limit_t
        rows.alive[:bsz] = (first != EOS_ID) & (limit_t > 1)
        self.tok.zero_()
        self.pos.zero_()
        self.tok[:bsz, 0] = first
        self.pos[:bsz, 0] = torch.tensor(lens, device=dev)  # the first new token sits right after its prompt
        clock.mark()
        hooks.phase_end("prefill")
        hooks.phase_start("decode")
        computed = bsz  # token positions sampled, counted or not
        # A row is fed at step t only while t < its limit: how many rows the limits leave at each step (host-known)
        by_limit = sorted(limits)
        n_alive, t = int(rows.alive.sum()), 1
        b = self.bucket_for(bsz)
        while (n_fed := min(n_alive, bsz - bisect.bisect_right(by_limit, t))) > 0:
            # n_alive is the live count one step behind (see _LaggedCount), n_fed its bound by the limits
            if self.bucket_for(n_fed) < b:
                b, n_alive = self._compact(rows, span=aligned_span(min(max_len + t - 1, self.room), self.max_seq))
                counts.clear()
                if n_alive == 0:  # the last rows met EOS in the step just run
                    break
            # positions fed this step are below min(max_len + t, room): a row stops before room
            nxt = self.next_tokens(b, self.span_for(b, min(max_len + t, self.room)))  # [b]
            alive = rows.alive[:b]
            out[rows.seq[:b], t] = torch.where(alive, nxt, -1)
            alive &= (nxt != EOS_ID) & (t + 1 < rows.limit[:b])
            self.tok[:b, 0] = nxt
            self.pos[:b, 0] += alive  # finished rows stay put (their writes land on their own last slot)
            computed += b
            t += 1
            clock.mark()
            n_alive = counts.swap(alive.sum(), n_alive)
        hooks.phase_end("decode")
        intervals = clock.intervals_s()
        generated = [[x for x in row if x >= 0] for row in out[:bsz].tolist()]
        kept, eos_stops = count_generated(generated, limits)
        counted = sum(len(k) for k in kept)
        return BatchStats(
            responses=bsz, prompt_tokens=sum(lens), max_prompt_tokens=max_len, tokens=counted,
            wasted_tokens=computed - counted, steps=len(intervals), prefill_steps=1,
            prefill_s=intervals[0], decode_s=sum(intervals[1:]), step_times_s=intervals,
            eos_stops=eos_stops, outputs=kept,
        )

    def _prefill(self, tokens: torch.Tensor, lens: list[int]) -> torch.Tensor:
        """One forward over every prompt (`tokens` [B, width], right-padded); returns each sequence's
        first generated token [B]."""
        return self.sample(self.prefill_logits(tokens, lens))

    def prefill_logits(self, tokens: torch.Tensor, lens: list[int]) -> torch.Tensor:
        """Logits [B, vocab] at each prompt's last token (`tokens` [B, width], right-padded, lens its lengths)."""
        bsz, width = tokens.shape
        if bsz == 1 and width > 1 and self.compile_prefill and self.max_batch > 1:
            # One prompt through the compiled prefill as two copies of it (cache rows 0 and 1 get the same keys and
            # values; row 1 is the next prefill's to overwrite): Dynamo specializes a size of 1, so a batch of one
            # would be a compiled forward of its own, traced or loaded again by every point (warm, 1.0-1.4 s of a
            # 6.5 s build on an H200 host; cold, 4.7 s). The weights are read once either way.
            return self.prefill_logits(tokens.repeat(2, 1), lens * 2)[:1]
        positions = torch.arange(width, device=self.device).expand(bsz, width)
        mask = None
        if width > 1:
            mask = torch.full((1, 1, width, width), float("-inf"), device=self.device, dtype=self.dtype).triu_(1)
        last = torch.tensor(lens, device=self.device) - 1
        # Eager unless compile_prefill: the prompt width changes from batch to batch, and layers compiled for
        # decode's shapes specialized on it (n_slots is a Python int), so every new width recompiled inside the
        # measured prefill window (1.35 s instead of 0.18 s on an H100). Compiled with dynamic shapes (the width a
        # symbol, apart from the batch: _dynamic_shapes) and built in _compile_prefill, one compiled forward serves
        # every width: on an H200 7B's prefill of 64 prompts of 100 tokens takes 151 ms against eager's 209, the
        # norms, rotary and SwiGLU fused (docs/benchmarks/engine.md, commit 10be8d6).
        model = self.prefiller if width > 1 else self.eager
        with _dynamic_shapes(self.gemv):
            return model(tokens, positions, n_slots=width, mask=mask, logits_at=last)

    def _compact(self, rows: _Rows, span: int) -> tuple[int, int]:
        """Move the live rows (tokens, positions, cache slots [0, span)) to the front; returns the new bucket and
        the live count (it waits for the steps queued so far: the rows' state is exact)."""
        keep = rows.alive.nonzero().squeeze(1)  # [n_alive], ascending
        n = keep.numel()
        if n == 0:
            return 0, 0
        self.model.compact_caches(keep, span)
        for buf in (self.tok, self.pos, rows.seq, rows.limit):
            buf[:n] = buf[keep]
        rows.alive[:n] = True
        rows.alive[n:] = False
        rows.seq[n:] = rows.scratch
        self.pos[n:] = 0  # spare rows write slot 0 of spare cache rows
        return self.bucket_for(n), n

    def close(self) -> None:
        """Free the captured graphs (and their memory pool) while the process group still exists."""
        self.prefiller = self.eager
        if self.use_graphs:
            torch.cuda.synchronize(self.device)
        for graph, _ in [*self.graphs.values(), *self.draws.values()]:
            graph.reset()
        self.graphs.clear()
        self.draws.clear()
        self._pool = None
        self.decoder = self.eager


def pack_prompts(prompts: list[list[int]], width: int) -> torch.Tensor:
    """Prompts as one right-padded [B, width] tensor of token ids, on the host."""
    tokens = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return tokens


class _LaggedCount:
    """The live-row count of the decode loop, read one step late so the host never waits on the step it just queued.

    After queueing step t, `swap(count_of_step_t, known)` starts copying that count to the host and returns step
    t - 1's (waiting for step t - 1 only; the first swap returns `known`). The GPU then always has the next step
    queued behind the one it runs: no gap between steps for the host to read a count and launch. The loop bounds
    the stale count by the rows' limits (known on the host), so a batch that ends by its limits stops exactly; one
    that ends at an EOS runs one step more, whose rows are all finished (counted as wasted). On a CPU the same lag,
    without copies (the tests run it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[torch.Tensor, torch.cuda.Event | None]] = []
        self.free = [torch.empty((), dtype=torch.long, pin_memory=True) for _ in range(2)] if self.cuda else []

    def swap(self, count: torch.Tensor, known: int) -> int:
        if self.cuda:
            host = self.free.pop()
            host.copy_(count, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))  # the stream the step and the copy went to
            self.pending.append((host, event))
        else:
            self.pending.append((count.clone(), None))
        if len(self.pending) < 2:
            return known
        host, event = self.pending.pop(0)
        if event is not None:
            event.synchronize()
            self.free.append(host)
        return int(host)

    def clear(self) -> None:
        """Forget the counts in flight (a compaction has just counted the rows exactly)."""
        for host, event in self.pending:
            if event is not None:
                event.synchronize()
                self.free.append(host)
        self.pending.clear()


class _Rows:
    """Bookkeeping of the physical batch rows during decode (all on the device)."""

    def __init__(self, max_batch: int, bsz: int, device: torch.device) -> None:
        self.scratch = bsz  # output row that spare rows write to
        self.seq = torch.full((max_batch,), bsz, dtype=torch.long, device=device)  # sequence in each row
        self.seq[:bsz] = torch.arange(bsz, device=device)
        self.limit = torch.zeros(max_batch, dtype=torch.long, device=device)  # token limit of each row
        self.alive = torch.zeros(max_batch, dtype=torch.bool, device=device)  # still generating


# `engine=fast_tuned`: the fast engine with its batch-1 matmuls through energybench's Triton kernel (model/gemv.py)
# where it can run (a CUDA card of compute capability 8.0+, fp16/bf16; elsewhere it is `fast`), with the layer's
# norms, SwiGLU and residual adds folded into it (model.llama's one-row layer); its batch 2-16 matmuls through
# energybench's Triton GEMM (model/skinny.py, compute capability 9.0+, fp16), and up to 64 rows for the weight shapes
# the GEMM was measured faster on (skinny.WIDE_CONFIGS: 7B's wqkv, w1/w3, with SwiGLU in its epilogue, and output
# projection); its other decode matmuls captured through cuBLASLt (blas="cublaslt" on a CUDA card); its prefill
# compiled (compile_prefill); its decode attention loading K and V at once (kv_together); each layer's last residual
# add made in the next layer's first kernel (defer_residual: one elementwise kernel a layer fewer, batch-64 steps 2 %
# shorter on one card). On an H200 (docs/engine.md, docs/benchmarks/engine.md, 7B at commit e66d440 against `fast` at
# 10be8d6, another card) batch-1 tokens are 20-21 % faster than `fast`'s, batch-16 steps 12 %, batch-64 tokens 12-13 %
# faster and 12 % cheaper: cuBLASLt's kernel for w2's shape (4096 x 11008) takes 26 us where cuBLAS's split-K kernel
# and its reduction take 30, the Triton GEMM reads the wide shapes faster still (docs/benchmarks/skinny.md), and the
# compiled prefill fuses what eager runs apart. Its own engine (and point ids).
TUNED_BLAS = "cublaslt"


def tuned_engine(model: Transformer, sampling: Sampling, generator: torch.Generator) -> FastEngine:
    """FastEngine(gemv=True) where model.gemv.usable, with blas=TUNED_BLAS, compile_prefill, (where the split-KV
    kernel runs) kv_together, (where model.skinny.usable) skinny and defer_residual on a CUDA card; else the plain fast
    engine."""
    device, dtype = model.output.weight.device, model.output.weight.dtype
    gemv = gemv_kernel.usable(device, dtype)
    cuda = gemv and device.type == "cuda"
    return FastEngine(model, sampling, generator, gemv=gemv, blas=TUNED_BLAS if cuda else None, compile_prefill=cuda,
                      kv_together=cuda and split_usable(device, dtype, model.cfg.head_dim),
                      skinny=cuda and skinny_gemm.usable(device, dtype), defer_residual=cuda)
