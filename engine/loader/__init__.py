"""Model sources (GGUF file, HF folder, Hub name, dummy shape) turned into our model with its
weights. Exports load lazily, so the CLI can import loader.errors without torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "pagoda.engine.loader.model_loader",
    "ResolvedModel": "pagoda.engine.loader.resolve",
    "default_gguf_path": "pagoda.engine.loader.resolve",
    "resolve_model": "pagoda.engine.loader.resolve",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pagoda.engine.loader' has no attribute {name!r}")
