"""Pagoda's inference engine. `from pagoda.engine import LLM, SamplingParams`.

The exports load on first use, so `pagoda --help` never imports torch; type checkers read them
from the TYPE_CHECKING imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if __name__ != "pagoda.engine":
    # The folder is engine/, the package is pagoda.engine: one name, so no module loads twice.
    raise ImportError(
        f"the engine imports as pagoda.engine, not {__name__}: install the repository "
        "(`make setup`) and write `import pagoda.engine`"
    )

if TYPE_CHECKING:
    from pagoda.engine.async_llm import AsyncLLM
    from pagoda.engine.config import EngineConfig
    from pagoda.engine.llm import LLM
    from pagoda.engine.llm_engine import LLMEngine
    from pagoda.engine.lora.request import LoRARequest
    from pagoda.engine.outputs import (
        CompletionOutput,
        EmbeddingRequestOutput,
        PoolingRequestOutput,
        RequestOutput,
    )
    from pagoda.engine.pooling_params import PoolingParams
    from pagoda.engine.sampling_params import SamplingParams

_EXPORTS = {
    "LLM": "pagoda.engine.llm",
    "AsyncLLM": "pagoda.engine.async_llm",
    "LLMEngine": "pagoda.engine.llm_engine",
    "EngineConfig": "pagoda.engine.config",
    "SamplingParams": "pagoda.engine.sampling_params",
    "RequestOutput": "pagoda.engine.outputs",
    "CompletionOutput": "pagoda.engine.outputs",
    "PoolingParams": "pagoda.engine.pooling_params",
    "PoolingRequestOutput": "pagoda.engine.outputs",
    "EmbeddingRequestOutput": "pagoda.engine.outputs",
    "LoRARequest": "pagoda.engine.lora.request",
}
__all__ = [
    "LLM",
    "AsyncLLM",
    "CompletionOutput",
    "EmbeddingRequestOutput",
    "EngineConfig",
    "LLMEngine",
    "LoRARequest",
    "PoolingParams",
    "PoolingRequestOutput",
    "RequestOutput",
    "SamplingParams",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pagoda.engine' has no attribute {name!r}")
