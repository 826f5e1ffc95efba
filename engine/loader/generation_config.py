"""--generation-config: the model's generation_config.json as default sampling parameters, as vLLM
takes them (`auto`: the model's own file; `vllm`: none; a folder: its file). Only values that
differ from transformers' defaults count (GenerationConfig.to_diff_dict), and of those only the
sampling parameters vLLM reads; max_new_tokens becomes max_tokens. A request's own fields win."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader.resolve import resolve_model

log = logging.getLogger(__name__)

SAMPLING_KEYS = ("repetition_penalty", "temperature", "top_k", "top_p", "min_p", "max_new_tokens")


def load_generation_defaults(config: EngineConfig) -> dict[str, Any]:
    if config.generation_config == "vllm":
        return {}
    if config.generation_config == "auto":
        resolved = resolve_model(config)
        folder = resolved.path if resolved.kind == "hf" else None
    else:
        folder = Path(config.generation_config).expanduser()
        if not (folder / "generation_config.json").is_file():
            raise ValueError(f"--generation-config {folder}: no generation_config.json there")
    if folder is None or not (folder / "generation_config.json").is_file():
        return {}
    from transformers import GenerationConfig

    diff = GenerationConfig.from_pretrained(str(folder)).to_diff_dict()
    defaults = {k: diff[k] for k in SAMPLING_KEYS if diff.get(k) is not None}
    if "max_new_tokens" in defaults:
        defaults["max_tokens"] = defaults.pop("max_new_tokens")
    if defaults:
        log.info("default sampling parameters from %s: %s", folder, defaults)
    return defaults
