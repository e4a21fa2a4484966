"""The one GPU card table: pre-flight memory and the roofline read it; a site adds a card from outside the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from energybench.config import ClusterConfig, ConfigError
from energybench.confload import compose
from energybench.device.cards import CARDS, CardError, card_for, card_for_type, known_cards
from energybench.memory import gpu_memory_gib
from energybench.plan import preflight
from energybench.results import cards_table
from energybench.results.metrics import derive_points

REPO = Path(__file__).resolve().parents[1]

# The recipe of docs/extending.md, "Add a GPU card": one YAML file, outside the package.
SITE_CARDS = """\
cards:
  - name: MI300X 192GB
    match: MI300X                 # regex on NVML's name
    gpu_types: [MI300X-192GB]     # what cluster presets put in cluster.gpu_type
    mem_bandwidth_gb_s: 5300
    tdp_w: 750
    memory_gb: 192
    source: AMD Instinct MI300X data sheet
  - name: Site 8GB
    gpu_types: [Site-8GB]
    mem_bandwidth_gb_s: 300
    tdp_w: 70
    memory_gb: 8
    source: our own measurement
"""


@pytest.fixture(autouse=True)
def no_site_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENERGYBENCH_CARDS", raising=False)
    monkeypatch.delenv("ENERGYBENCH_CONFIG_PATH", raising=False)


def site_file(tmp_path: Path, text: str = SITE_CARDS, name: str = "cards.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_preset_gpu_type_has_a_card_whose_memory_the_preflight_uses() -> None:
    types = [t for card in CARDS for t in card.gpu_types]
    assert len(types) == len(set(types))  # one card per gpu_type name
    for card in CARDS:
        for gpu_type in card.gpu_types:
            assert card_for_type(gpu_type) is card and card_for(gpu_type) is card
            assert gpu_memory_gib(ClusterConfig(gpu_type=gpu_type)) == card.memory_gb
    for preset in ("supercloud_v100", "supercloud_a100"):
        cluster = compose([f"cluster={preset}", "dataset=synthetic"]).cluster
        assert card_for_type(cluster.gpu_type) is not None, preset
    assert gpu_memory_gib(ClusterConfig(gpu_type="A100-80GB", gpu_memory_gb=40)) == 40  # stated memory wins
    assert gpu_memory_gib(ClusterConfig(gpu_type="H100")) is None  # exact names only: no guess from a pattern


def test_a_site_card_from_an_env_file_reaches_preflight_and_the_roofline(tmp_path, monkeypatch) -> None:
    overrides = ["cluster=slurm", "cluster.gpus_per_node=4", "cluster.gpu_type=Site-8GB", "model=7b",
                 "dataset=synthetic", "shards=1"]
    assert preflight(compose(overrides)) is None  # unknown gpu_type: no memory check
    assert card_for("AMD Instinct MI300X") is None
    monkeypatch.setenv("ENERGYBENCH_CARDS", str(site_file(tmp_path)))
    why = preflight(compose(overrides))
    assert why is not None and "of the 8 GiB of a Site-8GB; use shards=4 or more" in why
    card = card_for("AMD Instinct MI300X")
    assert card is not None and (card.name, card.mem_bandwidth_gb_s, card.memory_gb) == ("MI300X 192GB", 5300, 192)
    points = derive_points(pd.DataFrame([{"gpu_name": "AMD Instinct MI300X", "power_w": 375.0, "shards": 1}]))
    assert points.loc[0, "card"] == "MI300X 192GB" and points.loc[0, "tdp_frac"] == pytest.approx(0.5)
    assert [r["card"] for r in cards_table()[:2]] == ["MI300X 192GB", "Site 8GB"]


def test_a_cards_yaml_in_a_site_preset_folder_is_read(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    site_file(site, SITE_CARDS.replace("MI300X 192GB", "H100 of our site").replace("match: MI300X", "match: H100"))
    monkeypatch.setenv("ENERGYBENCH_CONFIG_PATH", os.pathsep.join([str(tmp_path / "no such folder"), str(site)]))
    found = card_for("NVIDIA H100 80GB HBM3")
    assert found is not None and found.name == "H100 of our site"  # site cards come before the built-in ones
    assert known_cards()[-len(CARDS):] == CARDS


def test_a_site_card_file_in_a_subprocess(tmp_path) -> None:
    """The recipe exactly as a site runs it: a file and an environment variable, no code."""
    env = {**os.environ, "ENERGYBENCH_CARDS": str(site_file(tmp_path))}
    code = "from energybench.memory import gpu_memory_gib; from energybench.config import ClusterConfig; " \
           "print(gpu_memory_gib(ClusterConfig(gpu_type='MI300X-192GB')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "192.0"


@pytest.mark.parametrize(("text", "message"), [
    ("cards: {name: x}", r"expected a mapping with a list under 'cards:'"),
    ("cards: [{name: X, match: X, mem_bandwidth_gb_s: 1, tdp_w: 1, memory_gb: 1}]",
     r"card 1 \(X\): source is missing; a card has"),
    ("cards: [{name: X, match: X, mem_bandwidth_gb_s: fast, tdp_w: 1, memory_gb: 1, source: s}]",
     r"card 1 \(X\): mem_bandwidth_gb_s='fast' must be a positive number"),
    ("cards: [{name: X, mem_bandwidth_gb_s: 1, tdp_w: 1, memory_gb: 1, source: s}]",
     r"card 1 \(X\): give match .* and/or gpu_types"),
    ("cards: [{name: X, match: X, memory: 1, mem_bandwidth_gb_s: 1, tdp_w: 1, memory_gb: 1, source: s}]",
     r"card 1 \(X\): unknown key 'memory'"),
    ("cards: [{name: X, match: '(', mem_bandwidth_gb_s: 1, tdp_w: 1, memory_gb: 1, source: s}]",
     r"card 1 \(X\): match='\(' is not a regular expression"),
    ("cards: [", r"cannot read it as YAML"),
])
def test_a_bad_site_card_file_is_one_line_naming_file_card_and_key(tmp_path, monkeypatch, text, message) -> None:
    path = site_file(tmp_path, text, name=f"bad{abs(hash(text))}.yaml")
    monkeypatch.setenv("ENERGYBENCH_CARDS", str(path))
    with pytest.raises(CardError, match=message) as e:
        card_for("NVIDIA H100 80GB HBM3")
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    assert isinstance(e.value, ConfigError)  # a sweep reports it as a configuration error


def test_a_missing_cards_file_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ENERGYBENCH_CARDS", str(tmp_path / "nope.yaml"))
    with pytest.raises(CardError, match=r"nope.yaml is not a file; point it to a YAML file of cards"):
        card_for_type("A100-80GB")


def test_an_edited_site_file_is_read_again(tmp_path, monkeypatch) -> None:
    path = site_file(tmp_path)
    monkeypatch.setenv("ENERGYBENCH_CARDS", str(path))
    assert card_for_type("Site-8GB").memory_gb == 8
    path.write_text(SITE_CARDS.replace("memory_gb: 8", "memory_gb: 16"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert card_for_type("Site-8GB").memory_gb == 16


def test_the_card_table_imports_no_torch() -> None:
    code = "import sys, energybench.device.cards, energybench.results.hardware; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_a_sweep_with_a_bad_cards_file_exits_2_before_anything_is_written(tmp_path) -> None:
    bad = site_file(tmp_path, "cards: [{name: X, match: X, tdp_w: 1, memory_gb: 1, source: s}]")
    env = {**os.environ, "ENERGYBENCH_CARDS": str(bad)}
    out = subprocess.run([sys.executable, "-m", "energybench.sweep", "experiment=quickstart",
                          f"out_dir={tmp_path / 'results'}"], env=env, capture_output=True, text=True, cwd=REPO)
    err = out.stderr.strip()
    assert out.returncode == 2 and err == f"error: {bad}: card 1 (X): mem_bandwidth_gb_s is missing; a card has " \
        "gpu_types, match, mem_bandwidth_gb_s, memory_gb, name, source, tdp_w", err
    assert not (tmp_path / "results").exists()
