"""Pagoda's inference engine. `from pagoda.engine import LLM, SamplingParams`.

Exports load lazily, so `pagoda --help` and the operator never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LLM": "pagoda.engine.llm",
    "AsyncLLM": "pagoda.engine.async_llm",
    "LLMEngine": "pagoda.engine.llm_engine",
    "EngineConfig": "pagoda.engine.config",
    "SamplingParams": "pagoda.engine.sampling_params",
    "RequestOutput": "pagoda.engine.outputs",
    "CompletionOutput": "pagoda.engine.outputs",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pagoda.engine' has no attribute {name!r}")
