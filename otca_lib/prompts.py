"""Prompt files: one prompt a line (.txt), or JSON Lines with a "prompt" field (.jsonl), local or in a hub dataset.

    read_prompts("data/prompts/shapesworld2_image_train.txt")
    read_prompts("hf://datasets/OWNER/NAME/FILE[@REVISION]")      (downloaded once by huggingface_hub)

data/README.md describes the shipped files and the formats accepted for real training sets.
"""

from __future__ import annotations

import json
from pathlib import Path

HUB_PREFIX = "hf://datasets/"


def hub_prompt_file(path: str) -> Path:
    """hf://datasets/OWNER/NAME/FILE[@REVISION] -> the file, downloaded (or found in the local cache) by
    huggingface_hub. FILE is a .txt or .jsonl file inside the dataset repository."""
    from huggingface_hub import hf_hub_download

    ref, _, revision = path[len(HUB_PREFIX):].partition("@")
    owner, name, *rest = ref.split("/")
    if not (owner and name and rest):
        raise ValueError(f"{path}: expected hf://datasets/OWNER/NAME/FILE[@REVISION], e.g. "
                         "hf://datasets/me/prompts/train.txt")
    repo, filename = f"{owner}/{name}", "/".join(rest)
    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset", revision=revision or None))
    except Exception as err:  # offline, missing repo or file, no access: all end here with what to do
        raise FileNotFoundError(
            f"could not get {filename!r} of the hub dataset {repo!r} ({type(err).__name__}: {err}). Offline or "
            f"without access, download it where there is network (huggingface-cli download --repo-type dataset "
            f"{repo} {filename} --local-dir DIR) and pass the local file: --set train_prompts=DIR/{filename}") from err


def read_prompts(path: str) -> list[str]:
    """Prompts from a text file (one per line) or a JSONL file (one object per line with a "prompt" field),
    local or in a hub dataset repository (hf://datasets/OWNER/NAME/FILE[@REVISION])."""
    p = hub_prompt_file(path) if path.startswith(HUB_PREFIX) else Path(path)
    if not p.exists():
        raise FileNotFoundError(f"prompt file {path} not found (one prompt per line, or JSONL with a \"prompt\" "
                                "field; set train_prompts / test_prompts)")
    lines = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if p.suffix == ".jsonl":
        try:
            lines = [json.loads(line)["prompt"].strip() for line in lines]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: every JSONL line must be an object with a string \"prompt\" field ({e})") from e
    if not lines:
        raise ValueError(f"prompt file {path} has no prompts")
    return lines
