"""The trainer end to end on tiny pipelines: on-policy consistency, learning, resume, bad input."""
import dataclasses
import json

import pytest
import torch

from otca_lib import checkpoint
from otca_lib.config import Config, apply_overrides, preset, smoke, validate
from otca_lib.policy import load_policy
from otca_lib.sample import RolloutSpec, sample
from otca_lib.sde import SDE
from otca_lib.steps import TrainedSteps
from otca_lib.seeds import Stream, sample_seed
from otca_lib.train import Trainer, main
from otca_lib.update import recompute


def tiny_cfg(tmp_path, name="tiny-sd3", **kw) -> Config:
    c = dataclasses.replace(smoke(preset(name)), output_dir=str(tmp_path / "run"), eval_every=0)
    return dataclasses.replace(c, **kw)


@pytest.mark.parametrize("family,cfg_scale,sde", [("sd3", 1.0, "flow_grpo"), ("flux", 1.0, "dance"),
                                                  ("wan", 1.0, "cps"), ("sd3", 4.5, "flow_grpo")])
def test_on_policy_ratio_is_one_whatever_the_batching(family, cfg_scale, sde):
    policy = load_policy(family, f"tiny-{family}")
    c = preset(f"tiny-{family}")
    T = 4
    spec = RolloutSpec(policy.sigmas(T, c.height, c.width), policy.latent_shape(c.height, c.width, c.frames or None),
                       SDE(sde, 0.7), cfg_scale)
    prompts = ["a red cat", "a blue dog", "a green tree", "a small house", "a bird", "a boat"]
    seeds = [sample_seed(0, Stream.SAMPLE, 0, i) for i in range(6)]
    kw = dict(trained=torch.arange(T - 1), seeds=seeds)
    big = sample(policy, prompts, dataclasses.replace(spec, batch_size=6), **kw)
    small = sample(policy, prompts, dataclasses.replace(spec, batch_size=4), **kw)
    torch.testing.assert_close(small.states, big.states, rtol=0, atol=1e-5)
    # per-process split: the last 2 samples alone give the same trajectories
    part = sample(policy, prompts[4:], dataclasses.replace(spec, batch_size=2), **{**kw, "seeds": seeds[4:]})
    torch.testing.assert_close(part.states, big.states[4:], rtol=0, atol=1e-5)
    b = torch.arange(6).repeat_interleave(T - 1)
    t = torch.arange(T - 1).repeat(6)
    for chunk in (len(b), 5):
        lp = torch.cat([recompute(policy, big, b[i:i + chunk], t[i:i + chunk]).log_prob
                        for i in range(0, len(b), chunk)])
        ratio = torch.exp(lp - big.log_probs[b, t])
        assert (ratio - 1).abs().max() < 1e-5
    assert big.pixels.shape[:2] == (6, 3) and big.pixels.min() >= 0 and big.pixels.max() <= 1


def test_trained_step_rules():
    assert TrainedSteps("all", 10).at(0).tolist() == list(range(9))  # last step is ODE
    rule = TrainedSteps("random", 10, fraction=0.6)
    r = [rule.at(i) for i in range(2)]
    assert all(len(x) == 5 == rule.count and x.unique().numel() == 5 and x.max() < 9 for x in r) and not torch.equal(*r)
    assert torch.equal(TrainedSteps("random", 10, fraction=0.6).at(1), r[1])  # reproducible
    window = TrainedSteps("window", 10, window_size=4, window_shift_every=2)
    assert [window.at(i).tolist() for i in (0, 1, 2, 11)] == [[0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 8]]
    # the count the batch arithmetic uses is the length of every iteration's steps
    for c in (TrainedSteps("random", 8, fraction=0.5), TrainedSteps("window", 3, window_size=4), TrainedSteps("all", 2)):
        assert all(len(c.at(i)) == c.count for i in range(30))


def test_lora_with_kl_to_reference_trains_only_the_adapter(tmp_path):
    t = Trainer(tiny_cfg(tmp_path, "tiny-flux", lora_rank=4, beta=0.05, learning_rate=1e-2, iterations=3,
                         train_steps="window", window_size=1), log=False)
    rows = t.run()
    assert rows[0]["policy/kl_to_ref"] == 0  # LoRA starts as the identity: policy = reference
    assert rows[-1]["policy/kl_to_ref"] > 0
    saved = checkpoint.trainable_state(t.policy)
    assert saved and all("lora" in k for k in saved)


def test_learning_brightness_rises(tmp_path):
    c = tiny_cfg(tmp_path, "tiny-sd3-pixel", iterations=30, num_steps=4, prompts_per_iteration=2, group_size=8,
                 learning_rate=1e-3, clip_range=1e-3, rewards={"brightness": 1.0}, checkpoint_every=0)
    rows = Trainer(c, log=False).run()
    r = [row["reward/brightness/mean"] for row in rows]
    first, last = sum(r[:5]) / 5, sum(r[-5:]) / 5
    assert last > first + 0.02, f"brightness did not rise: {first:.4f} -> {last:.4f}"
    assert all(torch.isfinite(torch.tensor(r)))


def weights(trainer) -> dict:
    return {k: v.clone() for k, v in checkpoint.trainable_state(trainer.policy).items()}


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    kw = dict(iterations=4, checkpoint_every=2, ema_decay=0.9, optimizer_steps_per_iteration=2)
    full = Trainer(tiny_cfg(tmp_path / "a", **kw), log=False)
    full.run()
    half = Trainer(tiny_cfg(tmp_path / "b", **{**kw, "iterations": 2}), log=False)
    half.run()  # "killed" after its checkpoint at iteration 2
    resumed = Trainer(tiny_cfg(tmp_path / "b", **kw), log=False)
    assert resumed.resume(tmp_path / "b" / "run") == 2
    resumed.run()
    for k, v in weights(full).items():
        torch.testing.assert_close(weights(resumed)[k], v, rtol=0, atol=0)
    for e1, e2 in zip(full.ema.shadow, resumed.ema.shadow):
        torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    rows = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]


def test_corrupt_or_partial_checkpoint_is_an_error(tmp_path):
    t = Trainer(tiny_cfg(tmp_path, iterations=1), log=False)
    t.run()
    ckpt = checkpoint.resolve(tmp_path / "run")
    data = (ckpt / checkpoint.TRAINABLE).read_bytes()
    (ckpt / checkpoint.TRAINABLE).write_bytes(data[:-8] + b"corrupt!")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        Trainer(tiny_cfg(tmp_path, iterations=2), log=False).resume(tmp_path / "run")
    (ckpt / checkpoint.META).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="incomplete"):
        checkpoint.verify(ckpt)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.resolve(tmp_path / "nowhere")
    assert main(["--resume", str(tmp_path / "nowhere")]) == 2


def test_nonfinite_rewards_never_reach_the_parameters(tmp_path, monkeypatch):
    from otca_lib import rewards

    def half_nan(pixels, prompts):
        r = pixels.flatten(1).mean(1)
        r[::2] = float("nan")
        return r

    monkeypatch.setitem(rewards.REWARDS, "half_nan", lambda device: half_nan)
    t = Trainer(tiny_cfg(tmp_path, rewards={"half_nan": 1.0}, group_size=4), log=False)
    rows = t.run()
    assert rows[0]["reward/nonfinite"] == 4  # 2 prompts x 4 samples, every other one NaN
    assert all(torch.isfinite(p).all() for p in t.policy.trainable_parameters())


@pytest.mark.parametrize("override,message", [
    ("group_size=1", "group_size must be >= 2"),
    ("learning_rate=0", "learning_rate must be > 0"),
    ('rewards={"nope": 1.0}', "unknown reward"),
    ("credit=nope", "unknown credit method"),
    ("prompts_per_iteration=3", "divide evenly over 2 processes"),
])
def test_invalid_configs_fail_before_any_compute(override, message):
    c = apply_overrides(dataclasses.replace(preset("tiny-sd3"), group_size=3), [override])
    with pytest.raises(ValueError, match=message):
        validate(c, num_processes=2)


def test_command_line_errors_and_dry_run(tmp_path, capsys):
    assert main(["--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["--preset", "tiny-sd3", "--set", "group_size=1"]) == 2
    assert main(["--preset", "tiny-sd3", "--set", "not_a_field=1"]) == 2
    assert main(["--preset", "tiny-flux", "--dry-run", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "samples_per_process" in out and "transformer parameters" in out and "not training" in out
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-wan"])
def test_smoke_run_from_the_command_line(tmp_path, name):
    out = tmp_path / name
    assert main(["--preset", name, "--smoke", "--output-dir", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # row 0: the base model's held-out evaluation (the baseline); then one row per iteration
    assert [r["iteration"] for r in rows] == [0, 1, 2] and set(rows[0]) == {"iteration"} | {k for k in rows[-1] if k.startswith("eval/")}
    assert "eval/total/mean" in rows[-1] and "policy/approx_kl" in rows[1]
    assert checkpoint.verify(checkpoint.resolve(out))["iteration"] == 2
    assert list((out / "samples").iterdir())


@pytest.mark.parametrize("credit", ["per_reward_loss", "otca", "otca_objective", "noise_weighted", "gdpo"])
def test_credit_methods_train_end_to_end(tmp_path, credit):
    c = tiny_cfg(tmp_path, "tiny-sd3-pixel", credit=credit, iterations=2, checkpoint_every=0,
                 rewards={"brightness": 1.0, "jpeg_compressibility": 0.05}, oa_stride=2)
    t = Trainer(c, log=False)
    before = [p.detach().clone() for p in t.policy.trainable_parameters()]
    rows = t.run()
    moved = sum(float((p.detach() - q).abs().sum()) for p, q in zip(t.policy.trainable_parameters(), before))
    assert moved > 0 and all(torch.isfinite(p).all() for p in t.policy.trainable_parameters())
    if credit.startswith("otca"):
        assert 0 <= rows[-1]["credit/moca_cancelled"] <= 1 and "credit/effective_weight/brightness" in rows[-1]


def test_bf16_weights_train_an_fp32_adapter(tmp_path):
    t = Trainer(tiny_cfg(tmp_path, "tiny-flux", dtype="bfloat16", lora_rank=4, iterations=1), log=False)
    rows = t.run()
    params = t.policy.trainable_parameters()
    assert params and all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params)
    assert t.policy.unwrapped.dtype == torch.bfloat16 or any(p.dtype == torch.bfloat16 for p in t.policy.unwrapped.parameters())
    assert abs(rows[0]["policy/ratio"] - 1) < 1e-3  # on-policy: the recomputed bf16 forward equals the rollout's


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a command-line run after its first checkpoint, resume it, compare with an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    args = ["--preset", "tiny-sd3", "--smoke", "--set", "iterations=6", "checkpoint_every=2", "eval_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "otca_lib.train", *args, "--output-dir", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.verify(checkpoint.resolve(run))["iteration"]
    assert killed_at < 6, "the run finished before it could be killed"
    # same thread count for every run: float reductions depend on it
    cli = [sys.executable, "-m", "otca_lib.train"]
    assert subprocess.run([*cli, "--resume", str(run)], env=env, capture_output=True).returncode == 0
    assert subprocess.run([*cli, *args, "--output-dir", str(tmp_path / "whole")], env=env, capture_output=True).returncode == 0
    a = load_file(str(checkpoint.resolve(run) / checkpoint.TRAINABLE))
    b = load_file(str(checkpoint.resolve(tmp_path / "whole") / checkpoint.TRAINABLE))
    assert checkpoint.verify(checkpoint.resolve(run))["iteration"] == 6
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_shared_initial_noise_within_groups(tmp_path):
    t = Trainer(tiny_cfg(tmp_path, shared_initial_noise=True, group_size=3), log=False)
    captured = {}
    import otca_lib.train as train_module

    original = train_module.sample

    def spy(*a, **k):
        captured["ro"] = original(*a, **k)
        return captured["ro"]

    train_module.sample = spy
    try:
        t.iteration(0)
    finally:
        train_module.sample = original
    x0 = captured["ro"].states[:, 0]
    assert torch.equal(x0[0], x0[1]) and torch.equal(x0[1], x0[2]) and not torch.equal(x0[2], x0[3])
    assert not torch.equal(captured["ro"].states[0, -1], captured["ro"].states[1, -1])  # the SDE noise differs


def test_a_nonfinite_gradient_skips_the_step_and_too_many_in_a_row_stop_the_run(tmp_path, monkeypatch):
    import otca_lib.update as update_module
    from otca_lib.update import NonFiniteError

    real, poison = update_module.clipped_surrogate, {"on": False}

    def maybe_nan(*a, **k):
        loss, ratio = real(*a, **k)
        return (loss * float("nan") if poison["on"] else loss), ratio

    monkeypatch.setattr(update_module, "clipped_surrogate", maybe_nan)
    t = Trainer(tiny_cfg(tmp_path, iterations=10, max_nonfinite_steps=3, ema_decay=0.9), log=False)
    assert t.iteration(0)["policy/skipped_steps"] == 0
    before, ema_before = weights(t), [e.clone() for e in t.ema.shadow]
    poison["on"] = True
    assert [t.iteration(i)["policy/skipped_steps"] for i in (1, 2)] == [1, 1]
    for k, v in weights(t).items():                     # nothing of a skipped step reached the weights or the EMA
        assert torch.equal(v, before[k])
    assert all(torch.equal(a, b) for a, b in zip(t.ema.shadow, ema_before))
    poison["on"] = False
    t.iteration(3)                                      # a finite step resets the count
    poison["on"] = True
    t.iteration(4), t.iteration(5)
    with pytest.raises(NonFiniteError, match="3 optimizer steps in a row"):
        t.iteration(6)


def test_a_diverging_resumed_run_stops_and_its_last_checkpoint_is_finite(tmp_path):
    run = tmp_path / "run"
    args = ["--preset", "tiny-sd3", "--smoke", "--output-dir", str(run), "--set", "eval_every=0", "checkpoint_every=1"]
    assert main(args) == 0
    good = checkpoint.resolve(run)
    # resumed with an absurd learning rate (the override reaches the optimizer): the step of iteration 3 sends the
    # weights to about 1e30, the next forwards overflow, their gradients are NaN and are skipped until the run stops
    assert main(["--resume", str(run), "--iterations", "8", "--set", "learning_rate=1e30"]) == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["policy/skipped_steps"] for r in rows if r["iteration"] > 2] == [0, 1, 1]  # the 3rd skip stops it
    last = checkpoint.resolve(run)
    assert checkpoint.verify(last)["iteration"] == 3  # none written while the steps were being skipped
    from safetensors.torch import load_file

    assert all(torch.isfinite(v).all() for v in load_file(str(last / checkpoint.TRAINABLE)).values())


def test_weights_made_nonfinite_by_a_step_stop_the_run(tmp_path):
    from otca_lib.update import NonFiniteError

    t = Trainer(tiny_cfg(tmp_path, iterations=2), log=False)
    step = t.optimizer.step

    def overflowing_step(*a, **k):
        step(*a, **k)
        with torch.no_grad():
            t.policy.trainable_parameters()[0].fill_(float("inf"))

    t.optimizer.step = overflowing_step
    with pytest.raises(NonFiniteError, match="became non-finite"):
        t.iteration(0)
    with pytest.raises(checkpoint.CheckpointError, match="refusing to checkpoint"):
        t.save(1)


def test_the_config_refuses_nonfinite_and_out_of_range_values():
    for override, message in [("learning_rate=Infinity", "learning_rate must be finite"), ("noise_level=NaN", "noise_level must be finite"),
                              ("adv_eps=0", "adv_eps > 0"), ("lora_rank=-4", "lora_rank must be >= 0"),
                              ("seed=-1", "seed must be >= 0"), ('rewards={"brightness": Infinity}', "finite numbers")]:
        with pytest.raises(ValueError, match=message):
            validate(apply_overrides(preset("tiny-sd3"), [override]), num_processes=2)


def test_resume_semantics_fresh_runs_never_splice_into_another_run(tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    args = ["--preset", "tiny-sd3", "--smoke", "--output-dir", str(run), "--set", "eval_every=0", "checkpoint_every=1"]
    assert main(args) == 0
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err    # a fresh run into it: refused
    assert main(["--resume", str(run), "--iterations", "2"]) == 2                  # nothing left to train
    assert "already at iteration 2" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    before = (run / "metrics.jsonl").read_text()
    assert main(["--resume", str(copy), "--iterations", "3"]) == 0                 # the copy trains, the original not
    assert (run / "metrics.jsonl").read_text() == before
    assert checkpoint.verify(checkpoint.resolve(copy))["iteration"] == 3 and checkpoint.verify(checkpoint.resolve(run))["iteration"] == 2
    # killed after logging iteration 3 but before a checkpoint: resuming from 2 does not log 3 twice
    (copy / "checkpoints" / "latest").write_text("iter_000002")
    assert main(["--resume", str(copy), "--iterations", "3"]) == 0
    rows = [json.loads(line)["iteration"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]
    assert main([*args, "--overwrite"]) == 0                                       # explicitly replaced
    assert [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_finished_comparison_run_with_other_parameters_is_refused(tmp_path):
    from otca_lib import compare

    base = dataclasses.replace(smoke(preset("tiny-sd3")), eval_every=1, iterations=1)
    compare.train_runs(base, ["grpo"], [0], tmp_path)
    compare.train_runs(base, ["grpo"], [0], tmp_path)  # the same: skipped
    with pytest.raises(ValueError, match="another config"):
        compare.train_runs(dataclasses.replace(base, learning_rate=base.learning_rate * 2), ["grpo"], [0], tmp_path)


def test_a_comparison_run_resumed_past_its_pruned_checkpoint_is_marked_done(tmp_path, monkeypatch):
    """The resumed run prunes the checkpoint it started from (keep_checkpoints); marking it done read that
    checkpoint again afterwards and failed, stopping the whole study (seen in the image study)."""
    from otca_lib import compare

    base = dataclasses.replace(smoke(preset("tiny-sd3")), eval_every=0, iterations=4, checkpoint_every=1,
                               keep_checkpoints=1)
    real = Trainer.iteration
    monkeypatch.setattr(Trainer, "iteration", lambda self, it: real(self, it) if it < 2 else 1 / 0)
    with pytest.raises(ZeroDivisionError):  # interrupted after its checkpoint at iteration 2
        compare.train_runs(base, ["grpo"], [0], tmp_path)
    monkeypatch.setattr(Trainer, "iteration", real)
    compare.train_runs(base, ["grpo"], [0], tmp_path)
    run = tmp_path / "grpo_seed0"
    assert [p.name for p in (run / "checkpoints").glob("iter_*")] == ["iter_000004"]  # iteration 2's is pruned
    assert json.loads((run / "done.json").read_text())["resumed_from_iteration"] == 2


def test_runs_trained_side_by_side_as_child_processes_match_the_runs_trained_here(tmp_path):
    """compare.train_runs(jobs=2) trains each run as `python -m otca_lib.train` with the full config on the command
    line: the same runs, the same numbers (to float tolerance: the children use one thread), and done.json."""
    from otca_lib import compare

    base = dataclasses.replace(smoke(preset("tiny-sd3")), eval_every=1, iterations=2, checkpoint_every=1)
    compare.train_runs(base, ["grpo", "otca"], [0], tmp_path / "here")
    compare.train_runs(base, ["grpo", "otca"], [0], tmp_path / "side", jobs=2)
    for method in ("grpo", "otca"):
        here, side = (compare.metric_rows(tmp_path / d, method, 0) for d in ("here", "side"))
        assert [r["iteration"] for r in side] == [r["iteration"] for r in here] and len(here) > 0
        for a, b in zip(here, side):
            for k, v in a.items():
                if k.startswith(("reward/", "eval/")) and isinstance(v, float):
                    assert abs(v - b[k]) < 1e-4, (method, k, v, b[k])
        assert json.loads((tmp_path / "side" / f"{method}_seed0" / "done.json").read_text())["method"] == method
    compare.train_runs(base, ["grpo", "otca"], [0], tmp_path / "side", jobs=2)  # finished: nothing to train
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        compare.train_runs(base, ["grpo"], [1], tmp_path / "side", jobs=0)


def test_list_parameters_of_the_reproductions_accept_papermill_text_and_refuse_the_rest():
    """papermill -p passes '[0, 1]' as text; iterating it would train the runs '[', '0', ',' ... (it did)."""
    from otca_lib.compare import list_parameter

    assert list_parameter("seeds", "[0, 1]", int) == [0, 1] and list_parameter("methods", ["grpo"], str) == ["grpo"]
    for bad in ("0, 1", "[]", '["0"]', [True], 3):
        with pytest.raises(ValueError, match="seeds must be a non-empty list of int"):
            list_parameter("seeds", bad, int)


def test_the_demo_trains_both_methods_and_writes_its_table_and_figures(tmp_path, capsys):
    from otca_lib import demo

    assert demo.main(["--iterations", "3", "--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| base model |" in out and "| grpo |" in out and "| otca |" in out and "otca - base:" in out
    assert all((tmp_path / f).exists() for f in ("summary.md", "reward_curves.png", "samples.png"))
    assert demo.main(["--iterations", "6", "--smoke", "--out", str(tmp_path)]) == 2  # other settings: refused


@pytest.mark.parametrize("name", ["shapesworld2-image", "shapesworld-image", "shapesworld-video"])
def test_shapesworld_presets_work_from_any_folder_and_dry_run(name, tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from otca_lib import train
    from otca_lib.config import preset

    monkeypatch.chdir(tmp_path)  # not the repository root: the data/ paths must still resolve
    cfg = preset(name)
    assert all(Path(p).exists() for p in (cfg.model, cfg.train_prompts, cfg.test_prompts))
    assert train.main(["--preset", name, "--dry-run"]) == 0
    assert "transformer parameters" in capsys.readouterr().out and not any(tmp_path.iterdir())


def test_headless_runs_print_a_progress_line_naming_method_and_seed(tmp_path):
    """stderr is not a terminal (a log file, papermill): text lines, not only a progress bar that nobody sees."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "otca_lib.train", "--preset", "tiny-sd3", "--smoke", "--credit", "otca",
                           "--output-dir", str(tmp_path / "run"), "--set", "seed=3", "iterations=4", "eval_every=2"],
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("otca seed 3: iteration ")]
    assert [line.split(",")[0] for line in lines] == [f"otca seed 3: iteration {i}/4" for i in (1, 2, 3, 4)]
    assert "ETA" in lines[0] and "held-out total" in lines[1] and "held-out total" not in lines[0]


def test_tensorboard_gets_the_config_and_the_evaluation_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = Trainer(tiny_cfg(tmp_path, iterations=2, eval_every=1), log=False)
    t.run()
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = events.Images("eval/samples")
    assert [e.step for e in images] == [0, 1, 2]                 # the base model, then every evaluation
    assert any("config" in tag for tag in events.Tags()["tensors"])  # the config as text
    assert "reward/total/mean" in events.Tags()["scalars"]
