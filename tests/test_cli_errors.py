"""The command-line entry points answer bad input with one line naming the value and exit 2 (no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest


def one_line_error(capsys: pytest.CaptureFixture, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_point_config_file_missing_or_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from energybench.point import main

    assert "No such file or directory" in one_line_error(capsys, main(["--config", str(tmp_path / "none.yaml")]))
    bad = tmp_path / "config.yaml"
    bad.write_text("batch: [1\n")
    assert "not valid YAML on line" in one_line_error(capsys, main(["--config", str(bad)]))


@pytest.mark.parametrize("module", ["point", "slurm"])
def test_override_grammar_errors_from_the_compose_api(module: str, capsys: pytest.CaptureFixture) -> None:
    import importlib

    main = importlib.import_module(f"energybench.{module}").main
    argv = ["point-dir"] if module == "slurm" else []  # the sbatch templates run `slurm point-dir <overrides>`
    assert "batch=[1: no viable alternative" in one_line_error(capsys, main([*argv, "batch=[1"]))


def test_sacct_on_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from energybench.energy.sacct import main

    assert "no such results directory" in one_line_error(capsys, main([str(tmp_path / "missing")]))
