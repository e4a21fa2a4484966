"""Prompt templates: Stanford Alpaca's two variants and GSM8K's zero-shot question."""

from __future__ import annotations

from typing import Any

from energybench.data.records import DataError

# From tatsu-lab/stanford_alpaca train.py (PROMPT_DICT), verbatim.
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
GSM8K_ZERO_SHOT = "{question}"


def alpaca_prompt(record: dict[str, Any], template: str | None = None) -> str:
    """Alpaca's with-input or without-input prompt; a custom template may use {instruction} and {input}.

    As Alpaca's train.py chooses: the with-input variant exactly when `input` is not the empty string.
    """
    if template is not None:
        return render(template, record)
    chosen = ALPACA_WITH_INPUT if record.get("input", "") != "" else ALPACA_NO_INPUT
    return chosen.format(instruction=record["instruction"], input=record.get("input", ""))


def gsm8k_prompt(record: dict[str, Any], template: str | None = None) -> str:
    """The question alone (zero-shot) unless `template` says otherwise, e.g. 'Q: {question}\\nA:'."""
    return render(template or GSM8K_ZERO_SHOT, record)


def render(template: str, record: dict[str, Any]) -> str:
    """`template` with the record's fields filled in (str.format placeholders such as {question}).

    Raises DataError naming the template, the placeholder and the fields there are.
    """
    try:
        return template.format(**record)
    except KeyError as e:
        raise DataError(
            f"dataset.template={template!r} uses {{{e.args[0]}}}, which records do not have; "
            f"use {', '.join('{' + f + '}' for f in sorted(record))}"
        ) from None
    except (IndexError, ValueError, AttributeError) as e:
        raise DataError(
            f"dataset.template={template!r} is not a valid template ({e}); use named placeholders such as "
            "{question} and double braces {{ }} for literal ones"
        ) from None
