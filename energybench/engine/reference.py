"""The paper's engine: Meta's LLaMA v1 `generate` loop (eager, KV cache, no early stop)."""

from __future__ import annotations

import torch

from energybench.engine.base import BatchStats, PhaseHooks, StepClock, count_generated
from energybench.engine.sampling import Sampling, sample
from energybench.model.llama import Transformer


class ReferenceEngine:
    """Every sequence is computed until the longest one is done, as the paper measured.

    Like v1, the prefill covers the shortest prompt; longer prompts are fed one position at a time
    (their computed tokens replaced by the prompt's own). The loop runs to the longest prompt +
    limit; positions past a sequence's EOS or limit are computed and counted as wasted.
    """

    def __init__(self, model: Transformer, sampling: Sampling, generator: torch.Generator) -> None:
        self.model = model
        self.sampling = sampling
        self.generator = generator
        self.device = model.output.weight.device

    def close(self) -> None:
        """Nothing to free: the reference engine holds no graphs."""

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], limits: list[int], hooks: PhaseHooks) -> BatchStats:
        bsz = len(prompts)
        lens = [len(p) for p in prompts]
        min_len, max_len = min(lens), max(lens)
        total_len = min(self.model.cfg.max_seq_len, max(n + lim for n, lim in zip(lens, limits)))
        tokens = torch.zeros((bsz, total_len), dtype=torch.long)
        for row, ids in enumerate(prompts):
            tokens[row, : len(ids)] = torch.tensor(ids[:total_len], dtype=torch.long)
        tokens = tokens.to(self.device)
        in_prompt = torch.arange(total_len) < torch.tensor(lens).unsqueeze(1)  # [B, T]
        in_prompt = in_prompt.to(self.device)
        dtype = self.model.output.weight.dtype
        first_token_step = max_len - min_len  # step whose output gives the longest prompt its first token

        clock = StepClock(self.device)
        hooks.phase_start("prefill")
        clock.mark()
        prev = 0
        for step, cur in enumerate(range(min_len, total_len)):
            width = cur - prev
            positions = torch.arange(prev, cur, device=self.device).expand(bsz, width)  # [B, S]
            mask = None
            if width > 1:  # causal over the prefill
                mask = torch.full((1, 1, width, width), float("-inf"), device=self.device, dtype=dtype)
                mask = torch.triu(mask, diagonal=1)
            logits = self.model(tokens[:, prev:cur], positions, n_slots=cur, mask=mask)
            next_token = sample(logits, self.sampling, self.generator)
            next_token = torch.where(in_prompt[:, cur], tokens[:, cur], next_token)
            tokens[:, cur] = next_token
            prev = cur
            clock.mark()
            if step == first_token_step:
                hooks.phase_end("prefill")
                hooks.phase_start("decode")
        hooks.phase_end("decode")

        steps = total_len - min_len
        intervals = clock.intervals_s()
        rows = tokens.cpu().tolist()
        generated = [row[n:] for row, n in zip(rows, lens)]
        kept, eos_stops = count_generated(generated, limits)
        counted = sum(len(k) for k in kept)
        return BatchStats(
            responses=bsz,
            prompt_tokens=sum(lens),
            max_prompt_tokens=max_len,
            tokens=counted,
            wasted_tokens=sum(total_len - n for n in lens) - counted,
            steps=steps,
            prefill_steps=first_token_step + 1,
            prefill_s=sum(intervals[: first_token_step + 1]),
            decode_s=sum(intervals[first_token_step + 1 :]),
            step_times_s=intervals,
            eos_stops=eos_stops,
            outputs=kept,
        )
