"""A point's prompts: kept within the context window beside max_tokens, BOS first, the prompt's end kept."""

from __future__ import annotations

import pytest

from energybench.confload import compose
from energybench.data import Sample
from energybench.point import _prepare

PROMPT = (1, *range(10, 19))  # BOS + 9 tokens


@pytest.mark.parametrize(("max_tokens", "expected"), [
    (4, list(PROMPT)),  # room 12: unchanged
    (12, [1, 16, 17, 18]),  # room 4: BOS + the last 3
    (15, [1]),  # room 1: BOS alone
])
def test_long_prompts_keep_bos_and_their_end_within_the_room(max_tokens: int, expected: list[int]) -> None:
    cfg = compose(["experiment=quickstart", "model.max_seq_len=16", f"max_tokens={max_tokens}", "length=oracle"])
    prompts, limits = _prepare([Sample(PROMPT, 3), Sample(PROMPT, 40)], cfg)
    assert prompts == [expected, expected] and len(expected) <= 16 - max_tokens
    assert limits == [min(3, max_tokens), max_tokens]  # oracle: the reference length, at most max_tokens
