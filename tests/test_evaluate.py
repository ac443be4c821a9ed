"""Sampling and evaluation commands on a tiny pipeline and on ShapesWorld renders."""
import json
import re

import pytest
import torch

from otca_lib import evaluate, media, sample, shapesworld as sw
from otca_lib.config import PRESETS, preset, validate


def test_sample_then_evaluate_the_folder(tmp_path, capsys):
    out = tmp_path / "samples"
    assert sample.main(["--preset", "tiny-sd3-pixel", "--prompts", "data/prompts/tiny_test.txt",
                                 "--out", str(out), "--seed", "3"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert len(index) == 4 and all((out / r["file"]).exists() for r in index)
    assert evaluate.main(["--preset", "tiny-sd3-pixel", "--folder", str(out), "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["brightness"]["n"] == 4 and 0 < summary["brightness"]["mean"] < 1
    assert "95% CI" in capsys.readouterr().out


def test_steps_changes_only_the_number_of_sampling_steps(tmp_path, monkeypatch):
    """--steps replaces the config's eval_num_steps and nothing else: the default equals --steps with that number,
    and another number draws other samples from the same seeds."""
    from otca_lib import sample as sample_module

    seen = []
    real = sample_module.sample

    def spy(policy, prompts, spec, **kw):
        seen.append(len(spec.sigmas) - 1)
        return real(policy, prompts, spec, **kw)

    monkeypatch.setattr(sample_module, "sample", spy)
    means = []
    for extra in ([], ["--steps", str(preset("tiny-sd3-pixel").eval_num_steps)], ["--steps", "2"]):
        out = tmp_path / f"s{len(means)}.json"
        assert evaluate.main(["--preset", "tiny-sd3-pixel", "--prompts", "data/prompts/tiny_test.txt",
                              "--json", str(out), *extra]) == 0
        means.append(json.loads(out.read_text())["brightness"]["mean"])
    default = preset("tiny-sd3-pixel").eval_num_steps
    assert seen == [default, default, 2] and default != 2
    assert means[0] == means[1] and means[2] != means[0]


def test_videos_round_trip_through_gif_and_npy(tmp_path):
    caps = sw.prompts("video", "test")[:3]
    pixels = sw.render_batch(caps, seed=0)
    media.write_samples(pixels, caps, [0, 1, 2], tmp_path)
    back, prompts = media.read_samples(tmp_path)
    assert prompts == caps and torch.equal(back, pixels)
    assert (evaluate.summarize({"sw_motion": sw.REWARDS["sw_motion"]("cpu")(back, caps)})["sw_motion"]["mean"] > 0.9)


def test_summary_confidence_interval():
    s = evaluate.summarize({"r": torch.tensor([0.0, 1.0, float("nan"), 0.0, 1.0])})["r"]
    assert s["n"] == 4 and s["mean"] == 0.5
    assert abs(s["ci95"] - 1.96 * (1 / 3) ** 0.5 / 2) < 1e-12  # sample std of 0, 1, 0, 1 is sqrt(1/3)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name):
    validate(preset(name), num_processes=1)


def test_prompt_files_text_and_jsonl(tmp_path):
    from otca_lib.prompts import read_prompts

    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat", "id": 1}\n\n{"prompt": " a dog "}\n')
    assert read_prompts(str(tmp_path / "p.jsonl")) == ["a cat", "a dog"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a cat"}\n')
    with pytest.raises(ValueError, match="prompt"):
        read_prompts(str(tmp_path / "bad.jsonl"))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_prompts(str(tmp_path / "missing.txt"))
    for name in PRESETS:  # every preset's prompt files are shipped
        c = preset(name)
        assert read_prompts(c.train_prompts) and read_prompts(c.test_prompts)


def test_prompt_files_from_a_hub_dataset(tmp_path, monkeypatch):
    import huggingface_hub

    from otca_lib.prompts import read_prompts

    # offline (as in all tests): a clear error naming the dataset and the local-file alternative
    with pytest.raises(FileNotFoundError, match="me/prompts.*--set train_prompts="):
        read_prompts("hf://datasets/me/prompts/split/train.txt")
    with pytest.raises(ValueError, match="OWNER/NAME/FILE"):
        read_prompts("hf://datasets/me/prompts")
    # online: the repository, file and revision go to huggingface_hub, and the file is read as a local one
    (tmp_path / "train.jsonl").write_text('{"prompt": "a cat"}\n')
    calls = []

    def fake_download(repo_id, filename, repo_type, revision):
        calls.append((repo_id, filename, repo_type, revision))
        return str(tmp_path / "train.jsonl")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert read_prompts("hf://datasets/me/prompts/split/train.jsonl@v1") == ["a cat"]
    assert calls == [("me/prompts", "split/train.jsonl", "dataset", "v1")]


def test_evaluate_fails_loudly_on_nonfinite_scores(tmp_path, capsys):
    import dataclasses

    from safetensors.torch import load_file, save_file

    from otca_lib import checkpoint, checksums
    from otca_lib.config import smoke
    from otca_lib.train import Trainer

    cfg = dataclasses.replace(smoke(preset("tiny-sd3-pixel")), output_dir=str(tmp_path / "run"), eval_every=0, iterations=1)
    Trainer(cfg, log=False).run()
    ckpt = checkpoint.resolve(tmp_path / "run")
    w = load_file(str(ckpt / checkpoint.TRAINABLE))
    save_file({k: torch.full_like(v, float("nan")) for k, v in w.items()}, str(ckpt / checkpoint.TRAINABLE))
    meta = json.loads((ckpt / checkpoint.META).read_text())
    meta["sha256"][checkpoint.TRAINABLE] = checksums.sha256_file(ckpt / checkpoint.TRAINABLE)
    (ckpt / checkpoint.META).write_text(json.dumps(meta))
    assert evaluate.main(["--preset", "tiny-sd3-pixel", "--checkpoint", str(tmp_path / "run")]) == 1
    assert "non-finite scores" in capsys.readouterr().err


def test_sample_and_evaluate_report_user_errors_without_a_traceback(tmp_path, capsys):
    assert evaluate.main(["--preset", "nope"]) == 2
    assert evaluate.main(["--preset", "tiny-sd3", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert evaluate.main(["--preset", "tiny-sd3", "--folder", str(tmp_path)]) == 2            # no index.json
    assert sample.main(["--preset", "tiny-sd3", "--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 4 and "Traceback" not in err


@pytest.mark.parametrize("preset_name, setting, message", [
    ("tiny-sd3", "height=28", "multiples of 8 px up to 128"),          # VAE 4 x patch 2; 64 learned positions a side
    ("tiny-sd3-pixel", "width=64", "multiples of 4 px up to 32.*set e.g. width=32"),  # pixel space, 8 positions a side
    ("tiny-flux", "height=20", "multiples of 8 px"),                   # VAE 4 x 2 x 2 packing
    ("tiny-wan", "frames=8", "frames = 1 \\+ a multiple of 4"),          # the causal VAE's temporal factor 4
])
def test_sizes_the_model_cannot_take_are_refused_before_training(preset_name, setting, message, tmp_path, capsys):
    from otca_lib import train

    argv = ["--preset", preset_name, "--smoke", "--set", setting, f"output_dir={tmp_path}"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written
    assert train.main([*argv, "--dry-run"]) == 2
