"""What the model code and the runner need to know about a model, whatever file it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# HF architectures that are all the Llama block (Qwen2 only adds a q/k/v bias).
LLAMA_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
# GGUF's general.architecture values with Llama's tensor layout.
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM"}


@dataclass
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None  # always with a "rope_type" key; None for plain RoPE
    max_position_embeddings: int
    tie_word_embeddings: bool
    bos_token_id: int | None
    eos_token_ids: list[int] = field(default_factory=list)
    attention_bias: bool = False

    def __post_init__(self) -> None:
        if self.architecture not in LLAMA_ARCHITECTURES:
            raise ValueError(
                f"unsupported architecture {self.architecture!r}; supported: "
                f"{', '.join(LLAMA_ARCHITECTURES)}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )

    @classmethod
    def from_hf(
        cls, cfg: dict[str, Any], generation_config: dict[str, Any] | None = None
    ) -> ModelConfig:
        """From a HF config.json dict (transformers 4 or 5 spelling of the RoPE settings)."""
        architecture = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
        rope: dict[str, Any] = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
        rope_theta = cfg.get("rope_theta", rope.pop("rope_theta", 10000.0))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        eos: list[int] = []
        for source in (cfg, generation_config or {}):
            ids = source.get("eos_token_id")
            for i in ids if isinstance(ids, list) else [] if ids is None else [ids]:
                if i not in eos:
                    eos.append(i)
        return cls(
            architecture=architecture,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=None if rope_type == "default" else {"rope_type": rope_type, **rope},
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos,
            attention_bias=cfg.get("attention_bias", architecture == "Qwen2ForCausalLM"),
        )

    @classmethod
    def from_gguf(
        cls,
        meta: dict[str, Any],
        tensors: dict[str, tuple[int, ...]],
        rope_freqs: list[float] | None = None,
    ) -> ModelConfig:
        """From GGUF metadata (key -> value), the file's tensor shapes (rows first) and its
        rope_freqs tensor, where llama.cpp keeps Llama 3.1's RoPE scaling as per-frequency factors."""
        arch = meta["general.architecture"]
        if arch not in GGUF_ARCHITECTURES:
            raise ValueError(
                f"unsupported GGUF architecture {arch!r}; supported: "
                f"{', '.join(GGUF_ARCHITECTURES)}"
            )
        num_heads = meta[f"{arch}.attention.head_count"]
        hidden = meta[f"{arch}.embedding_length"]
        rope_scaling, scaling_type = None, meta.get(f"{arch}.rope.scaling.type", "none")
        if rope_freqs is not None:
            rope_scaling = {"rope_type": "freq_factors", "factors": rope_freqs}
        elif scaling_type == "linear":
            rope_scaling = {"rope_type": "linear", "factor": meta[f"{arch}.rope.scaling.factor"]}
        elif scaling_type != "none":
            raise ValueError(f"unsupported GGUF rope scaling {scaling_type!r}")
        eos = [
            meta[k]
            for k in (
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.eot_token_id",
                "tokenizer.ggml.eom_token_id",
            )
            if k in meta
        ]
        return cls(
            architecture=GGUF_ARCHITECTURES[arch],
            vocab_size=meta.get(f"{arch}.vocab_size") or tensors["token_embd.weight"][0],
            hidden_size=hidden,
            intermediate_size=meta[f"{arch}.feed_forward_length"],
            num_layers=meta[f"{arch}.block_count"],
            num_heads=num_heads,
            num_kv_heads=meta.get(f"{arch}.attention.head_count_kv", num_heads),
            head_dim=meta.get(f"{arch}.attention.key_length", hidden // num_heads),
            rms_norm_eps=meta[f"{arch}.attention.layer_norm_rms_epsilon"],
            rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
            rope_scaling=rope_scaling,
            max_position_embeddings=meta.get(f"{arch}.context_length", 4096),
            tie_word_embeddings="output.weight" not in tensors,
            bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_token_ids=list(dict.fromkeys(eos)),
            attention_bias="blk.0.attn_q.bias" in tensors,
        )

    @classmethod
    def from_shape(cls, name: str) -> ModelConfig:
        """A named shape for --load-format dummy ("llama-3.1-8b", "smollm2-135m", ...)."""
        from pagoda.engine.models.shapes import DUMMY_SHAPES

        if name not in DUMMY_SHAPES:
            raise ValueError(
                f"unknown model shape {name!r}; known shapes: {', '.join(DUMMY_SHAPES)}"
            )
        return cls.from_hf(DUMMY_SHAPES[name])
