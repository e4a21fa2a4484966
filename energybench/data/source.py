"""Find a dataset file: dataset.path, $ENERGYBENCH_DATA_DIR, the user cache, else download and verify it."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from energybench.data import catalog
from energybench.data.records import DataError
from energybench.util.files import cache_dir

if TYPE_CHECKING:
    from energybench.config import DatasetConfig

log = logging.getLogger(__name__)

DATA_DIR_ENV = "ENERGYBENCH_DATA_DIR"


@dataclass(frozen=True)
class Source:
    path: Path  # the file read
    sha256: str  # of its bytes
    origin: str  # path | data_dir | cache | download
    url: str | None = None  # where a download came from
    verified_by: str | None = None  # a download's check: dataset.sha256 | catalog sha256 | catalog git blob id

    def describe(self) -> str:
        """The `dataset_source` recorded with every result: '<path or URL> sha256:<hex>', and
        ' unverified' after a download that no known checksum could check."""
        if self.origin != "download":
            return f"{self.path} sha256:{self.sha256}"
        return f"{self.url} sha256:{self.sha256}" + ("" if self.verified_by else " unverified")


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(cfg: DatasetConfig, environ: Mapping[str, str] | None = None, timeout_s: float = 60.0) -> Source:
    """The file for `cfg`, looked up in order: dataset.path, $ENERGYBENCH_DATA_DIR/<files>,
    <cache>/<files>, then a download of dataset.url into the cache, checked against dataset.sha256
    or, when that is null, against the catalog's checksums of the URL.

    Raises DataError when there is no copy and the download fails (naming the file to put where), or
    when the download does not match its checksum (nothing is cached then).
    """
    env = os.environ if environ is None else environ
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if path.is_dir():
            raise DataError(f"dataset.path={cfg.path}: a directory; pass the dataset file itself"
                            + (f" (e.g. {path / cfg.files[0]})" if cfg.files else ""))
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
        digest, verified_by = download(cfg.url, target, cfg.sha256, timeout_s)
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        raise DataError(_missing(cfg, env, target, f"downloading {cfg.url} failed ({reason})")) from e
    return Source(target, digest, "download", cfg.url, verified_by)


def download(url: str, target: Path, sha256: str | None, timeout_s: float) -> tuple[str, str | None]:
    """Fetch `url` to `target` through a temporary file and check it; returns (sha256, what verified it).

    Checked against `sha256` when given, else against the catalog's size/sha256/git blob id of `url`;
    a mismatch raises DataError and leaves nothing behind. A URL with no known checksum is kept,
    with a warning, and reported as verified by None.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        verified_by = _verify(url, partial, digest.hexdigest(), sha256)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest(), verified_by


def _verify(url: str, path: Path, digest: str, sha256: str | None) -> str | None:
    from energybench.data.registry import known_file

    known = catalog.lookup(url) or known_file(url)  # the package's catalog, then site specs' known files
    if sha256:
        problem = None if digest == sha256.lower() else f"sha256 {digest}, expected dataset.sha256={sha256}"
        verified_by = "dataset.sha256"
    elif known is not None:
        problem = catalog.mismatch(known, path, digest)
        verified_by = "catalog " + ("sha256" if known.sha256 else "git blob id")
    else:
        log.warning("%s: no known checksum for this URL, so the download is unverified; its sha256 %s is "
                    "recorded (pin it with dataset.sha256=%s)", url, digest, digest)
        return None
    if problem:
        raise DataError(f"{url}: checksum mismatch ({problem}); the file was not cached. "
                        f"If the source changed on purpose, set dataset.sha256={digest}")
    log.info("%s: downloaded, %s verified, sha256 %s", url, verified_by, digest)
    return verified_by


def _missing(cfg: DatasetConfig, env: Mapping[str, str], target: Path, why: str) -> str:
    data_dir = env.get(DATA_DIR_ENV)
    where = f"{data_dir}/{cfg.files[0]}" if data_dir else str(target)
    fetch = f"download {cfg.url} and put it at {where}" if cfg.url else f"put the file at {where}"
    return f"dataset={cfg.name}: no local copy of {cfg.files[0]} and {why}; {fetch}, or set dataset.path=<file>"
