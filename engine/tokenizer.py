"""The model's tokenizer, chat template included, from a HF folder or built from a GGUF file."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader.cache import cache_dir, write_atomic
from pagoda.engine.loader.resolve import default_gguf_path, resolve_model


def load_tokenizer(config: EngineConfig) -> PreTrainedTokenizerBase:
    """--tokenizer if given, else the model's own; a dummy shape borrows the default model's."""
    if config.tokenizer is not None:
        return tokenizer_from(Path(config.tokenizer).expanduser())
    resolved = resolve_model(config)
    if resolved.kind == "dummy":
        folder = resolved.path.parent if resolved.path is not None else None
        if folder is not None and (folder / "tokenizer.json").is_file():
            return tokenizer_from(folder)
        return gguf_tokenizer(default_gguf_path())
    assert resolved.path is not None, "a gguf or hf model has a path"
    return tokenizer_from(resolved.path)


def tokenizer_from(path: Path) -> PreTrainedTokenizerBase:
    if path.suffix == ".gguf" and path.is_file():
        return gguf_tokenizer(path)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}: give a .gguf file or a folder with tokenizer.json"
        )
    return AutoTokenizer.from_pretrained(path)


def gguf_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """Built from the GGUF's vocabulary by transformers (slow: tens of seconds), then cached."""
    cached = cache_dir(path) / "tokenizer"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    write_atomic(cached, tokenizer.save_pretrained, directory=True)
    return tokenizer
