"""Known canonical dataset files: download URL -> size and checksums, and where each number comes from.

A download of one of these URLs with `dataset.sha256: null` is checked against this table; a URL not
in it is downloaded unverified (its sha256 is recorded and a warning says how to pin it).
Provenance of every number: docs/data.md, "Checksums".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GSM8K_COMMIT = "3101c7d5072418e28b9008a6636bde82a006892c"  # openai/grade-school-math master, checked
ALPACA_COMMIT = "761dc5bfbdeeffa89b8bff5d038781a4055f796a"  # tatsu-lab/stanford_alpaca main, checked


@dataclass(frozen=True)
class KnownFile:
    url: str  # canonical public URL
    size_bytes: int | None  # None: not known
    sha256: str | None  # None: no published or measured sha256 (then git_blob_sha1 checks the bytes)
    git_blob_sha1: str | None  # the file's git object id in its repository (what `git hash-object` prints)
    provenance: str  # where these numbers come from


_GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/"
_ALPACA = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"

KNOWN: dict[str, KnownFile] = {
    f.url: f
    for f in (
        KnownFile(
            _GSM8K + "train.jsonl", 4166206,
            "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
            "7d97154b91aef28d01c3301741c81ce90039a4b1",
            f"openai/grade-school-math@{GSM8K_COMMIT[:7]} grade_school_math/data/train.jsonl: git blob id from the "
            "repository's tree; size and sha256 measured on the blob's bytes (unchanged since the 2021 release)",
        ),
        KnownFile(
            _GSM8K + "test.jsonl", 749738,
            "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
            "e4c2ff4942b9a78bd74f04141224c11e28d12dc9",
            f"openai/grade-school-math@{GSM8K_COMMIT[:7]} grade_school_math/data/test.jsonl: git blob id from the "
            "repository's tree; size and sha256 measured on the blob's bytes (unchanged since the 2021 release)",
        ),
        KnownFile(
            _ALPACA, None, None,
            "3779ddbc040543ab1834ef216c983d6fcc06cc9a",
            f"tatsu-lab/stanford_alpaca@{ALPACA_COMMIT[:7]} alpaca_data.json: git blob id from the repository's "
            "tree (unchanged since the 2023-03-13 release); no sha256 or size is published and the blob's bytes "
            "were not available to measure one, so downloads are checked by git blob id",
        ),
    )
}


def lookup(url: str) -> KnownFile | None:
    """The catalog entry of `url`, or None for a URL this package knows no checksum of."""
    return KNOWN.get(url)


def git_blob_sha1(path: Path) -> str:
    """Git's object id of the file's bytes: sha1 of b"blob <size>\\0" + content (`git hash-object`)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mismatch(known: KnownFile, path: Path, sha256: str) -> str | None:
    """What of `path` (whose sha256 is given) differs from `known`, or None when everything known matches."""
    size = path.stat().st_size
    if known.size_bytes is not None and size != known.size_bytes:
        return f"size {size} bytes, expected {known.size_bytes}"
    if known.sha256 is not None and sha256 != known.sha256:
        return f"sha256 {sha256}, expected {known.sha256}"
    if known.git_blob_sha1 is not None:
        blob = git_blob_sha1(path)
        if blob != known.git_blob_sha1:
            return f"git blob id {blob}, expected {known.git_blob_sha1}"
    return None
