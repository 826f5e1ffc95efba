"""The Llama block (also Mistral with its sliding window, Qwen2 with its q/k/v bias, Phi-3 with
its fused checkpoint tensors) over the paged KV cache; the other families build on its parts.

Input is the runner's flattened batch: [T] token ids and positions, one AttentionMetadata; each
layer's attention writes its K/V into that layer's (k_cache, v_cache) and reads its context there.
Weights load by HF checkpoint names (model.layers.N.self_attn.q_proj.weight ...), each parameter
through its weight_loader, which keeps this rank's tensor-parallel shard. Under pipeline
parallelism a rank builds only its stage's layers (the others are PPMissingLayer placeholders, so
names keep their numbers) and passes the hidden states and residual on to the next stage.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pagoda.engine.attention import AttentionBackend, AttentionMetadata
from pagoda.engine.distributed import get_pp_group, get_tensor_model_parallel_world_size
from pagoda.engine.layers.activation import get_act_and_mul
from pagoda.engine.layers.embedding import LogitsProcessor, ParallelLMHead, VocabParallelEmbedding
from pagoda.engine.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from pagoda.engine.layers.norm import RMSNorm
from pagoda.engine.layers.rotary import RotaryEmbedding
from pagoda.engine.layers.weights import LoadedWeight, default_weight_loader
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.models.pipeline import IntermediateTensors, PPMissingLayer, get_pp_indices
from pagoda.engine.quantization.kv_cache import kv_scale_target, load_kv_scale

KVCache = tuple[torch.Tensor, torch.Tensor]

# (our merged parameter's name part, HF checkpoint name part, shard id)
STACKED_PARAMS = [
    ("qkv_proj", "q_proj", "q"),
    ("qkv_proj", "k_proj", "k"),
    ("qkv_proj", "v_proj", "v"),
    ("gate_up_proj", "gate_proj", 0),
    ("gate_up_proj", "up_proj", 1),
]


class LlamaAttention(nn.Module):
    k_scale: torch.Tensor  # buffers: an FP8 cache's scales, one per KV head of this rank
    v_scale: torch.Tensor

    def __init__(
        self,
        cfg: ModelConfig,
        backend: AttentionBackend,
        rotary: RotaryEmbedding,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.qkv_proj = QKVParallelLinear(
            cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads, bias=cfg.attention_bias
        )
        # This rank's heads.
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.head_dim = cfg.head_dim
        self.q_size, self.kv_size = self.qkv_proj.q_size, self.qkv_proj.kv_size
        self.scale = (cfg.query_pre_attn_scalar or cfg.head_dim) ** -0.5
        sliding = cfg.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = cfg.sliding_window if sliding else None
        self.soft_cap = cfg.attn_logit_softcapping
        self.o_proj = RowParallelLinear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)
        self.rotary = rotary
        self.backend = backend
        # An FP8 cache's scales (quantization/kv_cache.py), over this rank's KV heads.
        self.register_buffer("k_scale", torch.ones(self.num_kv_heads, dtype=torch.float32))
        self.register_buffer("v_scale", torch.ones(self.num_kv_heads, dtype=torch.float32))

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, kv_cache: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.qk_norm(q, k)
        out = self.backend.forward(
            q,
            k,
            v,
            *kv_cache,
            meta,
            self.scale,
            self.sliding_window,
            self.soft_cap,
            self.k_scale,
            self.v_scale,
            self.rotary(positions),
        )
        return self.o_proj(out.reshape(-1, self.q_size))

    def qk_norm(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head norms before RoPE: none in Llama (Qwen3 and Gemma 3 have them)."""
        return q, k


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, intermediate_size: int | None = None) -> None:
        super().__init__()
        size = intermediate_size or cfg.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, [size, size], bias=False)
        self.act = get_act_and_mul(cfg.hidden_act)
        self.down_proj = RowParallelLinear(size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    attention_cls: type[LlamaAttention] = LlamaAttention

    def __init__(
        self, cfg: ModelConfig, backend: AttentionBackend, rotary: RotaryEmbedding, layer_idx: int
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = self.attention_cls(cfg, backend, rotary, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = self.make_mlp(cfg, layer_idx)

    def make_mlp(self, cfg: ModelConfig, layer_idx: int) -> nn.Module:
        return LlamaMLP(cfg)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        kv_cache: KVCache,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The residual stream is carried apart from x so each norm can fuse the add before it.
        if residual is None:
            x, residual = self.input_layernorm(x), x
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, kv_cache, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        backend: AttentionBackend,
        layer_cls: type[nn.Module] = LlamaDecoderLayer,
    ) -> None:
        super().__init__()
        pp = get_pp_group()
        # The last stage keeps the table too when the LM head shares it.
        if pp.is_first_rank or (cfg.tie_word_embeddings and pp.is_last_rank):
            self.embed_tokens: VocabParallelEmbedding | PPMissingLayer = VocabParallelEmbedding(
                cfg.vocab_size, cfg.hidden_size
            )
        else:
            self.embed_tokens = PPMissingLayer()
        # One cos/sin table for all layers (Llama 3.1's is 64 MiB).
        rotary = RotaryEmbedding(
            cfg.head_dim,
            cfg.max_position_embeddings,
            cfg.rope_theta,
            cfg.rope_scaling,
            cfg.max_model_len,
            cfg.rotary_dim,
        )
        self.start_layer, self.end_layer = get_pp_indices(
            cfg.num_layers, pp.rank_in_group, pp.world_size
        )
        self.layers = nn.ModuleList(
            layer_cls(cfg, backend, rotary, i)
            if self.start_layer <= i < self.end_layer
            else PPMissingLayer()
            for i in range(cfg.num_layers)
        )
        self.norm = (
            RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if pp.is_last_rank else PPMissingLayer()
        )

    def embed_input(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
        intermediate_tensors: IntermediateTensors | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        """kv_caches: one per layer of this stage. The first stage starts from the token ids, a
        later one from the previous stage's tensors; all but the last return theirs."""
        pp = get_pp_group()
        if pp.is_first_rank:
            x, residual = self.embed_input(input_ids), None
        else:
            assert intermediate_tensors is not None  # a later stage gets the previous one's
            x, residual = intermediate_tensors["hidden_states"], intermediate_tensors["residual"]
        layers = self.layers[self.start_layer : self.end_layer]
        for layer, kv_cache in zip(layers, kv_caches, strict=True):
            x, residual = layer(positions, x, residual, kv_cache, meta)
        if not pp.is_last_rank:
            assert residual is not None  # every stage holds at least one layer
            return {"hidden_states": x, "residual": residual}
        return self.norm(x, residual)[0]


class LlamaForCausalLM(nn.Module):
    model_cls: type[LlamaModel] = LlamaModel
    layer_cls: type[nn.Module] = LlamaDecoderLayer

    def __init__(self, cfg: ModelConfig, backend: AttentionBackend) -> None:
        super().__init__()
        self.config = cfg
        self.model = self.model_cls(cfg, backend, self.layer_cls)
        self.lm_head: ParallelLMHead | PPMissingLayer
        if not get_pp_group().is_last_rank:
            self.lm_head = PPMissingLayer()
        elif cfg.tie_word_embeddings:
            embed_tokens = self.model.embed_tokens
            assert isinstance(embed_tokens, VocabParallelEmbedding)  # the last stage keeps it tied
            self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size).tie_weights(embed_tokens)
        else:
            self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size)
        self.logits_processor = LogitsProcessor(cfg.vocab_size)

    @property
    def num_kv_heads(self) -> int:
        """KV heads on this rank (one, replicated, where tensor_parallel_size exceeds them)."""
        return max(1, self.config.num_kv_heads // get_tensor_model_parallel_world_size())

    @property
    def num_stage_layers(self) -> int:
        return self.model.end_layer - self.model.start_layer

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
        intermediate_tensors: IntermediateTensors | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        """[T] ids and positions of the flattened batch -> final hidden states [T, hidden] (or,
        before the last pipeline stage, the tensors the next stage starts from)."""
        return self.model(input_ids, positions, kv_caches, meta, intermediate_tensors)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, hidden] -> float32 logits [N, vocab] (last pipeline stage only)."""
        return self.logits_processor(self.lm_head, hidden)

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, LoadedWeight]]) -> None:
        """Load HF-named tensors, each through its parameter's weight_loader; every parameter of
        this rank must be given (tensors of other pipeline stages are skipped)."""
        params = dict(self.named_parameters())
        expected = self.expected_loads(params)
        missing_prefixes = tuple(
            f"{name}." for name, m in self.named_modules() if isinstance(m, PPMissingLayer)
        )
        loaded = set()
        for name, tensor in weights:
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue  # some tied checkpoints still store the shared table
            if name.endswith("rotary_emb.inv_freq"):
                continue  # old HF checkpoints saved this buffer; we compute it
            if name.startswith(missing_prefixes):
                continue  # another pipeline stage's
            if (kv_scale := kv_scale_target(name)) is not None:
                self.load_kv_scale(name, tensor, *kv_scale)
                continue
            target, shard = self.checkpoint_target(name)
            if target not in params:
                raise KeyError(f"checkpoint tensor {name!r} has no place in the model")
            param = params[target]
            loader = getattr(param, "weight_loader", default_weight_loader)
            try:
                loader(param, tensor) if shard is None else loader(param, tensor, *shard)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from e
            loaded.add((target, shard))
        whole = {n for n, s in loaded if s is None}  # merged ones given fused (Phi-3's qkv_proj)
        unloaded = {(n, s) for n, s in expected - loaded if n not in whole}
        if unloaded:
            missing = sorted(f"{n}{list(s)}" if s is not None else n for n, s in unloaded)
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")

    def load_kv_scale(self, name: str, tensor: LoadedWeight, attention: str, which: str) -> None:
        """An FP8 KV cache's scale: optional, so not among the parameters every checkpoint gives."""
        try:
            attn = self.get_submodule(attention)
        except AttributeError:
            raise KeyError(f"checkpoint tensor {name!r} has no place in the model") from None
        assert isinstance(attn, LlamaAttention)
        qkv = attn.qkv_proj  # this rank's KV heads start where its k shard does
        first = qkv.tp_rank // qkv.num_kv_head_replicas * qkv.num_kv_heads
        scales = {"k": [attn.k_scale], "v": [attn.v_scale], "kv": [attn.k_scale, attn.v_scale]}
        for scale in scales[which]:
            load_kv_scale(scale, tensor, first, qkv.total_num_kv_heads, name)

    def checkpoint_target(self, name: str) -> tuple[str, tuple | None]:
        """(our parameter's name, the extra weight_loader arguments: the shard) for a checkpoint
        tensor's name."""
        for merged, part, shard in STACKED_PARAMS:
            if f".{part}." in name:
                return name.replace(f".{part}.", f".{merged}."), (shard,)
        return name, None

    def expected_loads(self, params: dict[str, nn.Parameter]) -> set[tuple[str, tuple | None]]:
        """Every (parameter, shard) the checkpoint must give: merged ones once per shard."""
        expected: set[tuple[str, tuple | None]] = set()
        for name in params:
            shards = [(s,) for merged, _, s in STACKED_PARAMS if f".{merged}." in name]
            expected |= {(name, shard) for shard in shards} if shards else {(name, None)}
        return expected
