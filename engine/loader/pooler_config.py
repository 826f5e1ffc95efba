"""The pooler settings of an embedding model: --pooler-config, else the sentence-transformers files
beside the weights (modules.json, 1_Pooling/config.json), else vLLM's defaults for a decoder
(last token, normalized)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.loader.hf_folder import read_json
from pagoda.engine.loader.resolve import resolve_model
from pagoda.engine.pooling_params import PoolerConfig

# sentence-transformers' pooling modes that Pagoda computes.
ST_MODES = {"pooling_mode_lasttoken": "LAST", "pooling_mode_mean_tokens": "MEAN"}
ST_NORMALIZE = "sentence_transformers.models.Normalize"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_TRANSFORMER = "sentence_transformers.models.Transformer"


def load_pooler_config(config: EngineConfig) -> PoolerConfig:
    resolved = resolve_model(config)
    folder = resolved.path if resolved.kind == "hf" else None
    found = sentence_transformers_config(folder) if folder is not None else {}
    model_cfg = read_json(folder / "config.json") if folder is not None else {}
    dims = model_cfg.get("matryoshka_dimensions")
    settings: dict[str, Any] = {
        **found,
        "is_matryoshka": bool(model_cfg.get("is_matryoshka") or dims),
        "matryoshka_dimensions": tuple(dims) if dims else None,
    }
    settings.update(parse_pooler_flag(config.pooler_config))
    return PoolerConfig(**settings)


def parse_pooler_flag(text: str | None) -> dict[str, Any]:
    """--pooler-config's JSON: vLLM's keys pooling_type and normalize (others refused)."""
    if text is None:
        return {}
    try:
        given = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--pooler-config is not JSON: {e}") from None
    if not isinstance(given, dict):
        raise ValueError("--pooler-config must be a JSON object")
    unknown = sorted(set(given) - {"pooling_type", "normalize"})
    if unknown:
        raise ValueError(
            f"--pooler-config: {', '.join(unknown)} not supported (only pooling_type, normalize)"
        )
    out = {k: v for k, v in given.items() if v is not None}
    pooling_type = str(out.get("pooling_type", "LAST")).upper()
    if pooling_type not in ("LAST", "MEAN"):
        raise ValueError(f"--pooler-config: pooling_type {pooling_type} not supported (LAST, MEAN)")
    if "pooling_type" in out:
        out["pooling_type"] = pooling_type
    if not isinstance(out.get("normalize", True), bool):
        raise ValueError("--pooler-config: normalize must be true or false")
    return out


def sentence_transformers_config(folder: Path) -> dict[str, Any]:
    """pooling_type and normalize from a sentence-transformers model's files; {} without them."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = json.loads(modules_file.read_text())
    kinds = [m.get("type") for m in modules]
    other = sorted({k for k in kinds if k not in (ST_TRANSFORMER, ST_POOLING, ST_NORMALIZE)})
    if other:
        raise ModelLoadError(f"{modules_file}: modules {', '.join(other)} are not supported")
    out: dict[str, Any] = {"normalize": ST_NORMALIZE in kinds}
    pooling = next((m for m in modules if m.get("type") == ST_POOLING), None)
    if pooling is not None:
        settings = read_json(folder / pooling.get("path", "1_Pooling") / "config.json")
        modes = [k for k, v in settings.items() if k.startswith("pooling_mode") and v]
        if len(modes) != 1 or modes[0] not in ST_MODES:
            raise ModelLoadError(
                f"{folder}: sentence-transformers pooling {modes} is not supported "
                f"(one of {', '.join(ST_MODES)})"
            )
        out["pooling_type"] = ST_MODES[modes[0]]
    return out
