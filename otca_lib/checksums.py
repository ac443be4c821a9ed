"""SHA-256 checksums: of one file, and a folder's SHA256SUMS (the `sha256sum` format, one `DIGEST  PATH` a line).

Model folders written by the pretraining command carry a SHA256SUMS that loading checks; checkpoints list
their files' digests in checkpoint.json (checkpoint.py). Both hash with :func:`sha256_file`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SUMS = "SHA256SUMS"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sha256sums(folder: Path) -> None:
    """Write folder/SHA256SUMS listing every file below the folder (sorted, POSIX paths)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUMS)
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    (folder / SUMS).write_text("\n".join(lines) + "\n")


def first_mismatch(folder: Path) -> Path | None:
    """The first file listed in folder/SHA256SUMS that is missing or differs; None if all match (or no list)."""
    sums = folder / SUMS
    if not sums.exists():
        return None
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        f = folder / name
        if not f.exists() or sha256_file(f) != digest:
            return f
    return None
