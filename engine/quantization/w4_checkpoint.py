"""4-bit AWQ and GPTQ checkpoints, loaded as published, into the layout of quantization/w4.py.

config.json's `quantization_config` says which:
- `"quant_method": "awq"` (AutoAWQ, GEMM version): `qweight` int32 [K, N/8] packed along the
  output with AWQ's order (nibble i of a word holds column 0, 2, 4, 6, 1, 3, 5, 7 [i] of its
  eight), `qzeros` int32 [K/g, N/8] packed the same way, `scales` fp16 [K/g, N];
  w = (q - zero) * scale.
- `"quant_method": "gptq"` (AutoGPTQ, GPTQModel, HF optimum): `qweight` int32 [K/8, N] packed
  along the input (nibble j of row i is input 8i + j), `qzeros` int32 [K/g, N/8] packed along the
  output in order, `scales` [K/g, N], `g_idx` int32 [K] (each input's group; meaningful with
  act-order, `desc_act`). The v1 format (`checkpoint_format` "gptq", the default) stores each zero
  minus one, symmetric checkpoints too (8 is stored as 7); gptq_v2 stores it as it is.

Each packed tensor reaches the layer through a view that presents it in the layer's layout
(rows = output channels, as the linear layers' own weight loaders shard them): a
tensor-parallel rank reads only its slice of the file and repacks only that slice. Column-parallel
layers split the outputs; row-parallel layers split the inputs, whole groups to a rank; with
act-order (or one group over all inputs) a row-parallel rank keeps every group's scales and
zeros and its slice of g_idx, as vLLM does. What the kernel cannot run is refused with the
reason: bits other than 4, other layouts (AWQ GEMV, marlin- or exllama-packed), group sizes other
than 32, 64, 128 and -1, layers left unquantized, mixtures of experts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pagoda.engine.layers.linear import LinearBase, RowParallelLinear
from pagoda.engine.layers.weights import LoadedWeight, copy_checked, narrow, shape_of, whole
from pagoda.engine.quantization import CHECKPOINT_FORMATS
from pagoda.engine.quantization.w4 import (
    AWQ_ORDER,
    PACK,
    SEQUENTIAL,
    W4LinearMethod,
    pack_columns,
    unpack_columns,
)

GROUP_SIZES = (32, 64, 128, -1)


@dataclass(frozen=True)
class W4Scheme:
    method: str  # "awq" or "gptq"
    group_size: int  # input channels a group; -1: one group over all of them
    desc_act: bool  # act-order: each input channel's group from g_idx
    zero_offset: int  # added to the stored zeros (GPTQ v1 stores each zero minus one)


def w4_scheme(qc: dict[str, Any]) -> W4Scheme:
    """The scheme of an awq or gptq `quantization_config`; ValueError with the reason for one
    Pagoda cannot run."""
    method = qc["quant_method"]
    bits = qc.get("bits", qc.get("w_bit"))
    group_size = qc.get("group_size", qc.get("q_group_size"))
    if bits != 4:
        raise ValueError(f"{method} checkpoint with {bits}-bit weights: only 4 bits are supported")
    if group_size not in GROUP_SIZES:
        raise ValueError(
            f"{method} checkpoint with group size {group_size}: supported are 32, 64, 128 and -1"
        )
    if method == "awq":
        version = str(qc.get("version", "gemm")).lower()
        if version != "gemm":
            raise ValueError(
                f"AWQ checkpoint of version {version!r}: only the GEMM layout is supported"
            )
        if not qc.get("zero_point", True):
            raise ValueError("AWQ checkpoint without zero points is not supported")
        _check_unconverted(qc.get("modules_to_not_convert") or [])
        return W4Scheme("awq", group_size, False, 0)
    fmt = str(qc.get("checkpoint_format") or qc.get("format") or "gptq").lower()
    if qc.get("is_marlin_format") or fmt not in ("gptq", "gptq_v2"):
        raise ValueError(
            f"GPTQ checkpoint in the {'marlin' if qc.get('is_marlin_format') else fmt!r} format: "
            "only the gptq and gptq_v2 layouts are supported"
        )
    if str(qc.get("pack_dtype", "int32")).removeprefix("torch.") != "int32":
        raise ValueError(f"GPTQ checkpoint packed in {qc['pack_dtype']}: only int32 words")
    if qc.get("lm_head"):
        raise ValueError("GPTQ checkpoint with a quantized lm_head is not supported")
    if qc.get("dynamic"):
        raise ValueError("GPTQ checkpoint with per-module overrides (dynamic) is not supported")
    return W4Scheme("gptq", group_size, bool(qc.get("desc_act")), 1 if fmt == "gptq" else 0)


def _check_unconverted(names: list[str]) -> None:
    other = [n for n in names if n.split(".")[-1] != "lm_head"]
    if other:
        raise ValueError(
            f"the AWQ checkpoint leaves modules unquantized ({other[:2]}): not supported"
        )


def _bounds(index: Any, size: int) -> tuple[int, int]:
    start, stop, step = index.indices(size)
    if step != 1:
        raise ValueError("a checkpoint view reads contiguous ranges")
    return start, stop


class LayerView:
    """A checkpoint tensor presented in the layer's layout ([output channels, ...]), read lazily:
    indexing it reads and converts only that range of the file (the layers' weight loaders take
    it as they take a safetensors slice)."""

    def __init__(self, shape: tuple[int, int], read: Callable[..., torch.Tensor]) -> None:
        self.shape, self.read = shape, read

    def get_shape(self) -> list[int]:
        return list(self.shape)

    def __getitem__(self, index: Any) -> torch.Tensor:
        index = () if index is Ellipsis else index if isinstance(index, tuple) else (index,)
        rows, cols = (*index, slice(None), slice(None))[:2]
        return self.read(*_bounds(rows, self.shape[0]), *_bounds(cols, self.shape[1]))


def _out_words(r0: int, r1: int) -> slice:
    if r0 % PACK or r1 % PACK:
        raise ValueError(f"output channels [{r0}, {r1}) split a packed word of eight")
    return slice(r0 // PACK, r1 // PACK)


def layer_view(name: str, loaded: LoadedWeight, scheme: W4Scheme) -> LayerView:
    """The checkpoint tensor `name` (qweight, qzeros or scales) in the layer's layout: packed
    weights int32 [N, K/8] packed along the input in order, zeros uint8 [N, G] with the
    format's offset added, scales [N, G]."""
    rows, cols = shape_of(loaded)
    order = AWQ_ORDER if scheme.method == "awq" else SEQUENTIAL
    if name == "scales":  # [G, N]
        return LayerView((cols, rows), lambda r0, r1, c0, c1: loaded[c0:c1, r0:r1].T)
    if name == "qzeros":  # [G, N/8]

        def zeros(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
            z = unpack_columns(loaded[c0:c1, _out_words(r0, r1)], order) + scheme.zero_offset
            return z.T.to(torch.uint8)

        return LayerView((cols * PACK, rows), zeros)
    if scheme.method == "gptq":  # qweight [K/8, N], packed along the input already
        return LayerView((cols, rows), lambda r0, r1, c0, c1: loaded[c0:c1, r0:r1].T)

    def awq_weight(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:  # qweight [K, N/8]
        q = unpack_columns(loaded[c0 * PACK : c1 * PACK, _out_words(r0, r1)], order)
        return pack_columns(q.T)

    return LayerView((cols * PACK, rows // PACK), awq_weight)


@contextmanager
def weights_on_meta(enabled: bool) -> Iterator[None]:
    """While the model is built: its linear layers' full-precision weights take no memory (they
    give way to the packed tensors before loading), so a 4-bit model's load never holds its
    bf16 size. Replicated layers (a MoE router) are refused with MoE before they matter."""
    previous = LinearBase.weight_device
    LinearBase.weight_device = torch.device("meta") if enabled else previous
    try:
        yield
    finally:
        LinearBase.weight_device = previous


def w4_bytes_saved(model: nn.Module, dtype: torch.dtype, scheme: W4Scheme) -> int:
    """How many fewer bytes the packed linear layers take than `model`'s weights in dtype."""
    group = 128 if scheme.group_size == -1 else scheme.group_size  # -1: fewer scales still
    per_weight = dtype.itemsize - (0.5 + 3 / group)  # 4 bits, an fp16 scale and a uint8 zero
    weights = [m.weight for m in model.modules() if isinstance(m, LinearBase)]
    return int(sum(w.numel() for w in weights) * per_weight)


def prepare_w4_parameters(layers: list[LinearBase], scheme: W4Scheme) -> None:
    """Before loading: each layer's weight gives way to `qweight`, `qzeros`, `scales` (and
    `g_idx` with act-order) in the layer's layout, each loaded through the layer's own loader
    from a view of the checkpoint tensor."""
    for layer in layers:
        n, k = layer.weight.shape
        row_parallel = isinstance(layer, RowParallelLinear)
        k_total: int = layer.input_size if isinstance(layer, RowParallelLinear) else k
        if scheme.group_size != -1 and k_total % scheme.group_size:
            raise ValueError(
                f"{type(layer).__name__} with {k_total} inputs: not a multiple of the group size "
                f"{scheme.group_size}"
            )
        whole_groups = row_parallel and (scheme.desc_act or scheme.group_size == -1)
        if row_parallel and not whole_groups and k % scheme.group_size:
            raise ValueError(
                f"a tensor-parallel rank's {k} inputs of {k_total} split a group of "
                f"{scheme.group_size}: use fewer ranks"
            )
        if k % PACK:
            raise ValueError(f"a rank's {k} inputs are no multiple of 8")
        if scheme.group_size == -1:
            groups = 1
        else:
            groups = (k_total if whole_groups else k) // scheme.group_size
        loader: Callable[..., None] = layer.weight_loader
        del layer.weight
        specs = {
            "qweight": torch.empty(n, k // PACK, dtype=torch.int32),
            "qzeros": torch.empty(n, groups, dtype=torch.uint8),
            "scales": torch.empty(n, groups, dtype=torch.float16),
        }
        for name, data in specs.items():
            param = nn.Parameter(data, requires_grad=False)
            grouped = name != "qweight" and whole_groups
            param.weight_loader = _view_loader(name, scheme, copy_whole if grouped else loader)  # type: ignore[attr-defined]
            layer.register_parameter(name, param)
        if scheme.desc_act:
            g_idx = nn.Parameter(torch.empty(k, dtype=torch.int32), requires_grad=False)
            g_idx.weight_loader = _g_idx_loader(layer, row_parallel)  # type: ignore[attr-defined]
            layer.register_parameter("g_idx", g_idx)


def copy_whole(param: nn.Parameter, loaded: LoadedWeight, *_shard: Any) -> None:
    """Every group's scales or zeros, on each rank (act-order or a single group over the
    inputs of a row-parallel layer)."""
    copy_checked(param, whole(loaded), "scales and zeros")


def _view_loader(name: str, scheme: W4Scheme, loader: Callable[..., None]) -> Callable[..., None]:
    def load(param: nn.Parameter, loaded: LoadedWeight, *shard: Any) -> None:
        loader(param, layer_view(name, loaded, scheme), *shard)

    return load


def _g_idx_loader(layer: LinearBase, row_parallel: bool) -> Callable[..., None]:
    """A row-parallel rank takes its slice of the inputs' groups, a column-parallel one all of
    them; the parts of a merged layer (q, k, v; gate, up) share their input, so act-order gave
    them the same g_idx, which is checked."""
    seen: list[Any] = []

    def load(param: nn.Parameter, loaded: LoadedWeight, *shard: Any) -> None:
        k = param.shape[0]
        mine = narrow(loaded, 0, layer.tp_rank * k, k) if row_parallel else whole(loaded)
        if seen and not torch.equal(param.data, mine.to(param.device, param.dtype)):
            raise ValueError(
                f"g_idx of {shard} differs from that of {seen[0]}: merged projections need one "
                "act-order"
            )
        copy_checked(param, mine, "g_idx")
        seen.append(shard)

    return load


def without_unused_g_idx(
    weights: Iterable[tuple[str, LoadedWeight]], scheme: W4Scheme
) -> Iterator[tuple[str, LoadedWeight]]:
    """The checkpoint's tensors less g_idx when there is no act-order (GPTQ stores the trivial
    k // group_size then)."""
    for name, tensor in weights:
        if not scheme.desc_act and name.endswith(".g_idx"):
            continue
        yield name, tensor


def dummy_w4_scheme(quantization: str | None) -> W4Scheme | None:
    """--load-format dummy with --quantization awq or gptq (or their _marlin names): the shape's
    layers get random 4-bit weights, group size 128, no act-order (a benchmark of the kernel
    without a checkpoint)."""
    method = CHECKPOINT_FORMATS.get(quantization or "")
    return W4Scheme(method, 128, False, 0) if method in ("awq", "gptq") else None


@torch.no_grad()
def fill_dummy_w4(layers: list[LinearBase], scheme: W4Scheme, seed: int) -> None:
    """--load-format dummy: random 4-bit values, zero point 8, scales that give the weights a
    spread near the dummy bf16 weights' N(0, 0.02)."""
    for layer in layers:
        qweight = layer.get_parameter("qweight")
        gen = torch.Generator(qweight.device).manual_seed(seed)
        qweight.random_(-(2**31), 2**31 - 1, generator=gen)  # every 4-bit value
        layer.get_parameter("qzeros").fill_(8)
        layer.get_parameter("scales").fill_(0.02 / 4.6)  # 4.6: the spread of q - 8
        if scheme.desc_act:
            g_idx = layer.get_parameter("g_idx")
            g_idx.copy_(torch.arange(g_idx.shape[0]) // scheme.group_size)
        seed += 1


def finish_w4_layers(layers: list[LinearBase], scheme: W4Scheme, device: torch.device) -> None:
    """After loading: the parameters become W4LinearMethod's buffers (scales and zeros
    transposed to [G, N], the kernel's layout)."""
    for layer in layers:
        packed, zeros, scales = (
            layer.get_parameter(name).data for name in ("qweight", "qzeros", "scales")
        )
        g_idx = layer.get_parameter("g_idx").data if scheme.desc_act else None
        k = packed.shape[1] * PACK
        del layer.qweight, layer.qzeros, layer.scales
        if scheme.desc_act:
            del layer.g_idx
        group_size = k if scheme.group_size == -1 else scheme.group_size
        method = W4LinearMethod(group_size, use_triton=device.type == "cuda")
        method.hold(layer, packed, scales.T.contiguous(), zeros.T.contiguous(), g_idx)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the model's full-precision weights, never filled, go back
