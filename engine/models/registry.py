"""The model registry: config.json's `architectures` name -> our model class.

Classes are named by module path and imported on use, so reading a config needs no model code.
Mistral, Qwen2 and Phi-3 are the Llama block itself (sliding window, q/k/v bias and fused
checkpoint tensors are options of it); the other families add what their checkpoints need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from pagoda.engine.models.llama import LlamaForCausalLM

MODELS: dict[str, str] = {
    "LlamaForCausalLM": "llama:LlamaForCausalLM",
    "MistralForCausalLM": "llama:LlamaForCausalLM",
    "Qwen2ForCausalLM": "llama:LlamaForCausalLM",
    "Phi3ForCausalLM": "llama:LlamaForCausalLM",
    "Qwen3ForCausalLM": "qwen3:Qwen3ForCausalLM",
    "Gemma2ForCausalLM": "gemma2:Gemma2ForCausalLM",
    "Gemma3ForCausalLM": "gemma3:Gemma3ForCausalLM",
    "MixtralForCausalLM": "mixtral:MixtralForCausalLM",
    "Qwen3MoeForCausalLM": "qwen3_moe:Qwen3MoeForCausalLM",
}


def check_supported(architecture: str) -> None:
    if architecture not in MODELS:
        raise ValueError(
            f"unsupported architecture {architecture!r}; supported: {', '.join(MODELS)}"
        )


def model_class(architecture: str) -> type[LlamaForCausalLM]:
    """Every family's class is LlamaForCausalLM or a subclass of it."""
    check_supported(architecture)
    module, name = MODELS[architecture].split(":")
    cls = getattr(importlib.import_module(f"pagoda.engine.models.{module}"), name)
    return cast("type[LlamaForCausalLM]", cls)
