"""Checkpoints whose linear weights are stored in 8 bits already, loaded as they are.

config.json's `quantization_config` says so in one of these formats:
- `"quant_method": "fp8"` (vLLM's and transformers' FP8 checkpoints): e4m3 weights with one
  `weight_scale` per tensor, activation_scheme dynamic or static (`input_scale`);
- `"quant_method": "compressed-tensors"` with an 8-bit weight scheme: float (llm-compressor's FP8
  and FP8_DYNAMIC) or symmetric int (W8A8 INT8), `weight_scale` per tensor ([1]) or per output
  channel ([N, 1]).

The 8-bit values go straight into 8-bit parameters through each layer's own weight loader (so the
tensor-parallel shard is read, never the whole tensor), and the scales into a per-row scale
beside them: a per-tensor scale is repeated over its projection's rows, which keeps q, k and v's
separate scales exact inside the fused qkv layer. Activations are then quantized per token as they
arrive (a static `input_scale` is not used: the dynamic scale fits each token at least as well).
What the layers cannot run (block-wise scales, zero points, 4-bit schemes, layers left
unquantized other than the LM head, mixtures of experts) is refused with the reason. A
`kv_cache_scheme` (the KV cache's calibrated scales, kv_cache.py) is checked here too, and may
come alone, over full-precision weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pagoda.engine.layers.linear import (
    ColumnParallelLinear,
    LinearBase,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from pagoda.engine.layers.moe import FusedMoE
from pagoda.engine.layers.weights import LoadedWeight, copy_checked, set_weight_loader, whole
from pagoda.engine.quantization.fp8 import FP8, Fp8LinearMethod
from pagoda.engine.quantization.int8 import Int8LinearMethod
from pagoda.engine.quantization.kv_cache import check_kv_cache_scheme
from pagoda.engine.quantization.w4_checkpoint import W4Scheme, w4_scheme

log = logging.getLogger(__name__)

# What a checkpoint may leave in full precision: the LM head stays so in every case here.
MAY_IGNORE = {"lm_head"}


@dataclass(frozen=True)
class CheckpointScheme:
    method: str  # the quant_method: "fp8" or "compressed-tensors"
    weight_dtype: torch.dtype  # torch.float8_e4m3fn or torch.int8


def checkpoint_scheme(hf_config: dict[str, Any]) -> CheckpointScheme | W4Scheme | None:
    """The 8-bit or 4-bit (w4_checkpoint.py) scheme config.json describes, None for an
    unquantized checkpoint; raises ValueError with the reason for a quantized checkpoint Pagoda
    cannot load."""
    qc = hf_config.get("quantization_config")
    if qc is None:
        return None
    check_kv_cache_scheme(qc.get("kv_cache_scheme"))
    method = qc.get("quant_method")
    if method in ("awq", "gptq"):
        return w4_scheme(qc)
    if method == "fp8":
        if qc.get("weight_block_size"):
            raise ValueError(
                f"block-wise FP8 checkpoints (weight_block_size {qc['weight_block_size']}) are "
                "not supported: Pagoda's FP8 layers take a scale per tensor or per output channel"
            )
        _check_ignored(qc.get("ignored_layers") or qc.get("modules_to_not_convert") or [])
        return CheckpointScheme(method, FP8)
    if method == "compressed-tensors":
        groups = list((qc.get("config_groups") or {}).values())
        if not groups and qc.get("kv_cache_scheme"):
            return None  # only the KV cache's scales: the weights are in full precision
        weights = [g.get("weights") or {} for g in groups]
        kind = (weights[0].get("type"), weights[0].get("num_bits")) if len(groups) == 1 else None
        if kind not in (("float", 8), ("int", 8)):
            schemes = [f"{w.get('type')}{w.get('num_bits')}" for w in weights]
            raise ValueError(
                f"compressed-tensors checkpoint with weight schemes {schemes}: only 8-bit "
                "weights (float8 or int8) are supported"
            )
        if weights[0].get("strategy") not in ("tensor", "channel"):
            raise ValueError(
                f"compressed-tensors with weight strategy {weights[0].get('strategy')!r}: only "
                "'tensor' and 'channel' weight scales are supported"
            )
        if weights[0].get("symmetric") is False:
            raise ValueError("compressed-tensors weights with zero points are not supported")
        _check_ignored(qc.get("ignore") or [])
        return CheckpointScheme(method, FP8 if kind == ("float", 8) else torch.int8)
    raise ValueError(
        f"checkpoint quantized with {method!r} is not supported (supported: fp8, "
        "compressed-tensors 8-bit, awq, gptq)"
    )


def _check_ignored(ignored: list[str]) -> None:
    other = [name for name in ignored if name.split(".")[-1] not in MAY_IGNORE]
    if other:
        raise ValueError(
            f"the quantized checkpoint leaves {len(other)} layers unquantized (e.g. {other[:2]}): only "
            f"{sorted(MAY_IGNORE)} may stay in full precision"
        )


def quantized_layers(model: nn.Module) -> list[LinearBase]:
    """The layers an 8-bit checkpoint quantizes: every tensor-parallel linear layer."""
    if any(isinstance(m, FusedMoE) for m in model.modules()):
        raise ValueError("quantized checkpoints of mixture-of-experts models are not supported")
    return [
        m
        for m in model.modules()
        if isinstance(m, LinearBase) and not isinstance(m, ReplicatedLinear)
    ]


def prepare_8bit_parameters(layers: list[LinearBase], dtype: torch.dtype) -> None:
    """Before loading: each layer's weight becomes an 8-bit parameter and gains `weight_scale`
    [rows, 1] in float32, both loaded through the layer's loaders."""
    for layer in layers:
        loader = layer.weight_loader
        layer.weight = nn.Parameter(
            torch.empty_like(layer.weight, dtype=dtype), requires_grad=False
        )
        set_weight_loader(layer.weight, loader)
        rows = layer.weight.shape[0]
        layer.weight_scale = nn.Parameter(
            torch.empty(rows, 1, dtype=torch.float32), requires_grad=False
        )
        set_weight_loader(layer.weight_scale, _scale_loader(layer))


def _scale_loader(layer: LinearBase) -> Callable[..., None]:
    def load(param: nn.Parameter, loaded: LoadedWeight, shard: Any = None) -> None:
        scale = whole(loaded).float().reshape(-1, 1)
        rows = _checkpoint_rows(layer, shard)
        if scale.shape[0] == 1:  # per tensor: the same scale for each of its rows
            scale = scale.expand(rows, 1)
        if isinstance(layer, RowParallelLinear):  # the rows are not split over the ranks
            copy_checked(param, scale, "weight_scale")
        else:  # the weight's own loader: the same rows of this rank, the same shard offsets
            weight_loader: Callable[..., None] = layer.weight_loader
            weight_loader(param, scale) if shard is None else weight_loader(param, scale, shard)

    return load


def _checkpoint_rows(layer: LinearBase, shard: Any) -> int:
    """How many rows the checkpoint tensor (or its shard) has, all ranks together."""
    if isinstance(layer, QKVParallelLinear):
        q, kv = layer.total_num_heads * layer.head_size, layer.total_num_kv_heads * layer.head_size
        return {"q": q, "k": kv, "v": kv, None: q + 2 * kv}[shard]
    if isinstance(layer, MergedColumnParallelLinear):
        return layer.output_size if shard is None else layer.output_sizes[shard]
    if isinstance(layer, ColumnParallelLinear | RowParallelLinear):
        return layer.output_size
    raise TypeError(f"no FP8 checkpoint rows for {type(layer).__name__}")


def without_input_scales(weights: Iterable[tuple[str, LoadedWeight]]) -> Iterator:
    """The checkpoint's tensors less the static activation scales (activations are quantized
    per token instead); said once in the log."""
    told = False
    for name, tensor in weights:
        if name.endswith(".input_scale"):
            if not told:
                log.info("8-bit checkpoint: static input scales unused (activations per token)")
                told = True
            continue
        yield name, tensor


def finish_8bit_layers(
    layers: list[LinearBase], scheme: CheckpointScheme, device: torch.device
) -> None:
    """After loading: the parameters become the method's buffers, as --quantization fp8 leaves
    a layer it quantized itself."""
    method: Fp8LinearMethod | Int8LinearMethod = (
        Fp8LinearMethod.for_device(device)
        if scheme.weight_dtype == FP8
        else Int8LinearMethod.for_device(device)
    )
    for layer in layers:
        q, scale = layer.weight.data, layer.get_parameter("weight_scale").data.view(-1)
        del layer.weight, layer.weight_scale
        method.hold(layer, q, scale)
