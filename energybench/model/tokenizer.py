"""LLaMA's SentencePiece tokenizer (BOS 1, EOS 2, no pad id)."""

from __future__ import annotations

from pathlib import Path


class Tokenizer:
    """Encodes text to LLaMA token ids; the model file ships with every LLaMA checkpoint."""

    def __init__(self, model_path: str | Path) -> None:
        from sentencepiece import SentencePieceProcessor

        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer {path} not found: set model.tokenizer=<path to the tokenizer.model of your LLaMA checkpoint>"
            )
        self.path = path
        self.sp = SentencePieceProcessor(model_file=str(path))
        self.vocab_size: int = self.sp.vocab_size()
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids: list[int] = self.sp.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)
