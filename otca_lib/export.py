"""Export a trained LoRA adapter in diffusers' format, for use outside this repository.

    python -m otca_lib.export RUN_OR_CHECKPOINT --out DIR

writes DIR/pytorch_lora_weights.safetensors (with the adapter's rank and alpha as metadata) through the pipeline
class's own ``save_lora_weights``, so that a stock pipeline of the base model samples as the trained policy:

    pipe = StableDiffusion3Pipeline.from_pretrained(BASE); pipe.load_lora_weights(DIR)

Only LoRA runs export (``lora_rank > 0``; a full fine-tune's weights are the checkpoint's trainable.safetensors),
and only single-transformer pipelines (not Wan 2.2's two experts). The ShapesWorld models predict x0 (families
sd3-x0 / wan-x0), which a stock pipeline would read as a velocity: their adapters export, but sample through
this repository's policy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import checkpoint
from .commands import command
from .config import Config
from .policy import WanExperts, load_policy


def export_lora(ckpt: str | Path, out: str | Path) -> Path:
    """Write the adapter of a run (its latest checkpoint) or of a checkpoint folder to `out`. -> the weights file."""
    from peft.utils import get_peft_model_state_dict

    path = checkpoint.resolve(ckpt)
    cfg = Config(**checkpoint.verify(path)["config"])
    if cfg.lora_rank == 0:
        raise ValueError(f"{path} trained every transformer weight (lora_rank=0): there is no adapter to export; "
                         f"the trained weights are {path / checkpoint.TRAINABLE} (safetensors, the transformer's names)")
    policy = load_policy(cfg.family, cfg.model, dtype=getattr(torch, cfg.dtype), lora_rank=cfg.lora_rank,
                         lora_alpha=cfg.lora_alpha or None, keep_reference=False)
    if isinstance(policy.unwrapped, WanExperts):
        raise ValueError("exporting the adapters of Wan 2.2's two experts is not supported")
    checkpoint.load_trainable(policy, path / checkpoint.TRAINABLE)
    layers = get_peft_model_state_dict(policy.unwrapped)
    metadata = policy.unwrapped.peft_config["default"].to_dict()
    metadata = {k: sorted(v) if isinstance(v, set) else v for k, v in metadata.items()}  # (JSON: no sets)
    out = Path(out)
    type(policy.pipeline).save_lora_weights(out, transformer_lora_layers=layers, transformer_lora_adapter_metadata=metadata)
    return out / "pytorch_lora_weights.safetensors"


@command
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.export", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a training run folder (its latest checkpoint) or a checkpoint folder")
    ap.add_argument("--out", required=True, help="folder for pytorch_lora_weights.safetensors")
    a = ap.parse_args(argv)
    print(f"wrote {export_lora(a.checkpoint, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
