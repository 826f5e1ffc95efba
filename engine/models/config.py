"""What the model code and the runner need to know about a model, whatever file it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pagoda.engine.models.registry import check_supported

# GGUF's general.architecture values with Llama's tensor layout.
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
# Layers in which Gemma alternates a sliding window with global attention, in configs written
# before transformers listed `layer_types` (every Nth layer is global).
_GLOBAL_EVERY = {"Gemma2ForCausalLM": 2, "Gemma3ForCausalLM": 6}


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
    hidden_act: str = "silu"
    # Per layer, "full_attention" or "sliding_attention" (over the last sliding_window tokens).
    layer_types: list[str] = field(default_factory=list)
    sliding_window: int | None = None
    local_rope_theta: float | None = None  # Gemma 3's sliding layers: their own RoPE base
    # RoPE over the first rotary_dim dims of each head only, the rest passed through (Phi-4-mini's
    # partial_rotary_factor 0.75); None: all of head_dim.
    rotary_dim: int | None = None
    attn_logit_softcapping: float | None = None  # Gemma 2
    final_logit_softcapping: float | None = None  # Gemma 2
    query_pre_attn_scalar: float | None = None  # Gemma: scores scaled by its -1/2, not head_dim's
    # Mixture of experts (Mixtral, Qwen3-MoE): 0 experts is a dense model.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True  # renormalize the top-k routing weights to sum to 1
    mlp_only_layers: list[int] = field(default_factory=list)  # dense layers of a MoE model
    # The engine's context length (set by the loader): LongRoPE picks its factors by it.
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        check_supported(self.architecture)
        if not self.layer_types:
            self.layer_types = ["full_attention"] * self.num_layers
        if len(self.layer_types) != self.num_layers:
            raise ValueError(
                f"layer_types lists {len(self.layer_types)} layers, the model has {self.num_layers}"
            )
        rotary = self.rotary_dim
        if rotary is not None and (rotary % 2 or not 0 < rotary <= self.head_dim):
            raise ValueError(
                f"partial_rotary_factor gives RoPE over {rotary} of {self.head_dim} head dims: "
                "it must be an even number of them"
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
        rope, local_theta = _rope_settings(cfg)
        rope_theta = rope.pop("rope_theta", cfg.get("rope_theta", 10000.0))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        partial = rope.pop("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
        if rope_type in ("yarn", "longrope", "dynamic"):
            rope.setdefault(
                "original_max_position_embeddings",
                cfg.get("original_max_position_embeddings", cfg.get("max_position_embeddings")),
            )
        eos: list[int] = []
        for source in (cfg, generation_config or {}):
            ids = source.get("eos_token_id")
            for i in ids if isinstance(ids, list) else [] if ids is None else [ids]:
                if i not in eos:
                    eos.append(i)
        num_layers = cfg["num_hidden_layers"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        return cls(
            architecture=architecture,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=num_layers,
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            head_dim=head_dim,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=None if rope_type == "default" else {"rope_type": rope_type, **rope},
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos,
            attention_bias=cfg.get("attention_bias", architecture == "Qwen2ForCausalLM"),
            hidden_act=cfg.get("hidden_activation") or cfg.get("hidden_act") or "silu",
            layer_types=_layer_types(cfg, architecture, num_layers),
            sliding_window=cfg.get("sliding_window"),
            local_rope_theta=local_theta,
            rotary_dim=None if partial == 1.0 else int(head_dim * partial),  # HF's and vLLM's int()
            attn_logit_softcapping=cfg.get("attn_logit_softcapping"),
            final_logit_softcapping=cfg.get("final_logit_softcapping"),
            query_pre_attn_scalar=cfg.get("query_pre_attn_scalar"),
            num_experts=cfg.get("num_local_experts") or cfg.get("num_experts") or 0,
            num_experts_per_tok=cfg.get("num_experts_per_tok") or 0,
            moe_intermediate_size=cfg.get("moe_intermediate_size") or cfg["intermediate_size"],
            norm_topk_prob=cfg.get("norm_topk_prob", True),
            mlp_only_layers=_dense_layers(cfg, num_layers),
        )

    @classmethod
    def from_gguf(
        cls,
        meta: dict[str, Any],
        tensors: dict[str, tuple[int, ...]],
        factors: dict[str, list[float]] | None = None,
    ) -> ModelConfig:
        """From GGUF metadata (key -> value), the file's tensor shapes (rows first) and the RoPE
        factor tensors (rope_freqs: Llama 3.1's scaling; rope_factors_long/short: Phi-3's)."""
        arch = meta["general.architecture"]
        if arch not in GGUF_ARCHITECTURES:
            raise ValueError(
                f"unsupported GGUF architecture {arch!r}; supported: "
                f"{', '.join(GGUF_ARCHITECTURES)}"
            )
        factors = factors or {}
        num_heads = meta[f"{arch}.attention.head_count"]
        hidden = meta[f"{arch}.embedding_length"]
        num_layers = meta[f"{arch}.block_count"]
        head_dim = meta.get(f"{arch}.attention.key_length", hidden // num_heads)
        max_position = meta.get(f"{arch}.context_length", 4096)
        rope_dims = meta.get(f"{arch}.rope.dimension_count", head_dim)  # Phi-4-mini's: partial
        rope_scaling: dict[str, Any] | None = None
        scaling_type = meta.get(f"{arch}.rope.scaling.type", "none")
        if "rope_freqs" in factors:
            rope_scaling = {"rope_type": "freq_factors", "factors": factors["rope_freqs"]}
        elif "rope_factors_long" in factors:
            rope_scaling = {
                "rope_type": "longrope",
                "long_factor": factors["rope_factors_long"],
                "short_factor": factors["rope_factors_short"],
                "original_max_position_embeddings": meta[
                    f"{arch}.rope.scaling.original_context_length"
                ],
                "attention_factor": meta.get(f"{arch}.rope.scaling.attn_factor"),
            }
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
        architecture = GGUF_ARCHITECTURES[arch]
        sliding_window = meta.get(f"{arch}.attention.sliding_window")
        gemma = arch.startswith("gemma")
        pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
        if isinstance(pattern, list):  # per layer: true for a sliding-window one
            layer_types = ["sliding_attention" if p else "full_attention" for p in pattern]
        elif gemma:  # every Nth layer global: llama.cpp's 2 (Gemma 2) and 6 (Gemma 3) by default
            every = pattern or _GLOBAL_EVERY[architecture]
            layer_types = [
                "full_attention" if (i + 1) % every == 0 else "sliding_attention"
                for i in range(num_layers)
            ]
        else:
            kind = "full_attention" if sliding_window is None else "sliding_attention"
            layer_types = [kind] * num_layers
        return cls(
            architecture=architecture,
            vocab_size=meta.get(f"{arch}.vocab_size") or tensors["token_embd.weight"][0],
            hidden_size=hidden,
            intermediate_size=meta[f"{arch}.feed_forward_length"],
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=meta.get(f"{arch}.attention.head_count_kv", num_heads),
            head_dim=head_dim,
            rms_norm_eps=meta[f"{arch}.attention.layer_norm_rms_epsilon"],
            rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
            rope_scaling=rope_scaling,
            max_position_embeddings=max_position,
            tie_word_embeddings="output.weight" not in tensors,
            bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_token_ids=list(dict.fromkeys(eos)),
            attention_bias="blk.0.attn_q.bias" in tensors,
            hidden_act="gelu_pytorch_tanh" if gemma else "silu",
            layer_types=layer_types,
            sliding_window=sliding_window,
            local_rope_theta=(
                float(meta.get(f"{arch}.rope.freq_base_swa", 10000.0)) if arch == "gemma3" else None
            ),
            rotary_dim=None if rope_dims == head_dim else rope_dims,
            attn_logit_softcapping=meta.get(f"{arch}.attn_logit_softcapping"),
            final_logit_softcapping=meta.get(f"{arch}.final_logit_softcapping"),
            # llama.cpp's rule: the 27B Gemmas scale by hidden / heads, the others by head_dim.
            query_pre_attn_scalar=(
                (hidden // num_heads if num_layers in (46, 62) else head_dim) if gemma else None
            ),
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


def _rope_settings(cfg: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """(the RoPE settings of the global layers, the base of the sliding ones if they differ):
    transformers 5 writes `rope_parameters` (per layer type for Gemma 3), 4 `rope_scaling`."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "full_attention" in params:
        local = params.get("sliding_attention") or {}
        return dict(params["full_attention"]), local.get("rope_theta")
    return params, cfg.get("rope_local_base_freq")


def _layer_types(cfg: dict[str, Any], architecture: str, num_layers: int) -> list[str]:
    if cfg.get("layer_types"):
        return list(cfg["layer_types"])
    every = _GLOBAL_EVERY.get(architecture)
    if every is not None:
        every = cfg.get("sliding_window_pattern", every)
        return [
            "full_attention" if (i + 1) % every == 0 else "sliding_attention"
            for i in range(num_layers)
        ]
    sliding = cfg.get("sliding_window") is not None and cfg.get("use_sliding_window", True)
    return ["sliding_attention" if sliding else "full_attention"] * num_layers


def _dense_layers(cfg: dict[str, Any], num_layers: int) -> list[int]:
    """Layers of a MoE model with a plain MLP: those listed, and all but every Nth (Qwen3-MoE)."""
    step = cfg.get("decoder_sparse_step") or 1
    listed = set(cfg.get("mlp_only_layers") or [])
    return [i for i in range(num_layers) if i in listed or (i + 1) % step != 0]
