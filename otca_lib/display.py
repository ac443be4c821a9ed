"""Display helpers shared by the notebooks: images as matplotlib grids, numbers as aligned text tables.

Pixels are float in [0, 1], one image (3, H, W) or a batch (N, 3, H, W), as ``policy.decode`` returns them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch


def show(x: torch.Tensor):
    """(3, H, W) pixels in [0, 1] -> an (H, W, 3) array for imshow."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def image_grid(pixels: torch.Tensor, rows: int, cols: int, titles=None, row_labels=None, size: float = 1.3,
               suptitle: str | None = None, fontsize: int = 7) -> None:
    """Show pixels (N, 3, H, W) row by row on a rows x cols grid (empty cells blank), a title over each image."""
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.7, size * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if i < len(pixels):
            ax.imshow(show(pixels[i]), interpolation="nearest")
            if titles is not None and titles[i]:
                ax.set_title(titles[i], fontsize=fontsize)
        else:
            ax.axis("off")
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, fontsize=fontsize + 1)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    plt.show()


def short(prompt: str) -> str:
    """A ShapesWorld image caption on two lines, for a title: 'large striped red circle\\ncenter'."""
    return prompt.removeprefix("a ").replace(" at the ", "\n")


def fmt(v) -> str:
    """A table cell: floats with 4 decimals, or in scientific notation when below 0.01 (and not 0)."""
    if not isinstance(v, float):
        return str(v)
    return f"{v:.2e}" if v != 0 and abs(v) < 1e-2 else f"{v:.4f}"


def print_table(header: list, rows: list) -> None:
    """Print rows under a header, right-aligned columns of at least 9 characters."""
    widths = [max(len(str(h)), 9) for h in header]
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(f"{fmt(v):>{w}}" for v, w in zip(row, widths)))


def gif_html(path, label: str, width: int = 256) -> str:
    """An inline, pixelated animated GIF with a caption, for IPython.display.HTML (GIFs animate in JupyterLab)."""
    import base64
    from pathlib import Path

    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<figure style="display:inline-block;margin:4px"><img src="data:image/gif;base64,{data}" '
            f'width={width} style="image-rendering:pixelated"><figcaption>{label}</figcaption></figure>')


def step_weight_heatmap(W, title: str = "") -> None:
    """Show step credit W [iterations, steps] (compare.step_weights): rows iterations, columns denoising steps,
    untrained steps blank; uniform GRPO would be a flat 1."""
    fig, ax = plt.subplots(figsize=(6, 3))
    im = ax.imshow(W, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("denoising step t (0 = pure noise)"), ax.set_ylabel("iteration"), ax.set_title(title, fontsize=9)
    fig.colorbar(im, label="step weight")
    plt.show()
