"""A HF model folder: config.json (+ generation_config.json) and *.safetensors shards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from pagoda.engine.layers.weights import LoadedWeight
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.models.config import ModelConfig


def hf_model_config(folder: Path) -> ModelConfig:
    cfg = read_json(folder / "config.json")
    gen_path = folder / "generation_config.json"
    gen = read_json(gen_path) if gen_path.is_file() else None
    try:
        return ModelConfig.from_hf(cfg, gen)
    except KeyError as e:
        raise ModelLoadError(f"{folder / 'config.json'} lacks {e.args[0]!r}") from e


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path} is not readable JSON: {e}") from e


def safetensors_files(folder: Path) -> list[Path]:
    """The shards the index names (some repos also ship a consolidated.safetensors in another
    naming scheme); without an index, every *.safetensors file."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / f for f in sorted(set(read_json(index)["weight_map"].values()))]
    return sorted(folder.glob("*.safetensors"))


def safetensors_weights(files: list[Path]) -> Iterator[tuple[str, LoadedWeight]]:
    """Every tensor of the files, one at a time, with a progress bar on stderr. Each comes as a
    lazy slice (valid during the iteration): its weight loader reads only the rank's shard."""
    with ExitStack() as stack:
        handles = [stack.enter_context(_open(f)) for f in files]
        bar = stack.enter_context(
            tqdm(
                total=sum(len(h.keys()) for h in handles),
                desc="Loading weights",
                unit="tensor",
                leave=False,
            )
        )
        for handle in handles:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                yield name, handle.get_slice(name)
                bar.update()


def _open(path: Path) -> safe_open:
    try:
        return safe_open(path, framework="pt")
    except (SafetensorError, OSError) as e:
        raise ModelLoadError(f"{path} is not a readable safetensors file: {e}") from e
