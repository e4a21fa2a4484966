"""The datasets energybench ships: Alpaca and GSM8K as the paper used them, and synthetic token ids."""

from __future__ import annotations

import json
from importlib import resources

from energybench.data.catalog import KNOWN
from energybench.data.registry import DatasetSpec, register_dataset
from energybench.data.templates import GSM8K_ZERO_SHOT, alpaca_prompt


def _known(prefix: str) -> tuple:
    return tuple(k for url, k in KNOWN.items() if url.startswith(prefix))


ALPACA = register_dataset(DatasetSpec(
    name="alpaca", fields=("instruction", "input", "output"), reference="output",
    template=alpaca_prompt,  # Alpaca's with-input or without-input prompt, as its train.py chooses
    files=("alpaca/alpaca_data.json", "alpaca/alpaca_data.jsonl", "alpaca/alpaca_data_5k.jsonl"),
    url="https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json",
    known=_known("https://raw.githubusercontent.com/tatsu-lab/"),
))
GSM8K = register_dataset(DatasetSpec(
    name="gsm8k", fields=("question", "answer"), reference="answer", template=GSM8K_ZERO_SHOT,
    splits=("train", "test"), files=("gsm8k/${..split}.jsonl",),
    url="https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/${.split}.jsonl",
    known=_known("https://raw.githubusercontent.com/openai/"),
))
SYNTHETIC = register_dataset(DatasetSpec(
    name="synthetic", synthetic=True,
    lengths_like=tuple(sorted(json.loads(resources.files("energybench.data").joinpath("lengths.json").read_text()))),
))
