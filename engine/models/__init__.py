"""Our model code: the Llama family, built from a ModelConfig, attention through a backend."""

from __future__ import annotations

from pagoda.engine.attention import AttentionBackend
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.models.llama import LlamaForCausalLM

__all__ = ["LlamaForCausalLM", "ModelConfig", "build_model"]


def build_model(cfg: ModelConfig, backend: AttentionBackend) -> LlamaForCausalLM:
    """The model for cfg.architecture, parameters uninitialized, on the current default device/dtype."""
    return LlamaForCausalLM(cfg, backend)  # ModelConfig accepts only Llama-block architectures
