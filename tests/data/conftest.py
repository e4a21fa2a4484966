"""Fixtures of the workload tests: a local HTTP server for downloads, the real LLaMA tokenizer."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest


@dataclass
class Server:
    root: Path  # the folder it serves
    url: str  # http://127.0.0.1:<port>
    requests: list[str] = field(default_factory=list)  # paths asked for, in order


@pytest.fixture
def http_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; stopped after the test."""
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: object) -> None:  # quiet, and count requests
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def tokenizer(llama_tokenizer_path: Path):
    """The real LLaMA SentencePiece tokenizer from ../shared."""
    from energybench.model.tokenizer import Tokenizer

    return Tokenizer(llama_tokenizer_path)
