"""Our model code: one file per family, built from a ModelConfig, attention through a backend."""

from __future__ import annotations

from pagoda.engine.attention import AttentionBackend
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.models.llama import LlamaForCausalLM
from pagoda.engine.models.registry import model_class

__all__ = ["LlamaForCausalLM", "ModelConfig", "build_model"]


def build_model(cfg: ModelConfig, backend: AttentionBackend) -> LlamaForCausalLM:
    """The model for cfg.architecture, parameters uninitialized, on the current default device/dtype."""
    return model_class(cfg.architecture)(cfg, backend)
