"""ShapesWorld level 2: the pattern renderer, grammar, split and the calibration of the level-2 rewards."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from otca_lib import pretrain, shapesworld as sw, shapesworld2 as sw2
from otca_lib.rewards import REWARDS

ROOT = Path(__file__).resolve().parents[1]
ALL = sw2.prompts("train") + sw2.prompts("test")


@pytest.fixture(scope="module")
def renders():
    return sw2.render_batch(ALL)


def scores(pixels, captions):
    return {k: fn("cpu")(pixels, captions) for k, fn in sw2.REWARDS.items()}


def test_patterns_alternate_the_color_and_its_tint_with_a_period_of_two_pixels():
    solid = sw2.render_image("blue", "square", "large", "solid", "center").astype(int)
    striped = sw2.render_image("blue", "square", "large", "striped", "center").astype(int)
    checked = sw2.render_image("blue", "square", "large", "checkered", "center").astype(int)
    box = (slice(9, 23), slice(9, 23))   # the large square at the centre: columns and rows 9 ... 22
    c, bg = np.array(sw.COLORS["blue"]), np.array(sw.BACKGROUND)
    tint = np.round(c - sw2.TINT * (c - bg))
    assert (solid[box] == c).all()
    assert (striped[box][0::2] == tint).all() and (striped[box][1::2] == c).all()   # rows 9, 11, ... (odd): tinted
    yy, xx = np.mgrid[9:23, 9:23]
    assert (checked[box][(xx + yy) % 2 == 1] == tint).all() and (checked[box][(xx + yy) % 2 == 0] == c).all()
    outside = np.ones((32, 32), bool)
    outside[box] = False
    assert (striped[outside] == bg).all() and (checked[outside] == bg).all()


def test_captions_round_trip_omit_words_and_refuse_level_one_captions():
    text = sw2.caption("red", "circle", "large", "striped", "top left")
    assert text == "a large striped red circle at the top left"
    assert sw2.parse_caption(text) == {"kind": "image", "size": "large", "pattern": "striped", "color": "red",
                                       "shape": "circle", "position": "top left"}
    assert sw2.caption("red", "circle", "large", "striped", "top left", omit=("size", "pattern", "position")) == "a red circle"
    assert sw2.caption("red", "circle", "large", "solid", "top", omit=("pattern",)) == "a large red circle at the top"
    with pytest.raises(ValueError, match="level-2 grammar"):
        sw2.parse_caption("a large red circle at the top left")
    with pytest.raises(ValueError, match="unknown pattern"):
        sw2.render_image("red", "circle", "large", "dotted", "top")


def test_prompt_files_are_the_regenerated_split_of_level_one(tmp_path):
    for path in sw2.write_prompt_files(tmp_path):
        assert path.read_bytes() == (ROOT / "data/prompts" / path.name).read_bytes()
    train, test = sw2.prompts("train"), sw2.prompts("test")
    assert (len(train), len(test)) == (828, 144)
    combo = lambda c: (lambda a: (a["color"], a["shape"], a["position"]))(sw2.parse_caption(c))  # noqa: E731
    assert {combo(c) for c in test} == sw.held_out("image") and not {combo(c) for c in train} & sw.held_out("image")


def test_renders_score_high_on_their_own_captions_and_level_one_reads_them_as_solid(renders):
    r = scores(renders, ALL)
    for k, v in r.items():
        if k != "sw2_aesthetic":
            assert float(v.min()) >= 0.95, (k, float(v.min()))
    level1 = [sw.caption_image(a["color"], a["shape"], a["size"], a["position"]) for a in map(sw2.parse_caption, ALL)]
    for k in ("sw_color", "sw_shape", "sw_size", "sw_position"):
        assert float(REWARDS[k]("cpu")(renders, level1).min()) >= 0.95, k


def test_a_wrong_pattern_lowers_exactly_the_pattern_score(renders):
    swap = {"solid": "striped", "striped": "checkered", "checkered": "solid"}
    wrong = [sw2.caption(**{**{k: a[k] for k in ("color", "shape", "size", "position")}, "pattern": swap[a["pattern"]]})
             for a in map(sw2.parse_caption, ALL)]
    right, bad = scores(renders, ALL), scores(renders.clone(), wrong)
    assert float(bad["sw2_pattern"].max()) < 0.05
    for k in ("sw2_color", "sw2_shape", "sw2_size", "sw2_position", "sw2_quality", "sw2_aesthetic"):
        torch.testing.assert_close(bad[k], right[k])
    torch.testing.assert_close(bad["sw2_alignment"], right["sw2_alignment"] - right["sw2_pattern"] / 5 + bad["sw2_pattern"] / 5)


def test_half_contrast_stripes_score_half_and_blur_loses_quality_but_a_crisp_pattern_does_not():
    caps = [sw2.caption("green", s, "large", "striped", "center") for s in sw.SHAPES]
    striped = sw2.render_batch(caps)
    solid = sw2.render_batch([c.replace("striped", "solid") for c in caps])
    half = (striped + solid) / 2
    assert 0.3 < float(sw2.sw2_pattern(half, caps).min()) <= float(sw2.sw2_pattern(half, caps).max()) < 0.7
    assert float(sw2.sw2_quality(striped, caps).min()) > 0.99 and float(sw2.sw2_quality(half, caps).min()) > 0.99
    k = (torch.tensor([1.0, 2.0, 1.0])[:, None] * torch.tensor([1.0, 2.0, 1.0]) / 16).expand(3, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(striped, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    assert float(sw2.sw2_quality(blurred, caps).max()) < 0.5
    assert float(sw2.sw2_pattern(blurred, caps).max()) < 0.5   # a binomial blur removes a 2 px period


def test_small_noise_changes_no_level_two_score_by_more_than_005(renders):
    g = torch.Generator().manual_seed(0)
    noisy = (renders + torch.randn(renders.shape, generator=g) * 2 / 255).clamp(0, 1)
    clean, r = scores(renders, ALL), scores(noisy, ALL)
    for k in clean:
        assert float((r[k] - clean[k]).abs().max()) <= 0.05, k


def test_aesthetic_prefers_large_central_plain_shapes():
    caps = ["a large solid red circle at the center", "a large striped red circle at the center",
            "a small checkered red circle at the top left"]
    a = sw2.sw2_aesthetic(sw2.render_batch(caps), caps)
    assert float(a[0]) > 0.9 and float(a[0]) - float(a[1]) > 0.1 and float(a[1]) > float(a[2])


def test_level_two_pretraining_omits_words_and_refuses_omission_at_level_one(tmp_path):
    out = tmp_path / "model"
    assert pretrain.main(["image2", "--steps", "2", "--eval-every-steps", "2", "--batch", "4", "--loss", "v",
                          "--omit-position", "0.8", "--omit-pattern", "0.8", "--omit-size", "0.5", "--out", str(out)]) == 0
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["pretraining_captions"] == 828 and set(pretrain.EVAL_REWARDS["image2"]) <= set(meta["held_out"])
    tokenizer = json.loads((out / "tokenizer" / "tokenizer.json").read_text())
    assert set(sw2.PATTERNS) <= set(tokenizer["model"]["vocab"])
    with pytest.raises(SystemExit):
        pretrain.main(["image", "--steps", "1", "--omit-position", "0.5", "--out", str(tmp_path / "x")])


def test_a_missing_model_folder_under_data_models_is_a_clear_error():
    from otca_lib.policy import ModelNotAvailable, load_policy

    with pytest.raises(ModelNotAvailable, match="does not exist.*data/README.md"):
        load_policy("sd3-x0", "data/models/no-such-model")


def test_pretraining_continues_from_its_own_output_and_refuses_other_folders(tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    common = ["--eval-every-steps", "2", "--batch", "4", "--loss", "v", "--omit-position", "0.8"]
    assert pretrain.main(["image2", "--steps", "2", *common, "--out", str(first)]) == 0
    # continuing to the step count it already has trains nothing: the weights come back unchanged
    assert pretrain.main(["image2", "--steps", "2", *common, "--init", str(first), "--out", str(again)]) == 0
    for name in ("transformer", "text_encoder", "text_encoder_2"):
        a, b = (next((d / name).glob("*.safetensors")).read_bytes() for d in (first, again))
        assert a == b, name
    meta = json.loads((again / "pretrain.json").read_text())
    assert meta["init"] == str(first) and meta["steps"] == 2 and meta["kind"] == "image2"
    more = tmp_path / "more"
    assert pretrain.main(["image2", "--steps", "4", *common, "--init", str(first), "--out", str(more)]) == 0
    assert [r["step"] for r in json.loads((more / "pretrain.json").read_text())["history"]] == [4]
    capsys.readouterr()
    assert pretrain.main(["image2", "--steps", "3", "--init", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert pretrain.main(["image", "--steps", "3", "--init", str(first), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "no pretrain.json" in err and "pretrained as 'image2'" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        pretrain.main(["image2", "--steps", "3", "--init", str(first), "--out", str(first)])
