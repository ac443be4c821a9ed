"""Every bad input a user can give the command-line tools, and what they see: docs/errors.md is this table.

Each case runs the tool's `main` in this process, with stderr captured. The test asserts that no case ends in
a traceback and that the exit code and the message are the ones docs/errors.md shows; after changing a message,
regenerate the page with `python tests/test_bad_inputs.py` (it runs every case and writes the page).
Placeholders in the commands: RUN is a finished 1-iteration run of `tiny-sd3 --smoke` (a checkpoint at
iteration 1), EMPTY an empty folder, TMP a scratch folder; a case's `setup` changes RUN first.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"


@dataclasses.dataclass
class Case:
    tool: str            # train, evaluate, sample, pretrain, shapesworld
    argv: str            # the arguments, with RUN, EMPTY, TMP placeholders (split on spaces; ' keeps a JSON value)
    what: str            # the bad input in words
    setup: str = ""      # a change made to RUN before the command (see SETUPS)


T = "--preset tiny-sd3 --smoke --output-dir TMP/new"
CASES = [
    # ---- train: the config
    Case("train", "--preset nope", "an unknown preset"),
    Case("train", f"{T} --set learnin_rate=1e-4", "an unknown config field (a typo)"),
    Case("train", f"{T} --set learning_rate=fast", "a value of the wrong type"),
    Case("train", f"{T} --set learning_rate=inf", "an infinite float"),
    Case("train", f"{T} --set noise_level=nan", "a NaN float"),
    Case("train", f"{T} --set learning_rate=-1", "a learning rate <= 0"),
    Case("train", f"{T} --set adv_eps=0", "adv_eps = 0 (a flat group divides 0 by 0)"),
    Case("train", f"{T} --set lora_rank=-4", "a negative LoRA rank"),
    Case("train", f"{T} --set seed=-1", "a negative seed"),
    Case("train", f"{T} --set group_size=1", "a group of one sample (no advantage)"),
    Case("train", f"{T} --set num_steps=1", "one denoising step"),
    Case("train", f"{T} --set noise_level=0", "noise level 0 (the ODE: no log-probability)"),
    Case("train", f"{T} --credit nope", "an unknown credit method"),
    Case("train", f"{T} --set sde=ode", "the ODE as the training SDE"),
    Case("train", f"{T} --set train_steps=middle", "an unknown trained-step rule"),
    Case("train", f"{T} --set moca_lambda=2", "MOCA's lambda outside [0, 1]"),
    Case("train", f"{T} --set dtype=float8", "an unknown dtype"),
    Case("train", f"{T} --set family=foo", "an unknown model family"),
    Case("train", f"{T} --iterations 0", "zero iterations"),
    Case("train", f"{T} --set clip_range=0", "a clip range of 0"),
    Case("train", f"{T} --set train_fraction=1.5", "a trained fraction of steps above 1"),
    Case("train", f"{T} --set ema_decay=1", "an EMA decay of 1 (the EMA never moves)"),
    Case("train", f"{T} --set beta=-0.1", "a negative KL weight"),
    Case("train", f"{T} --set 'rewards={{\"nope\":1}}'", "an unknown reward"),
    Case("train", f"{T} --set 'rewards={{\"brightness\":Infinity}}'", "an infinite reward weight"),
    Case("train", f"{T} --set 'rewards={{\"brightness\":0}}'", "a reward weighted 0"),
    Case("train", f"{T} --set 'rewards={{}}'", "no rewards"),
    Case("train", f"{T} --set rewards=brightness", "rewards not given as a dict"),
    Case("train", f"{T} --set 'eval_metrics=[\"nope\"]'", "an unknown evaluation metric"),
    Case("train", f"{T} --set height=28", "an image size the model cannot take"),
    Case("train", f"{T} --set height=28 --dry-run", "the same, with --dry-run"),
    Case("train", f"{T} --set frames=8", "frames for an image model"),
    Case("train", f"{T} --set train_prompts=TMP/none.txt", "a prompt file that does not exist"),
    Case("train", f"{T} --set train_prompts=TMP/noprompts.txt", "an empty prompt file"),
    Case("train", f"{T} --set model=TMP/nomodel", "a model folder that does not exist (offline)"),
    Case("train", f"{T} --set model=someone/unknown-model", "a hub model that is not in the local cache (offline)"),
    Case("train", f"{T} --set model=TMP/pickled", "a model folder with pickled (.bin) weights"),
    Case("train", f"{T} --iterations 3 --set learning_rate=1e30 max_nonfinite_steps=1",
         "a learning rate so large that training diverges"),
    # ---- train: run folders and resume
    Case("train", "--preset tiny-sd3 --smoke --output-dir RUN", "a fresh run into a folder that holds a run"),
    Case("train", "--resume TMP/nothere", "resume from a folder that does not exist"),
    Case("train", "--resume EMPTY", "resume from a folder with no checkpoint"),
    Case("train", "--resume RUN --iterations 1", "resume with --iterations at or below the checkpoint"),
    Case("train", "--resume RUN --iterations 2", "resume a checkpoint whose weights were changed", "tamper"),
    Case("train", "--resume RUN --iterations 2", "resume a checkpoint with an extra file (e.g. a planted pickle)",
         "extra"),
    Case("train", "--resume RUN --iterations 2", "resume a checkpoint with a file missing", "missing"),
    Case("train", "--resume RUN --iterations 2", "resume a checkpoint whose checksum entry was removed", "unlisted"),
    Case("train", "--resume RUN --iterations 2", "resume when `latest` points outside the run", "latest"),
    Case("train", "--resume TMP/loose --iterations 2", "resume a checkpoint folder taken out of its run folder "
         "(without --output-dir)", "loose"),
    # ---- evaluate and sample
    Case("evaluate", "--preset nope", "an unknown preset"),
    Case("evaluate", "--preset tiny-sd3 --checkpoint TMP/none", "a checkpoint that does not exist"),
    Case("evaluate", "--preset tiny-sd3 --folder EMPTY", "a samples folder without index.json"),
    Case("evaluate", "--preset tiny-sd3 --prompts TMP/none.txt", "a prompt file that does not exist"),
    Case("evaluate", "--preset tiny-sd3 --samples-per-prompt 0", "zero samples per prompt"),
    Case("evaluate", "--preset tiny-sd3 --steps 0", "zero sampling steps"),
    Case("evaluate", "--preset tiny-sd3 --folder EMPTY --steps 40", "sampling steps for samples already drawn"),
    Case("evaluate", "--preset tiny-sd3 --checkpoint RUN --folder EMPTY", "both --checkpoint and --folder"),
    Case("evaluate", "--preset tiny-sd3 --checkpoint RUN --prompts TMP/one.txt", "a checkpoint with NaN weights",
         "nan"),
    Case("evaluate", "--preset tiny-sd3-pixel --checkpoint RUN --prompts TMP/one.txt",
         "a checkpoint trained from another preset's model"),
    Case("sample", "--preset nope --prompts TMP/one.txt --out TMP/s", "an unknown preset"),
    Case("sample", "--preset tiny-sd3 --prompts TMP/none.txt --out TMP/s", "a prompt file that does not exist"),
    # ---- pretrain
    Case("pretrain", "image2 --out TMP/p --init TMP/none --steps 1", "--init from a folder that does not exist"),
    Case("pretrain", "image2 --out TMP/p --init EMPTY --steps 1", "--init from a folder pretrain did not write"),
    Case("pretrain", "image2 --out TMP/p --init TMP/p --steps 1", "--init and --out the same folder"),
    Case("pretrain", "image2 --out TMP/p --omit-position 1.5", "an omission probability outside [0, 1]"),
    Case("pretrain", "video --out TMP/p --omit-position 0.5", "a level-2 option for a level-1 kind"),
    Case("pretrain", "image2 --out TMP/p --steps 0", "zero steps"),
    Case("pretrain", "image2 --out TMP/p --lr -1", "a learning rate <= 0"),
    Case("pretrain", "image2 --out TMP/one.txt", "--out is a file"),
    Case("pretrain", "image2 --out TMP/pickled", "--out already holds a model (without --overwrite)"),
    # ---- the ShapesWorld renderer
    Case("shapesworld", "--render 'a purple banana' --out TMP/r.png", "a caption outside the grammar"),
    Case("shapesworld", "--render 'a large red circle at the center' --out TMP/r.gif",
         "an image caption rendered to a GIF"),
    Case("shapesworld", "", "nothing to do"),
]


# ----------------------------------------------------------------------------------------------- running
def _main(tool):
    from otca_lib import evaluate, pretrain, sample, shapesworld, train

    return {"train": train.main, "evaluate": evaluate.main, "sample": sample.main,
            "pretrain": pretrain.main, "shapesworld": shapesworld.main}[tool]


def _split(argv: str) -> list[str]:
    import shlex

    return shlex.split(argv)


class World:
    """RUN, EMPTY and TMP for one case: a fresh copy of the finished run, so that setups do not leak."""

    def __init__(self, template: Path, scratch: Path):
        self.tmp = scratch
        self.run = scratch / "run"
        shutil.copytree(template, self.run)
        (scratch / "empty").mkdir()
        (scratch / "noprompts.txt").write_text("\n")
        (scratch / "one.txt").write_text("a red square\n")
        pickled = scratch / "pickled"
        pickled.mkdir()
        (pickled / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
        (pickled / "transformer").mkdir()
        (pickled / "transformer" / "config.json").write_text("{}")
        (pickled / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"not a safetensors file")

    def fill(self, text: str) -> str:
        return text.replace("RUN", str(self.run)).replace("EMPTY", str(self.tmp / "empty")).replace("TMP", str(self.tmp))

    def unfill(self, text: str) -> str:
        return text.replace(str(self.run), "RUN").replace(str(self.tmp / "empty"), "EMPTY").replace(str(self.tmp), "TMP")


def _setup(world: World, name: str) -> None:
    from otca_lib import checkpoint, checksums

    ckpt = world.run / "checkpoints" / "iter_000001"
    meta_path = ckpt / checkpoint.META
    if name == "tamper":
        data = bytearray((ckpt / checkpoint.TRAINABLE).read_bytes())
        data[-1] ^= 1
        (ckpt / checkpoint.TRAINABLE).write_bytes(bytes(data))
    elif name == "extra":
        (ckpt / "custom_checkpoint_0.pkl").write_bytes(b"\x80\x04K\x01.")
    elif name == "missing":
        (ckpt / checkpoint.STATE).unlink()
    elif name == "unlisted":
        meta = json.loads(meta_path.read_text())
        meta["sha256"].pop(checkpoint.STATE)
        meta_path.write_text(json.dumps(meta))
    elif name == "latest":
        (world.run / "checkpoints" / "latest").write_text("../../elsewhere")
    elif name == "loose":
        shutil.copytree(ckpt, world.tmp / "loose")
    elif name == "nan":
        import torch
        from safetensors.torch import load_file, save_file

        w = load_file(str(ckpt / checkpoint.TRAINABLE))
        save_file({k: torch.full_like(v, float("nan")) for k, v in w.items()}, str(ckpt / checkpoint.TRAINABLE))
        meta = json.loads(meta_path.read_text())
        meta["sha256"][checkpoint.TRAINABLE] = checksums.sha256_file(ckpt / checkpoint.TRAINABLE)
        meta_path.write_text(json.dumps(meta))
    elif name:
        raise KeyError(name)


def outcome(case: Case, world: World) -> tuple[object, str, str]:
    """(exit code, the message a user reads, all of stderr) of one case."""
    _setup(world, case.setup)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = _main(case.tool)(_split(world.fill(case.argv)))
        except SystemExit as e:  # argparse's own errors (usage line, then "error: ...")
            rc = e.code
    text = world.unfill(err.getvalue())
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if re.search(r"(^|: )(error|note): ", line):
            message = line
            if line.endswith("invalid config:"):  # the list follows, one problem per line
                message += " " + " ".join(l for l in lines[i + 1:] if l.startswith("- "))
            return rc, message, text
    return rc, "", text


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from otca_lib.config import preset, smoke
    from otca_lib.train import Trainer

    folder = tmp_path_factory.mktemp("template")
    cfg = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(folder / "run"), eval_every=0, iterations=1)
    Trainer(cfg, log=False).run()
    return folder / "run"


def doc_rows() -> dict[tuple[str, str, str], tuple[str, str]]:
    """{(tool, command, setup-free input text): (exit code, message)} from docs/errors.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")] if line.startswith("| `") else []
        if len(cells) == 4:
            command, what, rc, message = cells
            rows[(_unquote(command), what)] = (rc, _unquote(message))
    return rows


def _unquote(cell: str) -> str:
    return cell.strip("`").replace("\\|", "|")


def _quote(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def _command(case: Case) -> str:
    module = {"sample": "otca_lib.sample"}.get(case.tool, f"otca_lib.{case.tool}")
    return f"python -m {module} {case.argv}".strip()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.tool}:{c.what}" for c in CASES])
def test_every_bad_input_gets_the_documented_clear_message(case, template, tmp_path):
    rc, message, stderr = outcome(case, World(template, tmp_path))
    assert "Traceback" not in stderr
    assert message, f"no error or note line for {case.what!r}; stderr: {stderr}"
    assert rc != 0 or message.startswith("note: "), f"{case.what!r} exited 0 without saying anything"
    documented = doc_rows().get((_command(case), case.what))
    assert documented is not None, f"docs/errors.md has no row for {case.what!r}: run python tests/test_bad_inputs.py"
    assert documented == (str(rc), message), "docs/errors.md is out of date: run python tests/test_bad_inputs.py"


def test_the_page_lists_exactly_the_cases():
    assert set(doc_rows()) == {(_command(c), c.what) for c in CASES}


def write_doc() -> None:
    from otca_lib.config import preset, smoke
    from otca_lib.train import Trainer

    head = DOC.read_text().split("| command |")[0] if DOC.exists() else ""
    rows = ["| command | the bad input | exit code | what you see |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        cfg = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(d / "template" / "run"), eval_every=0,
                                  iterations=1)
        Trainer(cfg, log=False).run()
        for i, case in enumerate(CASES):
            rc, message, stderr = outcome(case, World(d / "template" / "run", Path(tempfile.mkdtemp(dir=d))))
            if "Traceback" in stderr or not message:
                raise SystemExit(f"{case.what}: no clear message:\n{stderr}")
            rows.append(f"| {_quote(_command(case))} | {case.what} | {rc} | {_quote(message)} |")
    DOC.write_text(head + "\n".join(rows) + "\n")
    print(f"wrote {DOC}: {len(CASES)} cases")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    write_doc()
