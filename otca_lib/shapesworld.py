"""ShapesWorld level 1: renderer, caption grammar, prompt split and exact rewards (spec v1).

The contract is ``docs/shapesworld.md``; this module adds only what the page leaves open:

- Pixel grid: pixel (row y, column x) covers the unit square [x, x + 1) x [y, y + 1), its centre is
  (x + 0.5, y + 0.5). A bounding box of even size s centred on the grid point (cx, cy) covers
  [cx - s/2, cx + s/2) x [cy - s/2, cy + s/2), i.e. pixel columns cx - s/2 ... cx + s/2 - 1 (same for
  rows); its centre is exactly (cx, cy), so the positions 8, 16, 24 are symmetric on the 32 px canvas.
- Fill (solid, one flat color, no anti-aliasing): square = the whole box; circle = the pixels whose
  centre lies within s/2 of (cx, cy); triangle (apex (cx, top), base corners (cx -+ s/2, top + s)) =
  the pixels with |x + 0.5 - cx| <= (y + 1 - top) / 2, the triangle's half-width at the row's lower
  edge, so row k of the box holds a centred run of 2 (k // 2 + 1) pixels (2 at the apex, s at the base).
  All three shapes span their full s x s box.
- Video: the box centre moves 2 px per frame; ``start`` is the frame-0 centre: None = the track
  centred on the canvas (e.g. x = 9 ... 23 moving right, y = 16); an int = a seeded (SHA-256) choice
  among the integer starts that keep the box inside over all 8 frames; or an explicit (x, y).
- Prompt split: the held-out (color, shape, position) and (color, shape, direction) combinations are
  the round(15 %) with the smallest SHA-256 of ``shapesworld-v1/split/{SPLIT_SEED}/{kind}/{c} {s} {p}``
  (no RNG, so byte-identical everywhere); both sizes of a held-out combination are test prompts.

Rewards (``REWARDS``, registered in otca_lib.rewards; each ``fn(pixels, prompts) -> [B]`` on 32 x 32 pixels in
[0, 1], vectorised) read the object through a soft mask m = clip((|rgb - background| - 0.2) / 0.25, 0, 1) (every
palette color is >= 0.75 from the background, its 50 % blend >= 0.37). A column (row) is occupied by
clip(mass - 1, 0, 1): one stray pixel does not count, two count fully. The object's box is centred on the
occupancy-weighted mean and as wide (high) as the occupancy sum: on a render, exactly the drawn box. Scores are
continuous in the pixels and 1 on renders (except sw_aesthetic, a taste). Videos average the image objectives
over frames; video captions have no position (sw_position raises, sw_alignment averages the other three).
Rewards called in turn on the same tensor share one measurement (a one-entry cache keyed on the tensor).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F_

H = W = 32
FRAMES = 8
SPEED = 2  # px per frame
BACKGROUND = (235, 235, 235)
COLORS = {"red": (220, 50, 50), "green": (50, 170, 70), "blue": (50, 90, 220),
          "yellow": (235, 200, 40), "purple": (150, 70, 190), "orange": (240, 130, 40)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 8, "large": 14}
POSITIONS = {"top left": (8, 8), "top": (16, 8), "top right": (24, 8), "left": (8, 16), "center": (16, 16),
             "right": (24, 16), "bottom left": (8, 24), "bottom": (16, 24), "bottom right": (24, 24)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.15


def _check(**values):
    for what, value in values.items():
        allowed = {"color": COLORS, "shape": SHAPES, "size": SIZES, "position": POSITIONS, "direction": DIRECTIONS}[what]
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; ShapesWorld {what}s: {list(allowed)}")


# ----------------------------------------------------------------------------------------- rendering
def _shape_mask(shape: str, s: int, cx: int, cy: int) -> np.ndarray:
    """bool (H, W): the pixels of `shape` whose s x s box is centred on (cx, cy) (module docstring)."""
    y, x = np.mgrid[0:H, 0:W]
    left, top = cx - s // 2, cy - s // 2
    box = (x >= left) & (x < left + s) & (y >= top) & (y < top + s)
    if shape == "square":
        return box
    if shape == "circle":
        return box & ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= (s / 2) ** 2)
    return box & (np.abs(x + 0.5 - cx) <= (y + 1 - top) / 2)


def _draw(color: str, shape: str, size: str, cx: int, cy: int) -> np.ndarray:
    _check(color=color, shape=shape, size=size)
    img = np.full((H, W, 3), BACKGROUND, np.uint8)
    img[_shape_mask(shape, SIZES[size], cx, cy)] = COLORS[color]
    return img


def render_image(color: str, shape: str, size: str, position: str) -> np.ndarray:
    """The spec's image: uint8 (32, 32, 3)."""
    _check(position=position)
    return _draw(color, shape, size, *POSITIONS[position])


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def video_track(size: str, direction: str, start=None) -> list[tuple[int, int]]:
    """Box centres of the FRAMES frames. start: None (centred track), an int seed, or an (x, y) tuple."""
    _check(size=size, direction=direction)
    half, (dx, dy), travel = SIZES[size] // 2, DIRECTIONS[direction], SPEED * (FRAMES - 1)
    valid = range(half, W - half + 1)  # centres whose box lies inside the canvas

    def starts(d):  # frame-0 coordinates that keep every frame inside
        return [c for c in valid if c + d * travel in valid]

    if start is None:
        x0, y0 = 16 - dx * travel // 2, 16 - dy * travel // 2
    elif isinstance(start, (int, np.integer)) and not isinstance(start, bool):
        xs, ys = starts(dx), starts(dy)
        x0 = xs[_hash(f"shapesworld-v1/start/{start}/x") % len(xs)]
        y0 = ys[_hash(f"shapesworld-v1/start/{start}/y") % len(ys)]
    else:
        x0, y0 = (int(v) for v in start)
        if x0 not in starts(dx) or y0 not in starts(dy):
            raise ValueError(f"start {start} leaves the {size} shape's box outside the canvas while moving {direction}")
    return [(x0 + dx * SPEED * f, y0 + dy * SPEED * f) for f in range(FRAMES)]


def render_video(color: str, shape: str, size: str, direction: str, start=None) -> np.ndarray:
    """The spec's video: uint8 (8, 32, 32, 3); `start` as in :func:`video_track`."""
    return np.stack([_draw(color, shape, size, x, y) for x, y in video_track(size, direction, start)])


def to_pixels(arrays, device=None) -> torch.Tensor:
    """uint8 images (B, H, W, 3) -> (B, 3, H, W), or videos (B, F, H, W, 3) -> (B, 3, F, H, W); float in [0, 1]."""
    x = torch.as_tensor(np.asarray(arrays), device=device).float() / 255
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(0, 4, 1, 2, 3)


def render_batch(captions, seed=None, device=None) -> torch.Tensor:
    """Render captions (all image or all video) in the library layout; video i starts from seed + i (None: centred)."""
    caps = [parse_caption(c) for c in captions]
    kinds = {c["kind"] for c in caps}
    if len(kinds) != 1:
        raise ValueError(f"render_batch needs all-image or all-video captions, got kinds {sorted(kinds)}")
    if kinds == {"image"}:
        arr = [render_image(c["color"], c["shape"], c["size"], c["position"]) for c in caps]
    else:
        arr = [render_video(c["color"], c["shape"], c["size"], c["direction"], None if seed is None else seed + i)
               for i, c in enumerate(caps)]
    return to_pixels(np.stack(arr), device)


# ------------------------------------------------------------------------------------------ captions
def caption_image(color: str, shape: str, size: str, position: str) -> str:
    _check(color=color, shape=shape, size=size, position=position)
    return f"a {size} {color} {shape} at the {position}"


def caption_video(color: str, shape: str, size: str, direction: str) -> str:
    _check(color=color, shape=shape, size=size, direction=direction)
    return f"a {size} {color} {shape} moving {direction}"


_CAPTION = re.compile(r"a ({}) ({}) ({}) (?:at the ({})|moving ({}))".format(
    *("|".join(map(re.escape, names)) for names in (SIZES, COLORS, SHAPES, POSITIONS, DIRECTIONS))))


def parse_caption(caption: str) -> dict:
    """'a large red circle at the top left' -> {kind: 'image', size, color, shape, position};
    'a small blue square moving up' -> {kind: 'video', size, color, shape, direction}. ValueError otherwise."""
    m = _CAPTION.fullmatch(caption.strip()) if isinstance(caption, str) else None
    if m is None:
        raise ValueError(
            f"caption {caption!r} is outside the ShapesWorld grammar 'a {{size}} {{color}} {{shape}} at the {{position}}' "
            f"or 'a {{size}} {{color}} {{shape}} moving {{direction}}' (sizes {list(SIZES)}, colors {list(COLORS)}, "
            f"shapes {list(SHAPES)}, positions {list(POSITIONS)}, directions {list(DIRECTIONS)})")
    out = {"size": m[1], "color": m[2], "shape": m[3]}
    out.update({"kind": "image", "position": m[4]} if m[4] else {"kind": "video", "direction": m[5]})
    return out


# --------------------------------------------------------------------------------------------- split
def held_out(kind: str) -> set:
    """The held-out (color, shape, position) combinations (kind 'image') or (color, shape, direction) ('video')."""
    where = {"image": POSITIONS, "video": DIRECTIONS}[kind]
    combos = [(c, s, p) for c in COLORS for s in SHAPES for p in where]
    ranked = sorted(combos, key=lambda t: _hash(f"shapesworld-v1/split/{SPLIT_SEED}/{kind}/{t[0]} {t[1]} {t[2]}"))
    return set(ranked[:round(HELD_OUT_FRACTION * len(combos))])


def prompts(kind: str, split: str) -> list[str]:
    """Prompts of `split` ('train' or 'test'), canonical order (color, shape, position/direction, size)."""
    test, where = held_out(kind), {"image": POSITIONS, "video": DIRECTIONS}[kind]
    make = caption_image if kind == "image" else caption_video
    return [make(c, s, z, p) for c in COLORS for s in SHAPES for p in where for z in SIZES
            if ((c, s, p) in test) == (split == "test")]


def write_prompt_files(folder) -> list[Path]:
    """Write shapesworld_{image,video}_{train,test}.txt into `folder` (one prompt a line); -> the paths."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = {Path(folder) / f"shapesworld_{k}_{s}.txt": (k, s) for k in ("image", "video") for s in ("train", "test")}
    for path, (kind, split) in paths.items():
        path.write_bytes(("\n".join(prompts(kind, split)) + "\n").encode())
    return list(paths)


# ------------------------------------------------------------------------------------------ features
T0, T1 = 0.2, 0.45  # soft foreground mask thresholds on the distance to the background
DELTA = 0.03  # dead zone of the quality residuals (sensor-like noise of std 2/255 stays below it)
J_MAX = 0.21  # largest dispersion (var_x + var_y) / area of a clean single shape (renders: <= 0.192)
EPS = 1e-6


def _span(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) bounds -> (N, n): the length of pixel [i, i + 1) inside [lo, hi), continuous in the bounds."""
    i = torch.arange(n, device=lo.device, dtype=lo.dtype)
    return (torch.minimum(i + 1, hi[:, None]) - torch.maximum(i, lo[:, None])).clamp(0, 1)


def _cover(m, rows, cols):
    return torch.einsum("nhw,nh,nw->n", m, rows, cols)


def _features(x: torch.Tensor) -> dict:
    """Per-frame measurements of (N, 3, H, W) frames in [0, 1] (see the module docstring)."""
    n, _, h_, w_ = x.shape
    bg = torch.tensor(BACKGROUND, device=x.device, dtype=x.dtype) / 255
    d = x - bg.view(1, 3, 1, 1)
    dbg = (d * d).sum(1).sqrt()
    m = ((dbg - T0) / (T1 - T0)).clamp(0, 1)
    colm, rowm = m.sum(1), m.sum(2)
    area = colm.sum(1)
    ox, oy = (colm - 1).clamp(0, 1), (rowm - 1).clamp(0, 1)
    w, h = ox.sum(1), oy.sum(1)
    cx, cy = torch.arange(w_, device=x.device) + 0.5, torch.arange(h_, device=x.device) + 0.5
    xc = ((ox * cx).sum(1) + EPS * w_ / 2) / (w + EPS)
    yc = ((oy * cy).sum(1) + EPS * h_ / 2) / (h + EPS)
    x0, x1, y0, y1 = xc - w / 2, xc + w / 2, yc - h / 2, yc + h / 2
    ry, rx = _span(y0 - 1, y1 + 1, h_), _span(x0 - 1, x1 + 1, w_)
    dil = ry[:, :, None] * rx[:, None, :]  # the box + 1 px
    mb = m * dil  # the object without the specks
    wc = mb * dbg.clamp(max=1) ** 4  # color weights: strong pixels count most (robust to blended edges)
    mu = torch.einsum("nhw,nchw->nc", wc, x) / (wc.sum((1, 2))[:, None] + EPS)
    cols, rows = _span(x0, x1, w_), _span(y0, y1, h_)
    sides = _span(x0, x0 + w / 4, w_) + _span(x1 - w / 4, x1, w_)
    top, bottom = _span(y0, y0 + h / 4, h_), _span(y1 - h / 4, y1, h_)

    def coverage(r, c):
        return _cover(m, r, c) / (r.sum(1) * c.sum(1) + EPS)

    shape = torch.stack([coverage(top, sides), coverage(bottom, sides), coverage(rows, cols),
                         _cover(m, _span(y0, yc, h_), cols) / (_cover(m, rows, cols) + EPS)], 1)
    # quality measurements
    ab = mb.sum((1, 2))
    specks = area - ab
    n_dil = ry.sum(1) * rx.sum(1)
    bg_err = ((1 - dil) * (dbg - DELTA).relu()).sum((1, 2)) / (h_ * w_ - n_dil + EPS)
    dm = mu - bg
    r2 = dbg * dbg - 2 * torch.einsum("nchw,nc->nhw", d, dm) + (dm * dm).sum(1)[:, None, None]
    resid = torch.minimum(dbg, r2.clamp(min=0).sqrt())  # distance to the nearer of background and object color
    obj_err = (dil * (resid - DELTA).relu()).sum((1, 2)) / (n_dil + EPS)
    mp = F_.pad(mb, (1, 1, 1, 1))
    tv = (mp[:, 1:] - mp[:, :-1]).abs().sum((1, 2)) + (mp[:, :, 1:] - mp[:, :, :-1]).abs().sum((1, 2))
    ragged = (tv - 2 * (w + h)).relu() / (2 * (w + h) + EPS)
    sx = (2 * xc[:, None] - cx) * 2 / w_ - 1  # mirror about the box centre (grid_sample coordinates)
    grid = torch.stack([sx[:, None, :].expand(n, h_, w_), (cy * 2 / h_ - 1)[None, :, None].expand(n, h_, w_)], -1)
    mirror = F_.grid_sample(mb[:, None], grid.to(x.dtype), align_corners=False)[:, 0]
    asym = (mb - mirror).abs().sum((1, 2)) / (2 * ab + EPS)
    pxb, pyb = mb.sum(1), mb.sum(2)
    mx, my = (pxb * cx).sum(1) / (ab + EPS), (pyb * cy).sum(1) / (ab + EPS)
    spread = ((pxb * (cx - mx[:, None]) ** 2).sum(1) + (pyb * (cy - my[:, None]) ** 2).sum(1)) / (ab + EPS) ** 2
    return dict(presence=((area - 4) / 12).clamp(0, 1), area=area, w=w, h=h, xc=xc, yc=yc, mu=mu, shape=shape,
                specks=specks, bg_err=bg_err, obj_err=obj_err, ragged=ragged, spread=spread, asym=asym,
                d=d, dbg=dbg, mb=mb, dil=dil, n_dil=n_dil)  # (the last five: maps that level 2 measures further)


_PROTOS: dict = {}


def _prototypes(device) -> torch.Tensor:
    """(3 shapes, 2 sizes, 4) shape features of the renders at the centre (computed once per device)."""
    key = str(device)
    if key not in _PROTOS:
        imgs = np.stack([render_image("red", s, z, "center") for s in SHAPES for z in SIZES])
        _PROTOS[key] = _features(to_pixels(imgs, device))["shape"].view(len(SHAPES), len(SIZES), -1)
    return _PROTOS[key]


_LAST_MEASURED: list = [None, None, None]  # weak reference to the last pixels, their key, their features


def _frame_features(pixels: torch.Tensor, prompts, parse=None, measure=None) -> tuple[dict, list, int, int]:
    """-> features of every frame (N = B F), parsed captions, B, F. `parse` (default :func:`parse_caption`) and
    `measure` (default :func:`_features`) let ShapesWorld level 2 reuse this with its grammar and measurements."""
    parse, measure = parse or parse_caption, measure or _features
    if pixels.ndim not in (4, 5) or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (H, W):
        raise ValueError(f"ShapesWorld rewards take (B, 3, 32, 32) images or (B, 3, F, 32, 32) videos, got {tuple(pixels.shape)}")
    B, F = pixels.shape[0], pixels.shape[2] if pixels.ndim == 5 else 1
    if len(prompts) != B:
        raise ValueError(f"{len(prompts)} prompts for {B} samples")
    caps = [parse(p) for p in prompts]
    try:  # the rewards of one batch share one measurement: a one-entry cache on the tensor object and version
        key = (pixels._version, pixels.data_ptr(), tuple(pixels.shape), pixels.dtype, pixels.device, measure)
    except RuntimeError:  # inference-mode tensors have no version counter
        key = None
    if key is None or _LAST_MEASURED[0] is None or _LAST_MEASURED[0]() is not pixels or _LAST_MEASURED[1] != key:
        x = pixels.float() if pixels.ndim == 5 else pixels.float().unsqueeze(2)
        _LAST_MEASURED[:] = [weakref.ref(pixels) if key else None, key, measure(x.transpose(1, 2).reshape(B * F, 3, *x.shape[3:]))]
    return _LAST_MEASURED[2], caps, B, F


def _index(caps, key, names, F, device, reward):
    try:
        idx = [list(names).index(c[key]) for c in caps]
    except KeyError:
        raise ValueError(f"{reward} needs a caption with a {key}; video captions have a direction and no position, "
                         f"image captions a position and no direction (got {[c for c in caps if key not in c][0]})") from None
    return torch.tensor(idx, device=device).repeat_interleave(F)


def _ratio(d: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d (N, K) distances to K classes -> d_other / (d_target + d_other), d_other = nearest other class."""
    dt = d.gather(1, target[:, None])[:, 0]
    do = d.scatter(1, target[:, None], float("inf")).min(1).values
    return do / (dt + do + EPS)


def _soft(p: torch.Tensor) -> torch.Tensor:
    """1 / (1 + p + p^2 / 2): exp(-p) near 0 (p >= 0), but a polynomial tail that keeps GRPO a signal between bad samples."""
    return 1 / (1 + p + p * p / 2)


def _color(f, caps, F):
    """Color: the object's color (the mean of its pixels weighted by mask x distance-to-background^4, so blended
    edges count little) is compared with each palette color's segment from its 50 % blend with the background to
    the full color (blur and halos do not move it off the segment); score = d_other / (d_target + d_other), with
    d_other the distance to the nearest other palette color: 1 on the color, 0.5 halfway, 0 on another palette
    color; times presence. Gamed by an object whose weighted mean is right: a two-color object, or a pale tint
    down to the 50 % blend (sw_quality penalises mixed colors, sw_aesthetic pale ones)."""
    bg = torch.tensor(BACKGROUND, device=f["mu"].device, dtype=f["mu"].dtype) / 255
    e = torch.tensor(list(COLORS.values()), device=bg.device, dtype=bg.dtype) / 255 - bg  # (6, 3)
    dm = f["mu"] - bg
    t = (dm @ e.T / (e * e).sum(1)).clamp(0.5, 1)
    d = (dm[:, None] - t[..., None] * e).norm(dim=-1)
    return f["presence"] * _ratio(d, _index(caps, "color", COLORS, F, bg.device, "sw_color"))


def _shape(f, caps, F):
    """Shape: four size-invariant coverages inside the object's box (of its top corner quarters, of its bottom
    corner quarters, of the whole box, and the share of its mass in the top half: square 1/1/1/.5, circle
    .25/.25/.81/.5 (small) .27/.27/.80/.5 (large), triangle 0/1/.63/.3 and 0/.88/.57/.29) are compared with the
    renders' (nearest size) as d_other / (d_target + d_other); times presence. Corner coverage keeps 8 px circles,
    which pixelate toward squares, well apart from squares. Gamed by any blob with those coverages (an octagon
    for a circle, a notched or textured shape: sw_quality penalises the latter)."""
    d = (f["shape"][:, None, None] - _prototypes(f["shape"].device)[None]).norm(dim=-1).min(-1).values  # (N, 3)
    return f["presence"] * _ratio(d, _index(caps, "shape", SHAPES, F, d.device, "sw_shape"))


def _size(f, caps, F):
    """Size: e = sqrt(box width x height), width (height) = the occupied columns (rows); score = 1 - |ln(e / s)| /
    ln(14 / 8) clipped to [0, 1], s = 8 or 14 px: 1 at the prompted size, 0 at the other, 0.5 halfway on a log
    scale; times presence. Gamed by any mass spanning that box, e.g. an outline or a sparse cloud (sw_quality)."""
    sizes = torch.tensor(list(SIZES.values()), device=f["w"].device, dtype=f["w"].dtype)
    extent = (f["w"] * f["h"]).clamp(min=EPS).sqrt()
    target = sizes[_index(caps, "size", SIZES, F, sizes.device, "sw_size")]
    return f["presence"] * (1 - (extent / target).log().abs() / math.log(14 / 8)).clamp(0, 1)


def _position(f, caps, F):
    """Position (image captions): soft(d^2 / (2 x 4^2)), d = distance (px) of the object's box centre to the
    prompted grid point and soft(p) = 1 / (1 + p + p^2 / 2) (exp(-p) near 0, a long tail): 1 on the point, 0.62 at
    4 px, 0.2 on a neighbouring grid point, 0.08 diagonally, > 0 anywhere; times presence. A video caption has no
    position: ValueError (a video with image captions gets the mean over frames). Gamed by mass spread
    symmetrically around the point, e.g. two blobs (sw_quality penalises several blobs)."""
    grid = torch.tensor(list(POSITIONS.values()), device=f["xc"].device, dtype=f["xc"].dtype)
    target = grid[_index(caps, "position", POSITIONS, F, grid.device, "sw_position")]
    return f["presence"] * _soft(((f["xc"] - target[:, 0]) ** 2 + (f["yc"] - target[:, 1]) ** 2) / (2 * 4.0 ** 2))


def _alignment(f, caps, F):
    """Text alignment: the mean of sw_color, sw_shape, sw_size and sw_position for image captions, of sw_color,
    sw_shape and sw_size for video captions (they have no position). Gamed as its parts are; it ignores how clean
    the image is (pair it with sw_quality)."""
    parts = [_color(f, caps, F), _shape(f, caps, F), _size(f, caps, F)]
    if any("position" in c for c in caps):
        parts.append(_position(f, caps, F))  # ValueError on a batch that mixes image and video captions
    return torch.stack(parts).mean(0)


def _quality(f, caps, F):
    """Visual quality (prompt-independent): presence x visible background (the mask covers <= 40 % of the canvas;
    0 at >= 60 %) x soft(penalty), penalty = specks (mask mass outside the object's box + 1 px) / 4 + background
    error (mean distance to the background color beyond 0.03, outside the box) / 0.01 + object residual (mean
    distance of the box's pixels to the nearer of background and object color beyond 0.03: texture, blur, halos,
    other colors) / 0.02 + 6 x raggedness (total variation of the mask in excess of the 2 (w + h) of an
    orthogonally convex shape: notches, holes, bumps) + left-right asymmetry (all three shapes are symmetric) / 0.1
    + dispersion beyond one compact shape ((var_x + var_y) / area - 0.21) / 0.05 + |ln(w / h)| / ln 2. Exactly 1
    on renders; noise, blank and several-blob images ~0, one speck ~0.7, visibly ragged, textured or blurred
    shapes < 0.5. Gamed by any crisp, flat, symmetric blob in a square box: it does not read the prompt."""
    cover = ((0.6 - f["area"] / (H * W)) / 0.2).clamp(0, 1)
    aspect = (f["w"].clamp(min=1) / f["h"].clamp(min=1)).log().abs() / math.log(2)
    penalty = (f["specks"] / 4 + f["bg_err"] / 0.01 + f["obj_err"] / 0.02 + 6 * f["ragged"] + f["asym"] / 0.1
               + (f["spread"] - J_MAX).relu() / 0.05 + aspect)
    return f["presence"] * cover * _soft(penalty)


def _aesthetic(f, caps, F):
    """Aesthetic (prompt-independent taste, spec): presence x (0.4 size + 0.4 centrality + 0.2 saturation), size =
    clip((e - 4) / 10, 0, 1) of the box extent e, centrality = exp(-d^2 / (2 x 8^2)) with d the box centre's
    distance to the canvas centre, saturation = HSV saturation of the object color. Large centred renders score
    0.93-0.97, small corner ones 0.43-0.47: on such prompts it deliberately pulls against alignment. Gamed by a
    big saturated blob in the middle, whatever the prompt."""
    size = (((f["w"] * f["h"]).clamp(min=0).sqrt() - 4) / 10).clamp(0, 1)
    centre = torch.exp(-((f["xc"] - 16) ** 2 + (f["yc"] - 16) ** 2) / (2 * 8.0 ** 2))
    hi, lo = f["mu"].max(1).values, f["mu"].min(1).values
    return f["presence"] * (0.4 * size + 0.4 * centre + 0.2 * (hi - lo) / (hi + EPS))


def _frame_mean_reward(score, prefix="sw", parse=None, measure=None):
    """A reward fn(pixels, prompts) -> [B] named prefix + score's name, from a per-frame score; videos get the
    mean over their frames. (`parse`, `measure`: as in :func:`_frame_features`.)"""
    def fn(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
        f, caps, B, F = _frame_features(pixels, prompts, parse, measure)
        return score(f, caps, F).view(B, F).mean(1).float()
    fn.__name__, fn.__doc__ = prefix + score.__name__, score.__doc__ + "\n    Videos: the mean over frames."
    return fn


sw_color, sw_shape, sw_size, sw_position, sw_alignment, sw_quality, sw_aesthetic = map(
    _frame_mean_reward, (_color, _shape, _size, _position, _alignment, _quality, _aesthetic))


def _video(pixels, prompts, reward):
    if pixels.ndim != 5:
        raise ValueError(f"{reward} scores videos (B, 3, F, H, W), got {tuple(pixels.shape)}")
    f, caps, B, F = _frame_features(pixels, prompts)
    p = f["presence"].view(B, F)
    c = torch.stack([f["xc"], f["yc"]], -1).view(B, F, 2)
    t = torch.arange(F, device=p.device, dtype=p.dtype)[None].expand(B, F)
    ps = p.sum(1, keepdim=True) + EPS
    tbar, cbar = (p * t).sum(1, keepdim=True) / ps, (p[..., None] * c).sum(1, keepdim=True) / ps[..., None]
    dt = t - tbar
    v = (p[..., None] * dt[..., None] * (c - cbar)).sum(1) / ((p * dt ** 2).sum(1, keepdim=True) + EPS)  # px / frame
    return f, caps, B, F, p, c, dt, cbar, v


def sw_motion(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
    """Motion alignment (videos): the track of box centres is fit by weighted least squares (weights = presence
    per frame) to a velocity v; with u the prompted direction, score = mean presence x clip(v.u / 2, 0, 1) x
    exp(-(|v - (v.u) u| / 2)^2): 1 at >= 2 px/frame in the prompted direction, 0 when static or moving the other
    way, lowered by sideways drift. Speed above the spec's 2 px/frame is not penalised. Gamed by any moving
    mass, e.g. a blob that changes shape or color while drifting (sw_consistency catches that)."""
    f, caps, B, F, p, c, dt, cbar, v = _video(pixels, prompts, "sw_motion")
    if not all("direction" in k for k in caps):
        raise ValueError("sw_motion needs video captions 'a {size} {color} {shape} moving {direction}'")
    u = torch.tensor([DIRECTIONS[k["direction"]] for k in caps], device=v.device, dtype=v.dtype)
    par = (v * u).sum(1)
    perp = (v - par[:, None] * u).norm(dim=1)
    return (p.mean(1) * (par / SPEED).clamp(0, 1) * torch.exp(-(perp / SPEED) ** 2)).float()


def sw_consistency(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
    """Temporal consistency (videos, prompt-independent): min presence over frames x soft((track rms / 0.5 px)^2
    + (color sd / 0.05)^2 + (log-size sd / 0.1)^2 + (shape-feature sd / 0.1)^2), where the track rms is the
    residual of the box centres around their least-squares straight line at constant speed (jumps, jitter,
    acceleration), the sd are across frames and soft(p) = 1 / (1 + p + p^2 / 2). 1 on renders, < 0.1 on shuffled
    frames or frames that change color, shape or size. Gamed by a video that does not change at all (a static
    one scores 1: pair it with sw_motion)."""
    f, caps, B, F, p, c, dt, cbar, v = _video(pixels, prompts, "sw_consistency")
    ps = p.sum(1) + EPS

    def sd(z):  # (B, F, K) -> presence-weighted sd over frames
        zbar = (p[..., None] * z).sum(1, keepdim=True) / ps[:, None, None]
        return ((p[..., None] * (z - zbar) ** 2).sum((1, 2)) / ps).sqrt()

    track = sd(c - cbar - v[:, None] * dt[..., None])
    size = sd(torch.stack([f["w"], f["h"]], -1).clamp(min=1).log().view(B, F, 2))
    pen = (track / 0.5) ** 2 + (sd(f["mu"].view(B, F, 3)) / 0.05) ** 2 + (size / 0.1) ** 2 + (sd(f["shape"].view(B, F, -1)) / 0.1) ** 2
    return (p.min(1).values * _soft(pen)).float()


def sw_direction(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
    """Motion-direction accuracy (videos), a 0/1 metric: 1 when the least-squares velocity v of the track (as in
    sw_motion) is at least 0.5 px/frame and its nearest of the four directions is the prompted one. Chance is
    0.25 for a model that moves in a random direction. Being binary it is a poor reward (no signal within a group
    that agrees); train on sw_motion and report this. Gamed as sw_motion is."""
    f, caps, B, F, p, c, dt, cbar, v = _video(pixels, prompts, "sw_direction")
    if not all("direction" in k for k in caps):
        raise ValueError("sw_direction needs video captions 'a {size} {color} {shape} moving {direction}'")
    names = list(DIRECTIONS)
    units = torch.tensor([DIRECTIONS[n] for n in names], device=v.device, dtype=v.dtype)   # (4, 2)
    want = torch.tensor([names.index(k["direction"]) for k in caps], device=v.device)
    moving = v.norm(dim=1) >= 0.5
    return (moving & ((v @ units.T).argmax(1) == want)).float()


# name -> factory(device) -> fn(pixels, prompts) -> [B] float32 on the pixels' device (otca_lib.rewards registers them)
REWARDS = {fn.__name__: (lambda fn: lambda device: fn)(fn) for fn in (
    sw_color, sw_shape, sw_position, sw_size, sw_alignment, sw_quality, sw_aesthetic, sw_motion, sw_consistency,
    sw_direction)}
# the objectives of each kind of sample, in REWARDS' order: videos have no position, images no motion
OBJECTIVES = {"image": [k for k in REWARDS if k not in ("sw_motion", "sw_consistency", "sw_direction")],
              "video": [k for k in REWARDS if k != "sw_position"]}
# the attribute scores whose mean is sw_alignment, per kind (its docstring)
ALIGNMENT_PARTS = {"image": ["sw_color", "sw_shape", "sw_size", "sw_position"],
                   "video": ["sw_color", "sw_shape", "sw_size"]}


# ---------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.shapesworld", description="ShapesWorld level 1 tools.")
    ap.add_argument("--write-prompts", metavar="DIR", help="(re)write the four prompt files into DIR")
    ap.add_argument("--render", metavar="CAPTION", help="render a caption (image -> PNG, video -> GIF)")
    ap.add_argument("--out", metavar="FILE", help="output file of --render")
    ap.add_argument("--seed", type=int, default=None, help="video start seed (default: the centred track)")
    ap.add_argument("--scale", type=int, default=1, help="nearest-neighbour upscaling factor of --render")
    a = ap.parse_args(argv)
    if not (a.write_prompts or a.render):
        ap.error("nothing to do: give --write-prompts DIR and/or --render CAPTION --out FILE")
    if a.write_prompts:
        for path in write_prompt_files(a.write_prompts):
            print(f"wrote {path}")
    if a.render:
        from .media import save_frames

        try:
            c = parse_caption(a.render)
        except ValueError as e:
            ap.error(str(e))
        if not a.out or (c["kind"] == "video") != a.out.lower().endswith(".gif"):
            ap.error("--render needs --out FILE: a .png for an image caption, a .gif for a video caption")
        frames = (render_image(c["color"], c["shape"], c["size"], c["position"])[None] if c["kind"] == "image"
                  else render_video(c["color"], c["shape"], c["size"], c["direction"], a.seed))
        save_frames(frames, a.out, a.scale)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
