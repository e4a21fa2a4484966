"""Dataset files are found in order (path, data dir, cache) or downloaded from a real HTTP server and checked."""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from energybench.config import DatasetConfig
from energybench.confload import compose
from energybench.data import DataError, catalog
from energybench.data.source import Source, resolve

CONTENT = b'{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n'
SHA = hashlib.sha256(CONTENT).hexdigest()


def cfg(url: str | None = None, sha256: str | None = None, **kw: object) -> DatasetConfig:
    return DatasetConfig(name="gsm8k", url=url, sha256=sha256, files=("gsm8k/test.jsonl",), split="test", **kw)


def env(tmp_path: Path, data_dir: Path | None = None) -> dict[str, str]:
    e = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    if data_dir is not None:
        e["ENERGYBENCH_DATA_DIR"] = str(data_dir)
    return e


def cached(tmp_path: Path) -> list[str]:
    root = tmp_path / "cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def put(root: Path, content: bytes = CONTENT) -> Path:
    path = root / "gsm8k" / "test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_lookup_order_path_then_data_dir_then_cache(tmp_path: Path) -> None:
    in_cache = put(tmp_path / "cache" / "energybench", b"cache\n")
    in_data = put(tmp_path / "data", b"data\n")
    own = tmp_path / "mine.jsonl"
    own.write_bytes(b"mine\n")
    assert resolve(cfg(path=str(own)), env(tmp_path, tmp_path / "data")) == Source(
        own, hashlib.sha256(b"mine\n").hexdigest(), "path")
    assert resolve(cfg(), env(tmp_path, tmp_path / "data")).path == in_data
    assert resolve(cfg(), env(tmp_path, tmp_path / "elsewhere")).path == in_cache
    assert resolve(cfg(), env(tmp_path)).origin == "cache"


def test_download_with_checksum_ok_is_cached_and_recorded(tmp_path: Path, http_server) -> None:
    put(http_server.root)
    url = f"{http_server.url}/gsm8k/test.jsonl"
    source = resolve(cfg(url, SHA), env(tmp_path))
    assert (source.origin, source.verified_by, source.sha256) == ("download", "dataset.sha256", SHA)
    assert source.describe() == f"{url} sha256:{SHA}"
    assert source.path.read_bytes() == CONTENT
    assert cached(tmp_path) == ["energybench/gsm8k/test.jsonl"]  # no partial file left
    again = resolve(cfg(url, SHA), env(tmp_path))
    assert (again.origin, again.path) == ("cache", source.path)
    assert http_server.requests == ["/gsm8k/test.jsonl"]  # the second run did not download


def test_checksum_wrong_caches_nothing(tmp_path: Path, http_server) -> None:
    put(http_server.root, CONTENT.replace(b"2", b"3"))
    url = f"{http_server.url}/gsm8k/test.jsonl"
    with pytest.raises(DataError, match=f"^{url}: checksum mismatch \\(sha256 [0-9a-f]{{64}}, expected "
                                        f"dataset.sha256={SHA}\\); the file was not cached"):
        resolve(cfg(url, SHA), env(tmp_path))
    assert cached(tmp_path) == []


@pytest.mark.parametrize(("known", "verified_by"), [
    (dict(size_bytes=len(CONTENT), sha256=SHA, git_blob_sha1=None), "catalog sha256"),
    (dict(size_bytes=None, sha256=None, git_blob_sha1=hashlib.sha1(b"blob %d\0" % len(CONTENT) + CONTENT).hexdigest()),
     "catalog git blob id"),
])
def test_null_sha256_means_the_catalogs_checksum(tmp_path: Path, http_server, monkeypatch: pytest.MonkeyPatch,
                                                 known: dict, verified_by: str) -> None:
    put(http_server.root)
    url = f"{http_server.url}/gsm8k/test.jsonl"
    monkeypatch.setitem(catalog.KNOWN, url, catalog.KnownFile(url=url, provenance="test", **known))
    source = resolve(cfg(url), env(tmp_path))
    assert source.verified_by == verified_by and source.describe() == f"{url} sha256:{SHA}"


@pytest.mark.parametrize(("known", "problem"), [
    (dict(size_bytes=len(CONTENT) + 1, sha256=None, git_blob_sha1=None), "size"),
    (dict(size_bytes=None, sha256="0" * 64, git_blob_sha1=None), "sha256"),
    (dict(size_bytes=None, sha256=None, git_blob_sha1="0" * 40), "git blob id"),
])
def test_catalog_mismatch_caches_nothing(tmp_path: Path, http_server, monkeypatch: pytest.MonkeyPatch,
                                         known: dict, problem: str) -> None:
    put(http_server.root)
    url = f"{http_server.url}/gsm8k/test.jsonl"
    monkeypatch.setitem(catalog.KNOWN, url, catalog.KnownFile(url=url, provenance="test", **known))
    with pytest.raises(DataError, match=f"checksum mismatch \\({problem} .*; the file was not cached. If the source "
                                        f"changed on purpose, set dataset.sha256={SHA}$"):
        resolve(cfg(url), env(tmp_path))
    assert cached(tmp_path) == []


def test_unknown_url_is_downloaded_unverified_with_a_warning(tmp_path: Path, http_server,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    put(http_server.root)
    url = f"{http_server.url}/gsm8k/test.jsonl"
    with caplog.at_level(logging.WARNING, logger="energybench.data"):
        source = resolve(cfg(url), env(tmp_path))
    assert source.verified_by is None
    assert source.describe() == f"{url} sha256:{SHA} unverified"
    assert f"no known checksum for this URL, so the download is unverified; its sha256 {SHA}" in caplog.text
    assert f"dataset.sha256={SHA}" in caplog.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("data_dir", [False, True])
def test_server_down_says_which_file_to_put_where(tmp_path: Path, data_dir: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}/gsm8k/test.jsonl"
    where = tmp_path / "data" if data_dir else None
    with pytest.raises(DataError) as e:
        resolve(cfg(url, SHA), env(tmp_path, where), timeout_s=5)
    target = f"{where}/gsm8k/test.jsonl" if data_dir else f"{tmp_path}/cache/energybench/gsm8k/test.jsonl"
    message = str(e.value)
    assert message.startswith(f"dataset=gsm8k: no local copy of gsm8k/test.jsonl and downloading {url} failed (")
    assert message.endswith(f"; download {url} and put it at {target}, or set dataset.path=<file>")
    assert "refused" in message.lower()
    assert cached(tmp_path) == []


def test_missing_on_the_server_is_an_error_too(tmp_path: Path, http_server) -> None:
    url = f"{http_server.url}/gsm8k/test.jsonl"
    with pytest.raises(DataError, match=f"downloading {url} failed \\(HTTP 404 "):
        resolve(cfg(url, SHA), env(tmp_path))
    assert cached(tmp_path) == []


def test_no_url_and_no_copy(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no download URL is configured; put the file at .*/gsm8k/test.jsonl"):
        resolve(cfg(), env(tmp_path))


@pytest.mark.parametrize(("overrides", "rel"), [
    (["dataset=gsm8k"], "gsm8k/train.jsonl"),
    (["dataset=gsm8k", "dataset.split=test"], "gsm8k/test.jsonl"),
    (["dataset=alpaca"], None),
])
def test_configured_urls_are_in_the_catalog(overrides: list[str], rel: str | None, shared_datasets: Path,
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENERGYBENCH_TOKENIZER", str(tmp_path / "tokenizer.model"))
    dataset = compose(overrides).dataset
    known = catalog.lookup(dataset.url)
    assert known is not None and dataset.sha256 is None, dataset.url
    assert known.sha256 or known.git_blob_sha1
    if rel is not None:  # the shared GSM8K files are byte copies of the canonical ones
        assert dataset.files[0] == rel
        assert catalog.mismatch(known, shared_datasets / rel, hashlib.sha256((shared_datasets / rel).read_bytes())
                                .hexdigest()) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_blob_sha1_is_gits_object_id(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(CONTENT * 3)
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout
    assert catalog.git_blob_sha1(path) == expected.strip()
