"""Find a dataset file: dataset.path, $ENERGYBENCH_DATA_DIR, the user cache, else download and verify it."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from energybench.config import DatasetConfig
from energybench.data.records import DataError

DATA_DIR_ENV = "ENERGYBENCH_DATA_DIR"


@dataclass(frozen=True)
class Source:
    path: Path  # the file read
    sha256: str  # of its bytes
    origin: str  # path | data_dir | cache | download
    url: str | None = None  # where a download came from

    def describe(self) -> str:
        """The `dataset_source` recorded with every result."""
        where = self.url if self.origin == "download" else str(self.path)
        return f"{where} sha256:{self.sha256}"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "energybench"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(cfg: DatasetConfig, environ: Mapping[str, str] | None = None, timeout_s: float = 60.0) -> Source:
    """The file for `cfg`, looked up in order: dataset.path, $ENERGYBENCH_DATA_DIR/<files>,
    <cache>/<files>, then a download of dataset.url into the cache, checked against dataset.sha256."""
    env = os.environ if environ is None else environ
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise DataError(f"dataset.path={cfg.path}: no such file")
        return Source(path, sha256_of(path), "path")
    roots = [("data_dir", Path(env[DATA_DIR_ENV]).expanduser())] if env.get(DATA_DIR_ENV) else []
    roots.append(("cache", cache_dir(env)))
    for origin, root in roots:
        for name in cfg.files:
            if (root / name).is_file():
                return Source(root / name, sha256_of(root / name), origin)
    if not cfg.files:
        raise DataError(f"dataset={cfg.name}: set dataset.path=<file>")
    target = cache_dir(env) / cfg.files[0]
    if not cfg.url:
        raise DataError(_missing(cfg, env, target, "no download URL is configured"))
    try:
        digest = download(cfg.url, target, cfg.sha256, timeout_s)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(_missing(cfg, env, target, f"downloading {cfg.url} failed: {reason}")) from e
    return Source(target, digest, "download", cfg.url)


def download(url: str, target: Path, sha256: str | None, timeout_s: float) -> str:
    """Fetch `url` to `target` through a temporary file; a checksum mismatch leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if sha256 and digest.hexdigest() != sha256:
            raise DataError(
                f"{url}: checksum mismatch (got sha256 {digest.hexdigest()}, expected {sha256}); "
                "the file was not cached. If the source changed on purpose, set dataset.sha256 to the new value"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()


def _missing(cfg: DatasetConfig, env: Mapping[str, str], target: Path, why: str) -> str:
    data_dir = env.get(DATA_DIR_ENV)
    where = f"{data_dir}/{cfg.files[0]}" if data_dir else str(target)
    return f"dataset={cfg.name}: no local copy and {why}. Put the file at {where}, or set dataset.path=<file>"
