"""ShapesWorld level 1 (docs/shapesworld.md): geometry, captions, prompt split, and the spec's reward calibration."""
import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from otca_lib import shapesworld as sw
from otca_lib.rewards import REWARDS as LIBRARY_REWARDS, build_rewards, reward

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CAPTIONS = [sw.caption_image(c, s, z, p) for c in sw.COLORS for s in sw.SHAPES for z in sw.SIZES for p in sw.POSITIONS]
VIDEO_CAPTIONS = [sw.caption_video(c, s, z, d) for c in sw.COLORS for s in sw.SHAPES for z in sw.SIZES for d in sw.DIRECTIONS]
IMAGE_REWARDS = ["sw_color", "sw_shape", "sw_position", "sw_size", "sw_alignment", "sw_quality", "sw_aesthetic"]
VIDEO_REWARDS = ["sw_color", "sw_shape", "sw_size", "sw_alignment", "sw_quality", "sw_aesthetic", "sw_motion", "sw_consistency"]
AREA = {("circle", "small"): 52, ("circle", "large"): 156, ("square", "small"): 64, ("square", "large"): 196,
        ("triangle", "small"): 40, ("triangle", "large"): 112}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """ShapesWorld tensors are small: one thread is as fast as two and immune to a busy neighbour on the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scores(pixels, captions, names):
    fns = build_rewards(names)
    return reward(fns, pixels, captions)


@pytest.fixture(scope="module")
def images():
    return sw.render_batch(IMAGE_CAPTIONS)


@pytest.fixture(scope="module")
def videos():  # every caption twice: the centred track and a seeded start
    return torch.cat([sw.render_batch(VIDEO_CAPTIONS), sw.render_batch(VIDEO_CAPTIONS, seed=100)]), VIDEO_CAPTIONS * 2


def composite(*specs):
    img = np.full((32, 32, 3), 235, np.uint8)
    for color, shape, size, position in specs:
        img[sw._shape_mask(shape, sw.SIZES[size], *sw.POSITIONS[position])] = sw.COLORS[color]
    return img


# ------------------------------------------------------------------------------------------- geometry
def test_render_geometry_follows_the_centring_rule():
    for color, shape, size, pos in itertools.product(sw.COLORS, sw.SHAPES, sw.SIZES, sw.POSITIONS):
        img = sw.render_image(color, shape, size, pos)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        fg = np.any(img != sw.BACKGROUND, -1)
        assert set(map(tuple, img[fg])) == {sw.COLORS[color]} and set(map(tuple, img[~fg])) == {sw.BACKGROUND}
        (cx, cy), s = sw.POSITIONS[pos], sw.SIZES[size]
        ys, xs = np.nonzero(fg)
        assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (cx - s // 2, cx + s // 2, cy - s // 2, cy + s // 2)
        assert fg.sum() == AREA[shape, size]
        cols = [j for j in range(32) if 0 <= 2 * cx - 1 - j < 32]
        assert (fg[:, cols] == fg[:, [2 * cx - 1 - j for j in cols]]).all()  # symmetric about x = cx
    tri = np.any(sw.render_image("red", "triangle", "large", "center") != sw.BACKGROUND, -1)[9:23]
    assert tri.sum(1).tolist() == [2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14]  # apex up, base at the bottom
    with pytest.raises(ValueError, match="unknown color"):
        sw.render_image("pink", "circle", "small", "top")


def test_video_tracks_stay_inside_and_move_two_pixels_per_frame():
    for color, shape, size, direction in itertools.product(["blue"], sw.SHAPES, sw.SIZES, sw.DIRECTIONS):
        starts = set()
        for start in [None, *range(12)]:
            track = sw.video_track(size, direction, start)
            starts.add(track[0])
            s, (dx, dy) = sw.SIZES[size], sw.DIRECTIONS[direction]
            assert all(s // 2 <= x <= 32 - s // 2 and s // 2 <= y <= 32 - s // 2 for x, y in track)
            assert all((b[0] - a[0], b[1] - a[1]) == (2 * dx, 2 * dy) for a, b in zip(track, track[1:]))
            video = sw.render_video(color, shape, size, direction, start)
            assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
            for frame, (x, y) in zip(video, track):
                np.testing.assert_array_equal(frame, sw._draw(color, shape, size, x, y))
        assert len(starts) > 3  # seeds spread the starts
    assert sw.video_track("large", "right") == [(9 + 2 * f, 16) for f in range(8)]
    assert sw.video_track("small", "up", 7) == sw.video_track("small", "up", 7)
    with pytest.raises(ValueError, match="outside the canvas"):
        sw.render_video("red", "circle", "large", "right", start=(16, 16))


def test_captions_round_trip_and_bad_captions_are_clear_errors():
    for cap in IMAGE_CAPTIONS + VIDEO_CAPTIONS:
        p = sw.parse_caption(cap)
        make = sw.caption_image if p["kind"] == "image" else sw.caption_video
        assert make(p["color"], p["shape"], p["size"], p.get("position", p.get("direction"))) == cap
    assert sw.parse_caption("a large red circle at the top left") == {
        "kind": "image", "size": "large", "color": "red", "shape": "circle", "position": "top left"}
    for bad in ["a huge red circle at the top", "a red circle", "", "a large red circle at the middle",
                "a large red circle moving sideways", "a large red circle at the top moving up", None]:
        with pytest.raises(ValueError, match="outside the ShapesWorld grammar"):
            sw.parse_caption(bad)


def test_render_batch_layout():
    x = sw.render_batch(IMAGE_CAPTIONS[:3])
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    v = sw.render_batch(VIDEO_CAPTIONS[:2], seed=0)
    assert v.shape == (2, 3, 8, 32, 32)
    np.testing.assert_array_equal((v[1, :, 3].permute(1, 2, 0) * 255).round().byte().numpy(),
                                  sw.render_video(*[sw.parse_caption(VIDEO_CAPTIONS[1])[k] for k in ("color", "shape", "size", "direction")], 1)[3])
    with pytest.raises(ValueError, match="all-image or all-video"):
        sw.render_batch(IMAGE_CAPTIONS[:1] + VIDEO_CAPTIONS[:1])


# -------------------------------------------------------------------------------------------- prompts
def test_prompt_files_are_the_regenerated_split(tmp_path):
    paths = sw.write_prompt_files(tmp_path)
    for p in paths:
        assert (ROOT / "data" / "prompts" / p.name).read_bytes() == p.read_bytes(), f"{p.name}: rerun --write-prompts"
    for kind, where, n_combos, n_test in [("image", "position", 162, 24), ("video", "direction", 72, 11)]:
        files = {s: (tmp_path / f"shapesworld_{kind}_{s}.txt").read_text().splitlines() for s in ("train", "test")}
        combos = {s: {(c["color"], c["shape"], c[where]) for c in map(sw.parse_caption, files[s])} for s in files}
        assert not combos["train"] & combos["test"]
        assert len(combos["test"]) == n_test and len(combos["train"]) + n_test == n_combos
        assert combos["test"] == sw.held_out(kind)
        for s in files:  # every size of every combination, no duplicates, all the right kind
            assert len(files[s]) == len(set(files[s])) == 2 * len(combos[s])
            assert {sw.parse_caption(c)["kind"] for c in files[s]} == {kind}


def test_cli_renders_png_gif_and_writes_prompts(tmp_path):
    sw.main(["--render", "a small green triangle at the bottom right", "--out", str(tmp_path / "a.png")])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png").convert("RGB")),
                                  sw.render_image("green", "triangle", "small", "bottom right"))
    sw.main(["--render", "a large purple circle moving up", "--out", str(tmp_path / "v.gif"), "--seed", "3"])
    gif = Image.open(tmp_path / "v.gif")
    assert gif.n_frames == 8
    np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), sw.render_video("purple", "circle", "large", "up", 3)[0])
    sw.main(["--write-prompts", str(tmp_path / "p")])
    assert len(list((tmp_path / "p").glob("shapesworld_*.txt"))) == 4


# ---------------------------------------------------------------------------------------- calibration
def test_renders_score_high_on_their_own_captions(images, videos):
    r = scores(images, IMAGE_CAPTIONS, IMAGE_REWARDS)
    for name in IMAGE_REWARDS[:-1]:  # aesthetic is a prompt-independent taste, high only for large centred shapes
        assert r[name].min() >= 0.95, (name, IMAGE_CAPTIONS[int(r[name].argmin())])
    v, caps = videos
    r = scores(v, caps, VIDEO_REWARDS)
    for name in VIDEO_REWARDS:
        if name != "sw_aesthetic":
            assert r[name].min() >= 0.95, (name, caps[int(r[name].argmin())])
    assert all(x.dtype == torch.float32 and x.shape == (len(caps),) for x in r.values())


def swap(caption, attribute, offset):
    p = sw.parse_caption(caption)
    values = list({"color": sw.COLORS, "shape": sw.SHAPES, "size": sw.SIZES, "position": sw.POSITIONS}[attribute])
    p[attribute] = values[(values.index(p[attribute]) + offset) % len(values)]
    return sw.caption_image(p["color"], p["shape"], p["size"], p["position"])


@pytest.mark.parametrize("attribute,n_values", [("color", 6), ("shape", 3), ("size", 2), ("position", 9)])
def test_a_wrong_attribute_lowers_exactly_that_score(images, attribute, n_values):
    names = ["sw_color", "sw_shape", "sw_size", "sw_position", "sw_quality", "sw_aesthetic"]
    right = scores(images, IMAGE_CAPTIONS, names + ["sw_alignment"])
    for offset in range(1, n_values):
        wrong = scores(images, [swap(c, attribute, offset) for c in IMAGE_CAPTIONS], names + ["sw_alignment"])
        assert wrong[f"sw_{attribute}"].max() <= 0.25 and (right[f"sw_{attribute}"] - wrong[f"sw_{attribute}"]).min() >= 0.7
        assert (right["sw_alignment"] - wrong["sw_alignment"]).min() >= 0.17
        for name in names:
            if name != f"sw_{attribute}":
                torch.testing.assert_close(wrong[name], right[name])


def test_wrong_direction_and_static_videos_score_low_on_motion(videos):
    v, caps = videos
    right = [c for c in caps if c.endswith("moving right")]
    x = v[[i for i, c in enumerate(caps) if c.endswith("moving right")]]
    r = scores(x, right, ["sw_motion", "sw_direction"])
    assert r["sw_motion"].min() >= 0.95 and r["sw_direction"].min() == 1
    for other in ("left", "up", "down"):
        w = scores(x, [c.replace("right", other) for c in right], ["sw_motion", "sw_direction"])
        assert w["sw_motion"].max() <= 0.05 and w["sw_direction"].max() == 0
    static = x[:, :, :1].expand_as(x).contiguous()
    s = scores(static, right, ["sw_motion", "sw_consistency", "sw_direction"])
    assert s["sw_motion"].max() <= 0.05 and s["sw_consistency"].min() >= 0.95  # consistency is not motion
    assert s["sw_direction"].max() == 0                                        # a static video has no direction


def test_jumping_or_changing_videos_score_low_on_consistency(videos):
    v, caps = videos
    g = torch.Generator().manual_seed(0)
    jumping = torch.stack([x[:, torch.randperm(8, generator=g)] for x in v])  # same frames, shuffled
    assert scores(jumping, caps, ["sw_consistency"])["sw_consistency"].max() < 0.3
    for attribute, values in (("color", list(sw.COLORS)), ("shape", list(sw.SHAPES)), ("size", list(sw.SIZES))):
        changed = []
        for cap in VIDEO_CAPTIONS:
            p = sw.parse_caption(cap)
            a = sw.render_video(p["color"], p["shape"], p["size"], p["direction"])
            p[attribute] = values[(values.index(p[attribute]) + 1) % len(values)]
            a[1::2] = sw.render_video(p["color"], p["shape"], p["size"], p["direction"])[1::2]
            changed.append(a)
        c = scores(sw.to_pixels(np.stack(changed)), VIDEO_CAPTIONS, ["sw_consistency"])["sw_consistency"]
        assert c.max() < 0.3, attribute


def test_noise_blank_and_several_blobs_score_low_on_quality():
    rng = np.random.default_rng(0)
    bad = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    bad += [np.clip(235 + rng.normal(0, s, (32, 32, 3)), 0, 255).astype(np.uint8) for s in (10, 30, 60)]
    bad += [np.full((32, 32, 3), v, np.uint8) for v in (235, 200, 0)] + [np.full((32, 32, 3), sw.COLORS["red"], np.uint8)]
    bad += [composite(("red", "square", "small", "top left"), ("red", "square", "small", "center")),
            composite(("red", "square", "small", "top left"), ("red", "square", "small", "top right")),
            composite(("red", "circle", "small", "left"), ("blue", "circle", "small", "center")),
            composite(("red", "circle", "small", "left"), ("red", "circle", "small", "center")),
            composite(("red", "square", "large", "center"), ("red", "square", "small", "top left")),
            composite(("green", "triangle", "large", "top left"), ("green", "triangle", "large", "bottom right")),
            composite(("red", "square", "small", "top left"), ("green", "triangle", "small", "bottom"),
                      ("blue", "circle", "small", "right"))]
    q = scores(sw.to_pixels(np.stack(bad)), [IMAGE_CAPTIONS[0]] * len(bad), ["sw_quality"])["sw_quality"]
    assert q.max() < 0.3, q


def test_ragged_textured_blurred_and_speckled_shapes_lose_quality():
    rng = np.random.default_rng(1)
    out = {}
    for shape, size in itertools.product(sw.SHAPES, sw.SIZES):
        img = sw.render_image("orange", shape, size, "center")
        fg = np.any(img != 235, -1)
        p = np.pad(fg, 1)
        near = np.stack([p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        ragged = img.copy()  # a fifth of the edge pixels flipped in and out
        ragged[fg & ~near.all(0) & (rng.random(fg.shape) < 0.2)] = 235
        ragged[~fg & near.any(0) & (rng.random(fg.shape) < 0.2)] = sw.COLORS["orange"]
        textured = np.clip(img + fg[..., None] * rng.normal(0, 12, (32, 32, 1)), 0, 255).astype(np.uint8)
        f = img.astype(float)
        blurred = (sum(np.roll(np.roll(f, i, 0), j, 1) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9).round().astype(np.uint8)
        specks = img.copy()
        specks[[2, 29, 27], [3, 4, 28]] = [(50, 90, 220), (20, 20, 20), (240, 130, 40)]
        for kind, x in (("ragged", ragged), ("textured", textured), ("blurred", blurred), ("specks", specks)):
            out.setdefault(kind, []).append(x)
    for kind, imgs in out.items():
        q = scores(sw.to_pixels(np.stack(imgs)), [IMAGE_CAPTIONS[0]] * len(imgs), ["sw_quality"])["sw_quality"]
        assert q.max() < 0.5, (kind, q)


def test_small_noise_changes_no_score_by_more_than_005(images, videos):
    g = torch.Generator().manual_seed(0)
    for x, caps, names in ((images, IMAGE_CAPTIONS, IMAGE_REWARDS), (videos[0], videos[1], VIDEO_REWARDS)):
        noisy = (x + torch.randn(x.shape, generator=g) * 2 / 255).clamp(0, 1)
        clean, dirty = scores(x, caps, names), scores(noisy, caps, names)
        for name in names:
            assert (clean[name] - dirty[name]).abs().max() <= 0.05, name


def test_aesthetic_prefers_large_centred_and_conflicts_with_alignment():
    for color, shape in itertools.product(sw.COLORS, sw.SHAPES):
        caps = [sw.caption_image(color, shape, "large", "center")] + [sw.caption_image(color, shape, "small", p)
                                                                      for p in ("top left", "top right", "bottom left", "bottom right")]
        a = scores(sw.render_batch(caps), caps, ["sw_aesthetic"])["sw_aesthetic"]
        assert (a[0] > a[1:] + 0.3).all()
    caps = [sw.caption_image("red", "circle", z, p) for z in sw.SIZES for p in sw.POSITIONS]
    x, prompt = sw.render_batch(caps), ["a small red circle at the top left"] * len(caps)
    r = scores(x, prompt, ["sw_alignment", "sw_aesthetic"])
    assert caps[int(r["sw_alignment"].argmax())] == "a small red circle at the top left"
    assert caps[int(r["sw_aesthetic"].argmax())] == "a large red circle at the center"


# --------------------------------------------------------------------------------- interface, errors
def test_registry_and_not_applicable_objectives(images, videos):
    names = {"sw_color", "sw_shape", "sw_position", "sw_size", "sw_alignment", "sw_quality", "sw_aesthetic",
             "sw_motion", "sw_consistency", "sw_direction"}
    assert set(sw.REWARDS) == names and names <= set(LIBRARY_REWARDS)
    v, caps = videos
    with pytest.raises(ValueError, match="needs a caption with a position"):
        scores(v[:2], caps[:2], ["sw_position"])
    with pytest.raises(ValueError, match="scores videos"):
        scores(images[:2], IMAGE_CAPTIONS[:2], ["sw_motion"])
    with pytest.raises(ValueError, match="needs video captions"):
        scores(v[:1], IMAGE_CAPTIONS[:1], ["sw_motion"])
    with pytest.raises(ValueError, match="outside the ShapesWorld grammar"):
        scores(images[:1], ["a cat"], ["sw_color"])
    with pytest.raises(ValueError, match="32, 32"):
        scores(torch.zeros(1, 3, 64, 64), IMAGE_CAPTIONS[:1], ["sw_color"])
    with pytest.raises(ValueError, match="2 prompts for 1 samples"):
        scores(images[:1], IMAGE_CAPTIONS[:2], ["sw_color"])
    # a video with image captions: the image objectives, position included, averaged over frames
    still = images[:3].unsqueeze(2).expand(-1, -1, 4, -1, -1)
    r, s = scores(still, IMAGE_CAPTIONS[:3], IMAGE_REWARDS), scores(images[:3], IMAGE_CAPTIONS[:3], IMAGE_REWARDS)
    for name in IMAGE_REWARDS:
        torch.testing.assert_close(r[name], s[name])
    blank = torch.full((2, 3, 32, 32), 235 / 255)  # nothing drawn: every objective is 0
    assert all(x.max() < 1e-3 for x in scores(blank, IMAGE_CAPTIONS[:2], IMAGE_REWARDS).values())


def test_rewards_are_fast_on_a_batch_of_64(images, videos):
    x, caps = images[:64].clone(), IMAGE_CAPTIONS[:64]
    v, vcaps = videos[0][::4][:64].clone(), videos[1][::4][:64]
    assert len(x) == len(v) == 64
    fns = build_rewards(sorted(sw.REWARDS))
    best = [float("inf"), float("inf")]
    for _ in range(3):
        for k, (p, c, names) in enumerate(((x, caps, IMAGE_REWARDS), (v, vcaps, VIDEO_REWARDS))):
            p = p + 0  # a fresh tensor: no shared measurement from an earlier call
            t = time.perf_counter()
            reward({n: fns[n] for n in names}, p, c)
            best[k] = min(best[k], time.perf_counter() - t)
    assert best[0] < 0.5 and best[1] < 0.5, best
