"""Atomic, verifiable checkpoints of a training run, with nothing in them that can run code.

Layout of ``<output_dir>/checkpoints/``:

    iter_000010/
        trainable.safetensors        the trained weights only (LoRA or the full tiny transformer)
        training_state.safetensors   every other tensor a resume needs: the optimizer's moments and step
                                     counts, the EMA's shadow weights, the credit methods' amortised state
        training_state.json          the rest: the optimizer's param groups and non-tensor state
        checkpoint.json              iteration, config, and the sha256 of each of the three files above
    latest                           the name of the newest complete checkpoint

Nothing is pickled: a run folder shared by a colleague or downloaded is read with safetensors and JSON
only, so it cannot execute code (accelerate's ``save_state`` pickles custom objects and RNG states, and
its ``load_state`` unpickles them; it is not used). The run needs no RNG state: every random draw of the
library comes from a generator keyed by (seed, stream, iteration, ...) (seeds.py), so a resumed run draws
what an uninterrupted one would. ``verify`` accepts exactly these four files: a missing or extra file, or
one whose checksum does not match, is an error, never a silent fresh start.

A checkpoint is written into ``iter_000010.tmp`` and renamed only once complete (a rename is atomic on
POSIX), then ``latest`` is replaced atomically, so a crash at any moment leaves the previous checkpoint
intact. Weights that are not finite are never written: ``save`` raises instead, and ``latest`` keeps
pointing at the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checksums import sha256_file
from .fsdp import full, is_sharded, like

TRAINABLE = "trainable.safetensors"
STATE = "training_state.safetensors"
STATE_JSON = "training_state.json"
META = "checkpoint.json"
FILES = (TRAINABLE, STATE, STATE_JSON, META)  # the exact file set of a checkpoint


class CheckpointError(RuntimeError):
    pass


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
    return {n: full(p.detach()).cpu().contiguous() for n, p in policy.unwrapped.named_parameters() if id(p) in wanted}


def load_trainable(policy, path: Path) -> None:
    """Copy the weights of a trainable.safetensors into the policy's trained parameters."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    params = dict(policy.unwrapped.named_parameters())
    missing = [n for n in trainable_state(policy) if n not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} trained weights (e.g. {missing[0]}): "
                              "was it written with another model or LoRA rank?")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(like(params[n], t))


def training_state(optimizer, ema=None, credit_state=None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON-able dict) of everything a resume needs besides the trained weights.

    Tensor names: ``optimizer.<param index>.<name>`` (e.g. exp_avg, exp_avg_sq, step), ``ema.<i>``,
    ``credit.profile``; non-tensor optimizer state goes to the JSON side."""
    tensors, scalars = {}, {}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{name}"] = full(value.detach()).cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    meta = {"optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}}
    if ema is not None:
        tensors.update({f"ema.{i}": full(e.detach()).cpu().contiguous() for i, e in enumerate(ema.shadow)})
    if credit_state is not None and credit_state.profile is not None:
        tensors["credit.profile"] = credit_state.profile.detach().cpu().contiguous()
    return tensors, meta


def load_training_state(ckpt: Path, optimizer, ema=None, credit_state=None) -> None:
    """Restore what training_state saved; a file that is not what save wrote is a CheckpointError."""
    try:
        tensors = load_file(str(ckpt / STATE))
        meta = json.loads((ckpt / STATE_JSON).read_text())
    except (SafetensorError, OSError, ValueError) as e:  # (json.JSONDecodeError is a ValueError)
        raise CheckpointError(f"{ckpt} holds an unreadable training state ({type(e).__name__}: {e}); "
                              "resume from another checkpoint") from e
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "optimizer":
            idx, _, name = rest.partition(".")
            state.setdefault(int(idx), {})[name] = value
    params = [p for group in optimizer.param_groups for p in group["params"]]  # the state's indices, in order
    for idx, values in state.items():  # sharded weights (fsdp.py): each process keeps its shard of the moments
        for name, value in values.items():
            if idx < len(params) and value.shape == params[idx].shape:
                values[name] = like(params[idx], value)
    for idx, values in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt}: its optimizer state does not fit this model ({e}): was it written "
                              "with another model, LoRA rank or trained-weight set?") from e
    if ema is not None:
        shadow = [tensors.get(f"ema.{i}") for i in range(len(ema.shadow))]
        if any(t is None or t.shape != e.shape for t, e in zip(shadow, ema.shadow)):
            raise CheckpointError(f"{ckpt} has no EMA of these weights (was it written with ema_decay=0?)")
        for e, t in zip(ema.shadow, shadow):
            e.copy_(like(e, t))
    if credit_state is not None:
        credit_state.profile = tensors.get("credit.profile")


def save(accelerator, policy, run_dir: str | Path, iteration: int, config: dict, *, optimizer,
         ema=None, credit_state=None, keep: int = 0) -> Path:
    """Write checkpoint ``iter_<iteration>`` atomically on the main process; all processes must call it
    (the ranks hold the same replicated state; they meet at a barrier before and after the write). keep > 0:
    then delete the older checkpoints beyond the newest `keep` (prune)."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"iter_{iteration:06d}"
    tmp = root / (final.name + ".tmp")
    sharded = is_sharded(policy.trainable_parameters())
    weights = trainable_state(policy)
    bad = [n for n, t in weights.items() if not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"refusing to checkpoint iteration {iteration}: {len(bad)} trained weights are not "
                              f"finite (e.g. {bad[0]}); {root / 'latest'} still names the last good checkpoint")
    # sharded (fsdp.py): gathering a tensor is a collective, so every process gathers; replicated: only the writer
    state = training_state(optimizer, ema, credit_state) if accelerator.is_main_process or sharded else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / TRAINABLE))
        tensors, meta = state
        save_file(tensors, str(tmp / STATE))
        _atomic_write_text(tmp / STATE_JSON, json.dumps(meta, indent=1))
        files = {name: sha256_file(tmp / name) for name in (TRAINABLE, STATE, STATE_JSON)}
        _atomic_write_text(tmp / META, json.dumps({"iteration": iteration, "config": config, "sha256": files}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _atomic_write_text(root / "latest", final.name)
        if keep > 0:
            prune(root, iteration, keep)
    accelerator.wait_for_everyone()
    return final


def prune(root: Path, iteration: int, keep: int) -> list[Path]:
    """Delete the checkpoints in root older than ``iter_<iteration>`` (just written), keeping the newest `keep`
    counting it; checkpoints of later iterations (left by resuming from an older checkpoint) are kept. -> deleted."""
    older = sorted((p for p in root.glob("iter_*") if p.is_dir() and not p.name.endswith(".tmp")
                    and p.name[5:].isdigit() and int(p.name[5:]) < iteration), key=lambda p: int(p.name[5:]))
    doomed = older[:max(0, len(older) - (keep - 1))]
    for p in doomed:
        shutil.rmtree(p)
    return doomed


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder whose ``checkpoints/latest`` names one."""
    path = Path(path)
    if (path / META).exists() or (path / TRAINABLE).exists():
        return path
    latest = path / "checkpoints" / "latest"
    if latest.exists():
        name = latest.read_text().strip()
        if not name.startswith("iter_") or "/" in name or "\\" in name or name in (".", ".."):
            raise CheckpointError(f"{latest} names {name!r}, not a checkpoint folder of this run (iter_NNNNNN)")
        return path / "checkpoints" / name
    raise CheckpointError(f"no checkpoint at {path}: expected a checkpoint folder with {META} or a run folder "
                          "with checkpoints/latest (a run that never reached a checkpoint cannot be resumed)")


def verify(ckpt: Path) -> dict:
    """Check completeness and checksums; return the metadata. Raises CheckpointError otherwise."""
    meta_path = ckpt / META
    if not meta_path.exists():
        raise CheckpointError(f"{ckpt} is incomplete: {META} is missing (interrupted while writing?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, OSError) as e:  # not JSON, not text (json.JSONDecodeError and UnicodeDecodeError are ValueErrors)
        raise CheckpointError(f"{meta_path} is corrupt: {e}") from e
    present = {p.name for p in ckpt.iterdir()}
    if present != set(FILES):
        missing, extra = sorted(set(FILES) - present), sorted(present - set(FILES))
        raise CheckpointError(f"{ckpt} is not a checkpoint this code wrote: "
                              + (f"missing {missing} (interrupted while writing?) " if missing else "")
                              + (f"unexpected {extra} (a checkpoint holds exactly {list(FILES)}; nothing else "
                                 "is read, and pickled files are never loaded)" if extra else ""))
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), dict) or set(meta["sha256"]) != set(FILES[:-1]) \
            or not isinstance(meta.get("iteration"), int) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{meta_path} does not list the iteration, the config and the sha256 of {list(FILES[:-1])}")
    for name, digest in meta["sha256"].items():
        if sha256_file(ckpt / name) != digest:
            raise CheckpointError(f"{ckpt / name} is corrupt: its sha256 does not match {META}")
    return meta
