"""Atomic, verifiable checkpoints of a training run.

Layout of ``<output_dir>/checkpoints/``:

    iter_000010/
        trainable.safetensors      the trained weights only (LoRA or the full tiny transformer)
        optimizer.bin, random_states_*.pkl, custom_checkpoint_*.pkl   accelerate's training state
        checkpoint.json            iteration, config, and the sha256 of every file above
    latest                         the name of the newest complete checkpoint

A checkpoint is written into ``iter_000010.tmp`` and renamed only once complete (a rename is atomic on
POSIX), then ``latest`` is replaced atomically, so a crash at any moment leaves the previous checkpoint
intact. Loading verifies every checksum: a corrupt or partial checkpoint is an error, never a silent
fresh start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TRAINABLE = "trainable.safetensors"
META = "checkpoint.json"


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def trainable_state(policy) -> dict[str, torch.Tensor]:
    """Name -> tensor of the trained weights, read from the unwrapped module."""
    wanted = {id(p) for p in policy.trainable_parameters()}
    return {n: p.detach().cpu().contiguous() for n, p in policy.unwrapped.named_parameters() if id(p) in wanted}


def load_trainable(policy, path: Path) -> None:
    state = load_file(str(path))
    params = dict(policy.unwrapped.named_parameters())
    missing = [n for n in trainable_state(policy) if n not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} trained weights (e.g. {missing[0]}): "
                              "was it written with another model or LoRA rank?")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def save(accelerator, policy, run_dir: str | Path, iteration: int, config: dict) -> Path:
    """Write checkpoint ``iter_<iteration>`` atomically on the main process; all processes must call it."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"iter_{iteration:06d}"
    tmp = root / (final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # optimizer, RNG, registered objects (EMA); model weights: see hooks in train.py
    if accelerator.is_main_process:
        save_file(trainable_state(policy), str(tmp / TRAINABLE))
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        _atomic_write_text(tmp / META, json.dumps({"iteration": iteration, "config": config, "sha256": files}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _atomic_write_text(root / "latest", final.name)
    accelerator.wait_for_everyone()
    return final


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder whose ``checkpoints/latest`` names one."""
    path = Path(path)
    if (path / META).exists() or (path / TRAINABLE).exists():
        return path
    latest = path / "checkpoints" / "latest"
    if latest.exists():
        return path / "checkpoints" / latest.read_text().strip()
    raise CheckpointError(f"no checkpoint at {path}: expected a checkpoint folder with {META} or a run folder "
                          "with checkpoints/latest (a run that never reached a checkpoint cannot be resumed)")


def verify(ckpt: Path) -> dict:
    """Check completeness and checksums; return the metadata. Raises CheckpointError otherwise."""
    meta_path = ckpt / META
    if not meta_path.exists():
        raise CheckpointError(f"{ckpt} is incomplete: {META} is missing (interrupted while writing?)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is corrupt: {e}") from e
    for name, digest in meta["sha256"].items():
        f = ckpt / name
        if not f.exists():
            raise CheckpointError(f"{ckpt} is incomplete: {name} is missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"{f} is corrupt: its sha256 does not match {META}")
    return meta
