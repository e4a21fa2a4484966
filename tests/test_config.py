"""The config tree composes, and bad values are refused with the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from energybench.config import ConfigError, ModelConfig, PointConfig, from_mapping
from energybench.confload import compose, group_options


@pytest.mark.parametrize("group", ["model", "dataset", "cluster", "experiment"])
def test_every_group_option_composes(group: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", "/nonexistent/tokenizer.model")  # real datasets need one
    options = group_options(group)
    assert options, group
    for option in options:
        cfg = compose([f"{group}={option}"])
        assert isinstance(cfg, PointConfig)
        if group in ("model", "dataset"):
            assert getattr(cfg, group).name == option


def test_defaults_are_the_papers_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", "/t/tokenizer.model")
    cfg = compose()
    assert (cfg.model.name, cfg.dataset.name, cfg.batch, cfg.max_tokens, cfg.samples, cfg.shards) == (
        "7b", "alpaca", 64, 128, 4096, 1)
    assert (cfg.temperature, cfg.top_p, cfg.power_cap) == (0.8, 0.95, None)


@pytest.mark.parametrize(("name", "dim", "layers", "heads", "ffn"), [
    ("7b", 4096, 32, 32, 11008), ("13b", 5120, 40, 40, 13824), ("65b", 8192, 80, 64, 22016)])
def test_llama_shapes(name: str, dim: int, layers: int, heads: int, ffn: int,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", "/t/tokenizer.model")
    m = compose([f"model={name}"]).model
    assert (m.dim, m.n_layers, m.n_heads, m.hidden_dim, m.vocab_size) == (dim, layers, heads, ffn, 32000)


def test_gsm8k_split_interpolates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", "/t/tokenizer.model")
    d = compose(["dataset=gsm8k", "dataset.split=test"]).dataset
    assert d.files == ("gsm8k/test.jsonl",) and d.url.endswith("/test.jsonl")


@pytest.mark.parametrize(("override", "message"), [
    ("batch=-1", "batch=-1: must be > 0"),
    ("batch=abc", "batch='abc': expected an integer"),
    ("batch=2.5", "batch=2.5: expected an integer"),
    ("top_p=1.5", "top_p=1.5: must be in (0, 1]"),
    ("engine=turbo", "engine='turbo': must be one of reference, fast, fast_tuned"),
    ("shards=3", "shards=3 does not divide n_heads=8 of model tiny; use 1, 2, 4, 8"),
    ("model=70b", "model=70b: unknown model; choose one of 13b, 65b, 7b, tiny"),
    ("foo=1", "unknown key foo"),
    ("meter.gpu=maybe", "meter.gpu='maybe': must be one of auto, nvml, none"),
    ("max_tokens=4096", "max_tokens=4096 leaves no room for a prompt"),
    ("dataset=gsm8k", "dataset=gsm8k needs model.tokenizer"),
    ("cluster.partition=gpu", "cluster.partition='gpu': only Slurm presets use it; cluster=local runs points on "
                              "this machine (use cluster=slurm"),  # not Hydra's advice to append it (then ignored)
])
def test_bad_values_name_key_value_and_fix(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        compose(["experiment=quickstart", override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_nested_key_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key model\.foo; known keys: model\.name, model\.dim"):
        compose(["model.foo=1"])


def test_from_mapping_rejects_bools_as_numbers() -> None:
    base = {"name": "m", "dim": 8, "n_layers": 1, "n_heads": 2}
    assert from_mapping(ModelConfig, base).dim == 8
    with pytest.raises(ConfigError, match="dim=True: expected an integer"):
        from_mapping(ModelConfig, {**base, "dim": True})


def test_carbon_and_cost_factors_compose_and_bad_ones_are_refused() -> None:
    cfg = compose(["experiment=quickstart", "carbon.intensity_g_per_kwh=380", "carbon.pue=1.2",
                   "cost.usd_per_kwh=0.15"])
    assert (cfg.carbon.intensity_g_per_kwh, cfg.carbon.pue, cfg.cost.usd_per_kwh) == (380.0, 1.2, 0.15)
    plain = compose(["experiment=quickstart"])
    assert (plain.carbon.intensity_g_per_kwh, plain.carbon.pue, plain.cost.usd_per_kwh) == (None, 1.0, None)
    for override, message in (("carbon.pue=0.8", "carbon.pue=0.8: must be >= 1"),
                              ("carbon.intensity_g_per_kwh=-5", "carbon.intensity_g_per_kwh=-5.0: must be >= 0"),
                              ("cost.usd_per_kwh=-1", "cost.usd_per_kwh=-1.0: must be >= 0"),
                              ("carbon.grams=3", "unknown key carbon.grams")):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            compose(["experiment=quickstart", override])


def test_batch_larger_than_samples_is_refused_offline_only() -> None:
    from energybench.config import ConfigError
    from energybench.confload import compose

    with pytest.raises(ConfigError, match="batch=64 is larger than samples=8"):
        compose(["experiment=quickstart", "batch=64", "samples=8"])
    online = compose(["experiment=quickstart", "batch=64", "samples=8", "engine=fast", "workload=online",
                      "online.rate=4"])
    assert online.batch == 64  # online points draw one prompt per request: samples is not used
