"""Dataset files are read whole and right (both Alpaca layouts), and bad ones are refused by file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from energybench.config import DatasetConfig
from energybench.data import FIELDS, DataError, load_workload
from energybench.data.records import read_records


@pytest.mark.parametrize(("rel", "name", "count"), [
    ("gsm8k/test.jsonl", "gsm8k", 1319),
    ("gsm8k/train.jsonl", "gsm8k", 7473),
    ("alpaca/alpaca_data_5k.jsonl", "alpaca", 5000),
])
def test_shared_files_have_their_published_record_counts(shared_datasets: Path, rel: str, name: str,
                                                          count: int) -> None:
    records = read_records(shared_datasets / rel, FIELDS[name])
    assert len(records) == count
    if name == "gsm8k":  # every GSM8K answer ends in its final number
        assert all("\n#### " in r["answer"] for r in records)


def alpaca_records(shared_datasets: Path, n: int = 300) -> list[dict]:
    return read_records(shared_datasets / "alpaca/alpaca_data_5k.jsonl", FIELDS["alpaca"])[:n]


def test_alpaca_json_array_and_json_lines_read_the_same(shared_datasets: Path, tmp_path: Path) -> None:
    records = alpaca_records(shared_datasets)
    array = tmp_path / "alpaca_data.json"
    array.write_text(json.dumps(records, indent=4, ensure_ascii=False), encoding="utf-8")  # the original's layout
    lines = tmp_path / "alpaca_data.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert read_records(array, FIELDS["alpaca"]) == records
    assert read_records(lines, FIELDS["alpaca"]) == records


def test_alpaca_layouts_give_the_same_workload(shared_datasets: Path, tmp_path: Path, tokenizer) -> None:
    records = alpaca_records(shared_datasets, 50)
    array, lines = tmp_path / "a.json", tmp_path / "a.jsonl"
    array.write_text(json.dumps(records), encoding="utf-8")  # one line, as a minified copy would be
    lines.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    loads = [load_workload(DatasetConfig(name="alpaca", path=str(p)), 20, 3, 32000, tokenizer) for p in (array, lines)]
    assert loads[0].samples == loads[1].samples
    assert loads[0].source != loads[1].source  # each records its own file and checksum


def test_json_lines_keep_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "a\u2028b", "answer": "c"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_records(path, FIELDS["gsm8k"]) == [{"question": "a\u2028b", "answer": "c"}]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = '{"question": "q", "answer": "a"}'


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("bad.jsonl", f"{GOOD}\n{GOOD}\n{{'question': 'q'}}\n", "bad.jsonl: bad JSON on line 3"),
    ("blank.jsonl", f"{GOOD}\n\n\n{GOOD[:-1]}\n", "blank.jsonl: bad JSON on line 4"),
    ("field.jsonl", f'{GOOD}\n{{"question": "q"}}\n', "field.jsonl: line 2: record has no field 'answer'"),
    ("type.jsonl", f'{GOOD}\n{GOOD}\n{{"question": 7, "answer": "a"}}\n',
     "type.jsonl: line 3: field 'question' is a int"),
    ("list.jsonl", f"{GOOD}\n[1, 2]\n", "list.jsonl: line 2: record is not a JSON object"),
    ("empty.jsonl", "\n\n", "empty.jsonl: no records"),
    ("bad.json", f"[\n  {GOOD},\n  {GOOD}\n  {GOOD}\n]\n", "bad.json: bad JSON on line 4: expected ',' or ']'"),
    ("comma.json", f"[\n  {GOOD},\n  {GOOD},\n]\n", "comma.json: bad JSON on line 4"),
    ("field.json", f'[\n  {GOOD},\n  {GOOD},\n\n  {{\n    "question": "q"\n  }}\n]',
     "field.json: line 5: record has no field 'answer'"),
    ("extra.json", f"[{GOOD}]\n\n[]", "extra.json: bad JSON on line 3: extra data"),
])
def test_bad_files_name_the_file_line_and_field(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(DataError) as e:
        read_records(path, FIELDS["gsm8k"])
    assert str(e.value).startswith(f"{tmp_path}/{expected}"), str(e.value)
    assert "\n" not in str(e.value)


def test_array_elements_are_numbered_by_the_line_they_start_on(tmp_path: Path) -> None:
    records = [{"question": f"q{i}", "answer": "a"} for i in range(5)] + [{"question": "q"}]
    path = write(tmp_path, "indented.json", json.dumps(records, indent=4))
    with pytest.raises(DataError, match=r"indented.json: line 22: record has no field 'answer'"):
        read_records(path, FIELDS["gsm8k"])  # 5 records of 4 lines after "[" on line 1


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"^dataset.path={tmp_path}/nope.jsonl: no such file"):
        load_workload(DatasetConfig(name="gsm8k", path=str(tmp_path / "nope.jsonl")), 4, 1, 32000, tokenizer=_NoTok())
    with pytest.raises(DataError, match=f"^{tmp_path}/nope.jsonl: cannot read"):
        read_records(tmp_path / "nope.jsonl", FIELDS["gsm8k"])
    binary = tmp_path / "latin1.jsonl"
    binary.write_bytes('{"question": "caf\xe9", "answer": "a"}'.encode("latin-1"))
    with pytest.raises(DataError, match="latin1.jsonl: not UTF-8 text"):
        read_records(binary, FIELDS["gsm8k"])


def test_a_real_dataset_needs_a_tokenizer(tmp_path: Path) -> None:
    path = write(tmp_path, "g.jsonl", GOOD + "\n")
    with pytest.raises(DataError, match="dataset=gsm8k needs a tokenizer: set model.tokenizer="):
        load_workload(DatasetConfig(name="gsm8k", path=str(path)), 1, 1, 32000, tokenizer=None)


class _NoTok:
    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        raise AssertionError("not reached")
