"""LLaMA's SentencePiece tokenizer (BOS 1, EOS 2, no pad id)."""

from __future__ import annotations

from pathlib import Path


class Tokenizer:
    """Encodes text to LLaMA token ids; the model file ships with every LLaMA checkpoint."""

    def __init__(self, model_path: str | Path) -> None:
        from sentencepiece import SentencePieceProcessor

        path = Path(model_path).expanduser()
        if path.is_dir():
            raise FileNotFoundError(f"model.tokenizer={path}: a directory; pass the tokenizer.model file in it")
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer {path} not found: set model.tokenizer=<path to the tokenizer.model of your LLaMA checkpoint>"
            )
        self.path = path
        try:
            self.sp = SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as e:  # sentencepiece's own message spans lines and names its C++ source
            raise ValueError(f"model.tokenizer={path}: not a SentencePiece model ({str(e).splitlines()[0][:120]}); "
                             "pass the tokenizer.model of your LLaMA checkpoint") from None
        self.vocab_size: int = self.sp.vocab_size()
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids: list[int] = self.sp.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)
