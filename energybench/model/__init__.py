"""LLaMA on fairscale model-parallel layers: architecture, weights, tokenizer."""
