"""Prompts are built with Alpaca's two templates and GSM8K's bare question; custom templates are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from energybench.config import ConfigError, DatasetConfig
from energybench.confload import compose
from energybench.data import DataError, prompts_and_references
from energybench.data.templates import alpaca_prompt, gsm8k_prompt

HEAD = "Below is an instruction that describes a task"
WRITE = "Write a response that appropriately completes the request."


def test_alpaca_with_input_uses_the_input_variant() -> None:
    prompt = alpaca_prompt({"instruction": "Sort these.", "input": "3, 1, 2", "output": "1, 2, 3"})
    assert prompt == (f"{HEAD}, paired with an input that provides further context. {WRITE}\n\n"
                      "### Instruction:\nSort these.\n\n### Input:\n3, 1, 2\n\n### Response:")


def test_alpaca_without_input_uses_the_no_input_variant() -> None:
    prompt = alpaca_prompt({"instruction": "Name a color.", "input": "", "output": "Blue."})
    assert prompt == f"{HEAD}. {WRITE}\n\n### Instruction:\nName a color.\n\n### Response:"
    assert "### Input:" not in prompt


def test_alpaca_chooses_the_variant_as_alpaca_does() -> None:
    # Alpaca's train.py: the input variant exactly when input != "" (whitespace counts as input)
    assert "### Input:\n \n" in alpaca_prompt({"instruction": "x", "input": " ", "output": ""})
    assert "### Input:" not in alpaca_prompt({"instruction": "x", "output": ""})


def test_gsm8k_prompt_is_the_question_and_the_reference_is_the_answer() -> None:
    record = {"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}
    assert gsm8k_prompt(record) == "What is 2 + 3?"
    assert prompts_and_references(DatasetConfig(name="gsm8k"), [record]) == [("What is 2 + 3?", record["answer"])]


def test_custom_templates() -> None:
    assert gsm8k_prompt({"question": "2+2?", "answer": "4"}, "Q: {question}\nA:") == "Q: 2+2?\nA:"
    assert alpaca_prompt({"instruction": "i", "input": "", "output": "o"}, "[{instruction}|{input}]") == "[i|]"
    cfg = DatasetConfig(name="alpaca", template="{instruction} {{literal}}")
    assert prompts_and_references(cfg, [{"instruction": "i", "input": "x", "output": "o"}]) == [("i {literal}", "o")]


@pytest.mark.parametrize(("template", "message"), [
    ("Q: {problem}", "uses {problem}, which records do not have; use {answer}, {question}"),
    ("{0}", "is not a valid template"),
    ("{question", "is not a valid template"),
])
def test_bad_template_is_a_clear_error(template: str, message: str) -> None:
    with pytest.raises(DataError, match=r"^dataset.template=") as e:
        gsm8k_prompt({"question": "q", "answer": "a"}, template)
    assert message in str(e.value)


def test_bad_template_is_refused_when_the_config_is_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", str(tmp_path / "tokenizer.model"))
    with pytest.raises(ConfigError, match=r"^dataset.template='Q: \{problem\}': \{problem\} is not a field of gsm8k "
                                          r"records; use placeholders \{question\}, \{answer\}"):
        compose(["dataset=gsm8k", "dataset.template='Q: {problem}'"])
    assert compose(["dataset=gsm8k", "dataset.template='Q: {question}'"]).dataset.template == "Q: {question}"


def test_gsm8k_split_must_be_train_or_test(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", str(tmp_path / "tokenizer.model"))
    with pytest.raises(ConfigError, match=r"^dataset.split='dev': must be one of train, test"):
        compose(["dataset=gsm8k", "dataset.split=dev"])
