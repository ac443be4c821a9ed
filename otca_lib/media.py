"""Writing and reading samples as files: PNG for images, animated GIF for videos, tiled grids, sample folders.

Pixels everywhere are float in [0, 1]: images (B, 3, H, W), videos (B, 3, F, H, W). Files hold 8-bit RGB;
the conversion is round(255 x) after clamping, the same one the JPEG reward uses (rewards.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FRAME_MS = 125  # GIF frame duration: 8 frames per second, a ShapesWorld video in one second


def uint8_frames(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) or (B, 3, F, H, W) in [0, 1] -> (B, F, H, W, 3) uint8 on the CPU (F = 1 for images)."""
    if pixels.ndim == 4:
        pixels = pixels.unsqueeze(2)
    return (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()


def save_frames(frames: np.ndarray, path: Path, scale: int = 1) -> Path:
    """Write (F, H, W, 3) uint8 frames: one frame as a still (PNG), several as a looping GIF. scale: nearest-
    neighbour upscaling factor. -> path."""
    from PIL import Image

    ims = [Image.fromarray(np.kron(f, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else f) for f in frames]
    if len(ims) == 1:
        ims[0].save(path)
    else:
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=FRAME_MS, loop=0)
    return Path(path)


def grid(pixels: torch.Tensor, cols: int = 8) -> torch.Tensor:
    """Tile samples row by row, `cols` a row, on white: (F, rows H, cols W, 3) uint8 (F = 1 for images)."""
    frames = uint8_frames(pixels)                                # (B, F, H, W, 3)
    B, F, H, W, C = frames.shape
    cols = min(cols, B)
    rows = -(-B // cols)
    out = torch.full((F, rows * H, cols * W, C), 255, dtype=torch.uint8)
    for i in range(B):
        r, c = divmod(i, cols)
        out[:, r * H:(r + 1) * H, c * W:(c + 1) * W] = frames[i]
    return out


def save_grid(pixels: torch.Tensor, path: Path, cols: int = 8) -> Path:
    """Tile samples into one file (grid): path.png for images, path.gif for videos. -> the file."""
    tiles = grid(pixels, cols)
    return save_frames(tiles.numpy(), Path(path).with_suffix(".png" if tiles.shape[0] == 1 else ".gif"))


def write_samples(pixels: torch.Tensor, prompts: list[str], seeds: list[int], out: Path) -> Path:
    """One file per sample (PNG per image; GIF plus a .npy array (3, F, H, W) in [0, 1] per video) and
    index.json [{file, prompt, seed}]. -> the index."""
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for i, (frames, px, prompt, seed) in enumerate(zip(uint8_frames(pixels).numpy(), pixels, prompts, seeds)):
        name = f"{i:05d}.png" if px.ndim == 3 else f"{i:05d}.gif"
        save_frames(frames, out / name)
        if px.ndim == 4:  # the GIF is for eyes; scoring reads the exact array
            np.save(out / f"{i:05d}.npy", px.cpu().numpy())
        index.append({"file": name, "prompt": prompt, "seed": seed})
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return out / "index.json"


def read_samples(folder: Path) -> tuple[torch.Tensor, list[str]]:
    """Pixels and prompts of a folder written by write_samples (videos from their .npy arrays)."""
    from PIL import Image

    if not (folder / "index.json").is_file():
        raise FileNotFoundError(f"{folder / 'index.json'} not found: give a folder written by python -m otca_lib.sample")
    index = json.loads((folder / "index.json").read_text())
    pix = []
    for row in index:
        f = folder / row["file"]
        if f.suffix == ".gif":
            pix.append(torch.from_numpy(np.load(f.with_suffix(".npy"))).float())
        else:
            pix.append(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255)
    return torch.stack(pix), [row["prompt"] for row in index]
