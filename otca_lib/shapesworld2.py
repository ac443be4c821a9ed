"""ShapesWorld level 2 (images): level 1 plus a fill pattern, the objective that is settled late.

The contract is ``docs/shapesworld.md`` (section "Level 2"); level 1 (``otca_lib/shapesworld.py``) is unchanged
and this module reuses its canvas, palette, shapes, sizes, positions, split and measurements.

- Pattern: ``solid``, ``striped`` or ``checkered``. A patterned shape alternates, with a period of 2 px, the
  palette color c and its tint c - TINT (c - background) (85 % of the way from the background to c): striped =
  the canvas rows y odd are tinted (horizontal stripes), checkered = the pixels with x + y odd. Every tint stays
  >= 0.66 from the background, so level 1's object mask (and with it shape, size and position) reads a patterned
  shape as the solid one; level 1's color score is unchanged too (the tint lies on the segment it accepts).
- Why it should be late: the pattern's signal is +-TINT / 2 |c - bg| per pixel (about +-0.06 in [0, 1]); summed
  over the 50-200 pixels of a shape it rises above the sampler's noise only at low noise levels, while color,
  shape and position (signals of about 0.8 per pixel) are visible near noise 1. Measured, not assumed:
  ``bench/step_importance.py`` (data/README.md; TINT 0.3 was settled at noise 0.57, too early).
- Caption: ``a {size} {pattern} {color} {shape} at the {position}``, e.g. ``a large striped red circle at the
  top left``. Pretraining captions may omit the size, the pattern and the position (:func:`caption`), as
  alt-text mostly does; prompts and rewards always use the full caption.
- Split: level 1's held-out (color, shape, position) combinations, with both sizes and all three patterns
  (24 x 2 x 3 = 144 test prompts; 138 x 6 = 828 training prompts).

Rewards (``REWARDS``, ``fn(pixels, prompts) -> [B]`` on (B, 3, 32, 32) images in [0, 1]):
``sw2_color``, ``sw2_shape``, ``sw2_size``, ``sw2_position`` are level 1's scores read from level-2 captions;
``sw2_pattern`` (below); ``sw2_alignment`` the mean of those five; ``sw2_quality`` level 1's quality with the
object residual measured against the two tones of the object's color (so a crisp pattern is not a defect, while
blur, halos, noise and other colors still are); ``sw2_aesthetic`` a taste for large, central, saturated and
plain shapes (it pulls against alignment on small / corner prompts, as level 1's does, and against patterns).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F_

from . import shapesworld as sw

PATTERNS = ("solid", "striped", "checkered")
OMITTABLE = ("size", "pattern", "position")  # what a pretraining caption may leave out (:func:`caption`)
TINT = 0.15  # a tinted pixel is c - TINT (c - background); 0.3 was settled too early (data/README.md)
# dead zone of the pattern amplitudes and of their distances to the renders' (the renders of two patterns are only
# ~0.07 apart): pixel noise of std 2/255 gives amplitudes of ~0.003 on a small shape
PATTERN_DEAD = 0.01
LAMBDA = (0.6, 1.15)  # sw2_quality accepts object pixels on the segment from 0.6 to 1.15 of the object color


def _pattern_field(pattern: str) -> np.ndarray:
    """bool (H, W): the pixels a pattern tints (canvas coordinates, so the phase does not depend on the position)."""
    y, x = np.mgrid[0:sw.H, 0:sw.W]
    return {"solid": np.zeros((sw.H, sw.W), bool), "striped": y % 2 == 1, "checkered": (x + y) % 2 == 1}[pattern]


def _check(pattern: str) -> None:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; ShapesWorld level-2 patterns: {list(PATTERNS)}")


def render_image(color: str, shape: str, size: str, pattern: str, position: str) -> np.ndarray:
    """The level-2 image: uint8 (32, 32, 3)."""
    _check(pattern)
    img = sw.render_image(color, shape, size, position)
    bg, c = np.array(sw.BACKGROUND, float), np.array(sw.COLORS[color], float)
    tinted = sw._shape_mask(shape, sw.SIZES[size], *sw.POSITIONS[position]) & _pattern_field(pattern)
    img[tinted] = np.round(c - TINT * (c - bg)).astype(np.uint8)
    return img


def caption(color: str, shape: str, size: str, pattern: str, position: str, omit=()) -> str:
    """'a large striped red circle at the top left'; `omit` drops any of 'size', 'pattern', 'position'."""
    sw._check(color=color, shape=shape, size=size, position=position)
    _check(pattern)
    words = ["a", None if "size" in omit else size, None if "pattern" in omit else pattern, color, shape]
    text = " ".join(w for w in words if w)
    return text if "position" in omit else f"{text} at the {position}"


_CAPTION = re.compile(r"a ({}) ({}) ({}) ({}) at the ({})".format(
    *("|".join(map(re.escape, names)) for names in (sw.SIZES, PATTERNS, sw.COLORS, sw.SHAPES, sw.POSITIONS))))


def parse_caption(text: str) -> dict:
    """'a large striped red circle at the top left' -> {kind: 'image', size, pattern, color, shape, position}."""
    m = _CAPTION.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"caption {text!r} is outside the ShapesWorld level-2 grammar 'a {{size}} {{pattern}} {{color}} {{shape}} "
            f"at the {{position}}' (sizes {list(sw.SIZES)}, patterns {list(PATTERNS)}, colors {list(sw.COLORS)}, "
            f"shapes {list(sw.SHAPES)}, positions {list(sw.POSITIONS)})")
    return {"kind": "image", "size": m[1], "pattern": m[2], "color": m[3], "shape": m[4], "position": m[5]}


def render_batch(captions, device=None) -> torch.Tensor:
    """Render full level-2 captions -> (B, 3, 32, 32) float in [0, 1]."""
    caps = [parse_caption(c) for c in captions]
    arr = [render_image(c["color"], c["shape"], c["size"], c["pattern"], c["position"]) for c in caps]
    return sw.to_pixels(np.stack(arr), device)


def prompts(split: str) -> list[str]:
    """Level-2 prompts of `split` ('train' or 'test'), order (color, shape, position, size, pattern)."""
    test = sw.held_out("image")
    return [caption(c, s, z, q, p) for c in sw.COLORS for s in sw.SHAPES for p in sw.POSITIONS for z in sw.SIZES
            for q in PATTERNS if ((c, s, p) in test) == (split == "test")]


def write_prompt_files(folder) -> list:
    """Write shapesworld2_image_{train,test}.txt into `folder`; -> the paths."""
    from pathlib import Path

    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "test"):
        path = Path(folder) / f"shapesworld2_image_{split}.txt"
        path.write_bytes(("\n".join(prompts(split)) + "\n").encode())
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------ measurements
def _features(x: torch.Tensor) -> dict:
    """Level 1's measurements of (N, 3, H, W) frames plus the pattern amplitudes and the two-tone residual.

    tone t = <x - bg, mu - bg> / |mu - bg|^2 per pixel (1 on the object color, 0 on the background); on the
    object's interior (its mask eroded by one pixel, so edges do not count) with weights w, the amplitude of the
    pattern field P (+-1 per pixel) is |sum w (t - tbar) P| / sum w, for stripes P = (-1)^y and checks
    P = (-1)^(x + y), less a dead zone of PATTERN_DEAD: about TINT / 2 - 0.01 on a render with that pattern, 0 on
    a solid one."""
    f = sw._features(x)
    d, mb, mu, dbg, dil = f["d"], f["mb"], f["mu"], f["dbg"], f["dil"]
    bg = torch.tensor(sw.BACKGROUND, device=x.device, dtype=x.dtype) / 255
    dm = mu - bg
    tone = torch.einsum("nchw,nc->nhw", d, dm) / ((dm * dm).sum(1)[:, None, None] + sw.EPS)
    p = F_.pad(mb, (1, 1, 1, 1))
    w = mb * p[:, :-2, 1:-1] * p[:, 2:, 1:-1] * p[:, 1:-1, :-2] * p[:, 1:-1, 2:]
    ws = w.sum((1, 2)) + sw.EPS
    dev = tone - ((w * tone).sum((1, 2)) / ws)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(sw.H, device=x.device), torch.arange(sw.W, device=x.device), indexing="ij")
    fields = torch.stack([(-1.0) ** yy, (-1.0) ** (xx + yy)]).to(x.dtype)              # (2, H, W)
    amplitude = torch.einsum("nhw,khw->nk", w * dev, fields).abs() / ws[:, None]       # (N, 2): stripes, checks
    f["pattern"] = (amplitude - PATTERN_DEAD).relu()
    # the distance of each pixel to the nearer of the background and the segment of tones LAMBDA x (mu - bg)
    lam = tone.clamp(*LAMBDA)
    to_segment = (d - lam[:, None] * dm[:, :, None, None]).norm(dim=1)
    resid = torch.minimum(dbg, to_segment)
    f["obj_err"] = (dil * (resid - sw.DELTA).relu()).sum((1, 2)) / (f["n_dil"] + sw.EPS)
    return f


_PROTOS: dict = {}


def _prototypes(device) -> torch.Tensor:
    """(3 patterns, 3 shapes x 2 sizes, 2) pattern amplitudes of the renders at the centre (once per device)."""
    key = str(device)
    if key not in _PROTOS:
        imgs = np.stack([render_image("red", s, z, q, "center") for q in PATTERNS for s in sw.SHAPES for z in sw.SIZES])
        _PROTOS[key] = _features(sw.to_pixels(imgs, device))["pattern"].view(len(PATTERNS), -1, 2)
    return _PROTOS[key]


def _pattern_distances(f) -> torch.Tensor:
    """(N, 3): distance of the measured amplitudes to the nearest render of each pattern, less a dead zone of
    PATTERN_DEAD (the patterns' renders are only ~0.07 apart, so pixel noise would otherwise move the scores)."""
    protos = _prototypes(f["pattern"].device).to(f["pattern"].dtype)
    return ((f["pattern"][:, None, None] - protos[None]).norm(dim=-1).min(-1).values - PATTERN_DEAD).relu()


def _pattern(f, caps, F):
    """Pattern: the measured (stripe, check) amplitudes are compared with those of the renders of each pattern (any
    shape and size) as d_other / (d_target + d_other), d_other the nearest other pattern: 1 on the prompted
    pattern, 0.5 halfway (e.g. stripes at half contrast for a 'striped' prompt), 0 on another; times presence.
    Gamed by any two-tone fill with the right period, e.g. stripes of another color (sw2_quality catches that)."""
    idx = sw._index(caps, "pattern", PATTERNS, F, f["pattern"].device, "sw2_pattern")
    return f["presence"] * sw._ratio(_pattern_distances(f), idx)


def _alignment(f, caps, F):
    """Text alignment: the mean of sw2_color, sw2_shape, sw2_size, sw2_position and sw2_pattern."""
    parts = [sw._color(f, caps, F), sw._shape(f, caps, F), sw._size(f, caps, F), sw._position(f, caps, F),
             _pattern(f, caps, F)]
    return torch.stack(parts).mean(0)


def _quality(f, caps, F):
    """Visual quality (prompt-independent): level 1's sw_quality with the object residual measured against the
    two tones of the object color (the distance of each pixel of the box to the nearer of the background and the
    segment from 0.6 to 1.15 times the object color, seen from the background): a crisp solid or patterned shape
    scores 1; blur halos (below 60 % of the color), noise, specks and other colors still lower it."""
    return sw._quality(f, caps, F)


def _aesthetic(f, caps, F):
    """Aesthetic (prompt-independent taste): presence x (0.35 size + 0.35 centrality + 0.15 saturation + 0.15
    plainness), the first three as in level 1's sw_aesthetic, plainness = the pattern score of 'solid'. Large
    central solid renders score about 0.95, small patterned corner ones about 0.3: it pulls against alignment
    on small, corner and patterned prompts."""
    size = (((f["w"] * f["h"]).clamp(min=0).sqrt() - 4) / 10).clamp(0, 1)
    centre = torch.exp(-((f["xc"] - 16) ** 2 + (f["yc"] - 16) ** 2) / (2 * 8.0 ** 2))
    hi, lo = f["mu"].max(1).values, f["mu"].min(1).values
    plain = sw._ratio(_pattern_distances(f), torch.zeros_like(f["w"], dtype=torch.long))
    return f["presence"] * (0.35 * size + 0.35 * centre + 0.15 * (hi - lo) / (hi + sw.EPS) + 0.15 * plain)


_SCORES = (sw._color, sw._shape, sw._size, sw._position, _pattern, _alignment, _quality, _aesthetic)
sw2_color, sw2_shape, sw2_size, sw2_position, sw2_pattern, sw2_alignment, sw2_quality, sw2_aesthetic = (
    sw._frame_mean_reward(score, "sw2", parse_caption, _features) for score in _SCORES)

# name -> factory(device) -> fn(pixels, prompts) -> [B] (otca_lib.rewards registers them)
REWARDS = {fn.__name__: (lambda fn: lambda device: fn)(fn) for fn in (
    sw2_color, sw2_shape, sw2_position, sw2_size, sw2_pattern, sw2_alignment, sw2_quality, sw2_aesthetic)}
OBJECTIVES = {"image": list(REWARDS)}  # level 2 has images only
ALIGNMENT_PARTS = {"image": ["sw2_color", "sw2_shape", "sw2_size", "sw2_position", "sw2_pattern"]}  # their mean: sw2_alignment
