"""Checkpoints hold nothing that runs code: a resume reads safetensors and JSON only, and refuses anything else."""
import json
import pickle

import pytest
import torch

from otca_lib import checkpoint, checksums
from otca_lib.config import preset, smoke
from otca_lib.train import Trainer, main


class Payload:
    """Unpickling this creates the marker file: the harmless stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def finished_run(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(tmp_path / "run"), eval_every=0,
                              iterations=1, ema_decay=0.9, credit="otca_objective")
    Trainer(cfg, log=False).run()
    return cfg, checkpoint.resolve(tmp_path / "run")


def rehash(ckpt, name, drop=False):
    meta = json.loads((ckpt / checkpoint.META).read_text())
    if drop:
        meta["sha256"].pop(name, None)
    else:
        meta["sha256"][name] = checksums.sha256_file(ckpt / name)
    (ckpt / checkpoint.META).write_text(json.dumps(meta))


def test_a_checkpoint_is_safetensors_and_json_and_round_trips_the_training_state(tmp_path):
    cfg, ckpt = finished_run(tmp_path)
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(checkpoint.FILES)
    assert not list(ckpt.parent.parent.rglob("*.pkl")) and not list(ckpt.parent.parent.rglob("*.bin"))
    import dataclasses

    t = Trainer(dataclasses.replace(cfg, iterations=2), log=False)
    assert t.resume(tmp_path / "run") == 1
    saved, meta = checkpoint.training_state(t.optimizer, t.ema, t.credit_state)
    again = checkpoint.load_file(str(ckpt / checkpoint.STATE))
    assert set(saved) == set(again) and any(k.startswith("ema.") for k in saved) and "credit.profile" in saved
    for k in saved:
        torch.testing.assert_close(saved[k], again[k], rtol=0, atol=0)


@pytest.mark.parametrize("target", ["extra", *checkpoint.FILES])
@pytest.mark.parametrize("drop_checksum", [False, True])
def test_a_planted_pickle_never_runs_on_resume(tmp_path, monkeypatch, target, drop_checksum):
    cfg, ckpt = finished_run(tmp_path)
    marker = tmp_path / "code_ran"
    payload = pickle.dumps(Payload(marker))
    name = "custom_checkpoint_0.pkl" if target == "extra" else target
    (ckpt / name).write_bytes(payload)
    if name != checkpoint.META:
        rehash(ckpt, name, drop=drop_checksum)
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or pytest.fail("torch.load was called"))
    with pytest.raises(checkpoint.CheckpointError):
        Trainer(cfg, log=False).resume(tmp_path / "run")
    assert main(["--resume", str(tmp_path / "run")]) == 2       # the command line: a clear error, exit 2
    assert not marker.exists() and not loads


def test_latest_must_name_a_checkpoint_of_the_run(tmp_path):
    _, ckpt = finished_run(tmp_path)
    (ckpt.parent / "latest").write_text("../../elsewhere")
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint folder"):
        checkpoint.resolve(tmp_path / "run")


def test_old_checkpoints_are_pruned_to_the_newest_few_and_resume_still_works(tmp_path):
    run = tmp_path / "run"
    args = ["--preset", "tiny-sd3", "--smoke", "--output-dir", str(run), "--set", "eval_every=0", "checkpoint_every=1",
            "iterations=5", "keep_checkpoints=2"]
    assert main(args) == 0
    names = lambda: sorted(p.name for p in (run / "checkpoints").glob("iter_*"))  # noqa: E731
    assert names() == ["iter_000004", "iter_000005"]
    assert checkpoint.resolve(run).name == "iter_000005"
    # resuming from the older one and writing iteration 5 again: the later checkpoints are never pruned
    assert main(["--resume", str(run / "checkpoints" / "iter_000004"), "--output-dir", str(run), "--iterations", "6"]) == 0
    assert names() == ["iter_000005", "iter_000006"]
    # keep_checkpoints=0 keeps every one
    assert main(args[:-1] + ["keep_checkpoints=0", "iterations=3"] + ["--overwrite"]) == 0
    assert names() == ["iter_000001", "iter_000002", "iter_000003"]
    # direct: later checkpoints than the one written stay
    for it in (1, 2, 7):
        (tmp_path / "c" / f"iter_{it:06d}").mkdir(parents=True)
    assert [p.name for p in checkpoint.prune(tmp_path / "c", 3, keep=2)] == ["iter_000001"]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["iter_000002", "iter_000007"]
