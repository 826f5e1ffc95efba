"""Model sources (GGUF file, HF folder, dummy shape) turned into our model with its weights."""

from pagoda.engine.loader.model_loader import load_model
from pagoda.engine.loader.resolve import ResolvedModel, default_gguf_path, resolve_model

__all__ = ["ResolvedModel", "default_gguf_path", "load_model", "resolve_model"]
