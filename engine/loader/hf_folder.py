"""A HF model folder: config.json (+ generation_config.json) and *.safetensors shards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from pagoda.engine.models.config import ModelConfig


def hf_model_config(folder: Path) -> ModelConfig:
    cfg = json.loads((folder / "config.json").read_text())
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else None
    return ModelConfig.from_hf(cfg, gen)


def safetensors_files(folder: Path) -> list[Path]:
    """The shards the index names (some repos also ship a consolidated.safetensors in another
    naming scheme); without an index, every *.safetensors file."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [
            folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))
        ]
    return sorted(folder.glob("*.safetensors"))


def safetensors_weights(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the files, read one at a time, with a progress bar on stderr."""
    with ExitStack() as stack:
        handles = [stack.enter_context(safe_open(f, framework="pt")) for f in files]
        bar = stack.enter_context(
            tqdm(
                total=sum(len(h.keys()) for h in handles),
                desc="Loading weights",
                unit="tensor",
                leave=False,
            )
        )
        for handle in handles:
            for name in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                yield name, handle.get_tensor(name)
                bar.update()
