"""The datasets energybench ships: Alpaca and GSM8K as the paper used them, and synthetic token ids.

Their download locations and default split are Hydra presets (conf/dataset/<name>.yaml, values that go
into point ids); the specs here hold what the code needs: record fields, template, reference, checksums.
"""

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
    known=_known("https://raw.githubusercontent.com/tatsu-lab/"),
))
GSM8K = register_dataset(DatasetSpec(
    name="gsm8k", fields=("question", "answer"), reference="answer", template=GSM8K_ZERO_SHOT,
    splits=("train", "test"),
    known=_known("https://raw.githubusercontent.com/openai/"),
))
SYNTHETIC = register_dataset(DatasetSpec(
    name="synthetic", synthetic=True,
    lengths_like=tuple(sorted(json.loads(resources.files("energybench.data").joinpath("lengths.json").read_text()))),
))
