"""scripts/docs_tables.py: every table in the docs equals what its committed record gives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "scripts" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_tables = _load()


def test_every_table_in_the_docs_matches_its_record(capsys):
    assert docs_tables.main(["--check"]) == 0, capsys.readouterr().out


def test_docs_have_generated_tables():
    marked = [p for p in docs_tables.documents() if "<!-- table:" in p.read_text()]
    names = {p.relative_to(REPO).as_posix() for p in marked}
    assert {"docs/results/README.md", "docs/engine.md", "docs/benchmarks/engine.md", "docs/benchmarks/meter.md",
            "docs/benchmarks/sweep-h200x2/README.md"} <= names


def test_a_number_changed_by_hand_is_put_back():
    text = (REPO / "docs" / "benchmarks" / "load.md").read_text()
    assert "| 1,000,000 | 3.349 |" in text
    edited = text.replace("| 1,000,000 | 3.349 |", "| 1,000,000 | 2.000 |", 1)
    assert docs_tables.regenerate(edited) == text


def test_check_fails_and_names_the_document(tmp_path, monkeypatch, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- table: records source: docs/benchmarks/load.json columns: case seconds:.3f -->\n"
                   "| stale |\n<!-- /table -->\noutro\n")
    monkeypatch.setattr(docs_tables, "documents", lambda: [doc])
    assert docs_tables.main(["--check"]) == 1
    assert "doc.md" in capsys.readouterr().out
    assert "| stale |" in doc.read_text()  # --check writes nothing
    assert docs_tables.main([]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("<!-- /table -->\noutro\n") and "| stale |" not in text
    assert "3.349" in text
    assert docs_tables.main(["--check"]) == 0


@pytest.mark.parametrize("spec, message", [
    ("nosuch source: docs/benchmarks/load.json", "unknown"),
    ("records source: docs/benchmarks/missing.json columns: a", "does not exist"),
    ("records columns: a", "exactly one 'source: PATH'"),
])
def test_bad_marker_is_a_one_line_error(spec, message):
    with pytest.raises(ValueError, match=message):
        docs_tables.render(spec)


def _names_commit(data: object) -> bool:
    if isinstance(data, list):
        return bool(data) and all(_names_commit(r) for r in data)
    return isinstance(data, dict) and any("commit" in k for k in data)


@pytest.mark.parametrize("folder", ["docs/benchmarks", "docs/results"])
def test_every_committed_record_names_its_commit_or_why_not(folder):
    import json

    files = sorted((REPO / folder).rglob("*.json"))
    missing = [str(p.relative_to(REPO)) for p in files if not _names_commit(json.loads(p.read_text()))]
    assert files and not missing, missing


def test_points_sort_by_a_column_not_by_point_id():
    spec = ("points source: docs/results/online-7b-h200/online-7b-h200 where: workload=online sort: rate_rps "
            "columns: rate_rps:g")
    rates = [line.strip("| ") for line in docs_tables.render(spec).splitlines()[2:]]
    assert rates == ["4", "16", "32", "48", "64"]  # point-id order would put 16 and 32 before 4
