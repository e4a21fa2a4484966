"""Real weights: Hugging Face directories against transformers, Meta files, and mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from energybench.model.build import build_model, shard_dims
from energybench.model.checkpoint import CheckpointError, needed_files, write_meta_checkpoint
from tiny import CPU, TINY, one_process, prompts_of, tiny

META_PARAMS = {"dim": TINY.dim, "n_layers": TINY.n_layers, "n_heads": TINY.n_heads,
               "multiple_of": TINY.multiple_of, "norm_eps": TINY.norm_eps, "vocab_size": -1}


def full_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    bsz, seqlen = tokens.shape
    positions = torch.arange(seqlen).expand(bsz, seqlen)
    mask = torch.full((1, 1, seqlen, seqlen), float("-inf")).triu_(1)
    return model(tokens, positions, n_slots=seqlen, mask=mask, last_only=False)


def hf_llama(path: Path, seed: int):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=TINY.vocab_size, hidden_size=TINY.dim, intermediate_size=TINY.hidden_dim,
        num_hidden_layers=TINY.n_layers, num_attention_heads=TINY.n_heads, num_key_value_heads=TINY.n_heads,
        rms_norm_eps=TINY.norm_eps, rope_theta=TINY.rope_theta, max_position_embeddings=TINY.max_seq_len,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # HF initialises norms to 1: give them values, so their mapping is tested too
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.save_pretrained(path, safe_serialization=True, max_shard_size="100KB")  # several files + index
    return model


def test_hf_checkpoint_matches_transformers(tmp_path: Path) -> None:
    hf = hf_llama(tmp_path / "hf", seed=0)
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    tokens = torch.tensor(prompts_of([12, 12], TINY.vocab_size, seed=1))
    with torch.no_grad():
        want = hf(tokens).logits.float()
    with one_process():
        model = build_model(tiny(weights="hf", path=str(tmp_path / "hf")), CPU, torch.float32, seed=0)
        model.setup_caches(2, 12)
        got = full_logits(model, tokens)
    diff = (got - want).abs().max().item()
    print("max abs diff vs transformers", diff)
    assert diff <= 1e-4


def test_needed_files_cover_each_rank_exactly() -> None:
    assert needed_files(8, 1, 4) == [2, 3]
    assert needed_files(2, 3, 4) == [1]
    assert needed_files(1, 0, 2) == [0]
    assert needed_files(2, 0, 1) == [0, 1]


def test_meta_mismatch_names_tensor_and_both_shapes(tmp_path: Path) -> None:
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=0)
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        dims = shard_dims(model)
        state["output.weight"] = torch.zeros(TINY.vocab_size + 2, TINY.dim)  # wrong vocabulary
        write_meta_checkpoint(state, dims, 2, tmp_path / "bad", META_PARAMS)
        with pytest.raises(CheckpointError, match=r"output\.weight has shape \(1002, 64\) but model tiny-test "
                                                  r"expects \(1000, 64\)"):
            build_model(tiny(weights="meta", path=str(tmp_path / "bad")), CPU, torch.float32, seed=0)
        del state["output.weight"]
        write_meta_checkpoint(state, dims, 1, tmp_path / "missing", META_PARAMS)
        with pytest.raises(CheckpointError, match=r"tensor output\.weight is missing .*\(1000, 64\)"):
            build_model(tiny(weights="meta", path=str(tmp_path / "missing")), CPU, torch.float32, seed=0)


def test_meta_params_json_must_match_preset(tmp_path: Path) -> None:
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=0)
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        write_meta_checkpoint(state, shard_dims(model), 1, tmp_path, {**META_PARAMS, "n_layers": 3})
        with pytest.raises(CheckpointError, match=r"n_layers=3 but model tiny-test has n_layers=2"):
            build_model(tiny(weights="meta", path=str(tmp_path)), CPU, torch.float32, seed=0)


def test_hf_config_mismatch_names_field(tmp_path: Path) -> None:
    hf_llama(tmp_path, seed=0)
    conf = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**conf, "hidden_size": 128}))
    with one_process(), pytest.raises(CheckpointError, match=r"hidden_size=128 but model tiny-test has dim=64"):
        build_model(tiny(weights="hf", path=str(tmp_path)), CPU, torch.float32, seed=0)
