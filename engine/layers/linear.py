"""Linear layers split across the tensor-parallel ranks (vLLM's names and sharding).

A column-parallel layer keeps output rows [r * n/tp, (r+1) * n/tp) on rank r; a row-parallel one
keeps the matching input columns and sums the ranks' partial products with an all-reduce. Merged
layers run several projections of one input as one matmul (gate|up, q|k|v) and load each
projection's rank shard into its own rows. Weights start uninitialized: a loader or the dummy
filler writes them, each parameter through its `weight_loader`, which takes the full checkpoint
tensor (or a lazy safetensors slice) and keeps this rank's shard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.engine.distributed import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_gather,
    tensor_model_parallel_all_reduce,
)
from pagoda.engine.layers.weights import (
    LoadedWeight,
    copy_checked,
    narrow,
    set_weight_loader,
    shape_of,
    whole,
)

if TYPE_CHECKING:
    from pagoda.engine.lora.layers import LoRALinear


def divide(numerator: int, denominator: int, what: str = "size") -> int:
    if numerator % denominator:
        raise ValueError(
            f"{what} {numerator} is not divisible by tensor_parallel_size {denominator}"
        )
    return numerator // denominator


class LinearMethod(Protocol):
    """How a quantized layer multiplies (pagoda.engine.quantization sets one after loading)."""

    def apply(
        self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor: ...


class LinearBase(nn.Module):
    """weight [output_size_per_partition, input_size_per_partition] and an optional bias."""

    quant_method: LinearMethod | None = None
    lora: LoRALinear | None = None  # set by pagoda.engine.lora.pool under --enable-lora
    # Where new layers' weights are born: "meta" (no memory) while a model whose checkpoint
    # replaces them with packed 4-bit tensors is built (quantization/w4_checkpoint.py).
    weight_device: ClassVar[torch.device | None] = None

    def __init__(self, input_size_per_partition: int, output_size_per_partition: int, bias: bool):
        super().__init__()
        self.tp_rank = get_tensor_model_parallel_rank()
        self.tp_size = get_tensor_model_parallel_world_size()
        self.weight = nn.Parameter(
            torch.empty(
                output_size_per_partition, input_size_per_partition, device=self.weight_device
            )
        )
        set_weight_loader(self.weight, self.weight_loader)
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.empty(output_size_per_partition))
            set_weight_loader(self.bias, self.weight_loader)

    def weight_loader(self, param: nn.Parameter, loaded: LoadedWeight) -> None:
        raise NotImplementedError

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.quant_method is None:
            y = F.linear(x, self.weight, bias)
        else:
            y = self.quant_method.apply(self, x, bias)
        return y if self.lora is None else self.lora.add_to(x, y)


class ColumnParallelLinear(LinearBase):
    """Y = X A^T with A's output rows split over the ranks; each rank's Y is its slice of columns
    (all of them with gather_output)."""

    def __init__(
        self, input_size: int, output_size: int, bias: bool = True, gather_output: bool = False
    ) -> None:
        tp = get_tensor_model_parallel_world_size()
        self.input_size, self.output_size = input_size, output_size
        self.output_size_per_partition = divide(output_size, tp, "output size")
        self.gather_output = gather_output
        super().__init__(input_size, self.output_size_per_partition, bias)

    def weight_loader(self, param: nn.Parameter, loaded: LoadedWeight) -> None:
        rows = param.shape[0]
        if shape_of(loaded)[0] != rows * self.tp_size:
            raise ValueError(
                f"expected {rows * self.tp_size} rows, checkpoint has {shape_of(loaded)}"
            )
        copy_checked(param, narrow(loaded, 0, self.tp_rank * rows, rows), "weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x, self.bias)
        return tensor_model_parallel_all_gather(y) if self.gather_output else y


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of one input (gate|up) as one matmul; on each rank the
    weight is [shard 0's rank slice | shard 1's rank slice | ...]."""

    def __init__(
        self,
        input_size: int,
        output_sizes: list[int],
        bias: bool = True,
        gather_output: bool = False,
    ) -> None:
        tp = get_tensor_model_parallel_world_size()
        self.output_sizes = output_sizes
        super().__init__(input_size, sum(output_sizes), bias, gather_output)
        sizes = [divide(n, tp, "output size") for n in output_sizes]
        self.shard_offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.shard_sizes = sizes

    def weight_loader(
        self, param: nn.Parameter, loaded: LoadedWeight, loaded_shard_id: int | None = None
    ) -> None:
        if loaded_shard_id is None:  # the checkpoint stores them merged already
            for i, full in enumerate(self.output_sizes):
                start = sum(self.output_sizes[:i])
                self._load_shard(param, narrow(loaded, 0, start, full), i)
            return
        self._load_shard(param, loaded, loaded_shard_id)

    def _load_shard(self, param: nn.Parameter, loaded: LoadedWeight, shard: int) -> None:
        size = self.shard_sizes[shard]
        if shape_of(loaded)[0] != self.output_sizes[shard]:
            raise ValueError(
                f"shard {shard}: expected {self.output_sizes[shard]} rows, "
                f"checkpoint has {shape_of(loaded)}"
            )
        copy_checked(
            param.data.narrow(0, self.shard_offsets[shard], size),
            narrow(loaded, 0, self.tp_rank * size, size),
            f"shard {shard}",
        )


class QKVParallelLinear(ColumnParallelLinear):
    """q|k|v of attention, split by heads. Where tensor_parallel_size exceeds the KV heads, each
    KV head is replicated on tp_size / total_num_kv_heads ranks."""

    def __init__(
        self,
        hidden_size: int,
        head_size: int,
        total_num_heads: int,
        total_num_kv_heads: int | None = None,
        bias: bool = True,
    ) -> None:
        tp = get_tensor_model_parallel_world_size()
        total_num_kv_heads = total_num_kv_heads or total_num_heads
        self.head_size = head_size
        self.total_num_heads, self.total_num_kv_heads = total_num_heads, total_num_kv_heads
        self.num_heads = divide(total_num_heads, tp, "num_attention_heads")
        if tp >= total_num_kv_heads:
            self.num_kv_heads = 1
            self.num_kv_head_replicas = divide(tp, total_num_kv_heads, "(replicas) num_kv_heads")
        else:
            self.num_kv_heads = divide(total_num_kv_heads, tp, "num_key_value_heads")
            self.num_kv_head_replicas = 1
        self.q_size = self.num_heads * head_size
        self.kv_size = self.num_kv_heads * head_size
        # Sizes as if every rank held distinct heads: the parent divides by tp.
        output_size = (self.num_heads + 2 * self.num_kv_heads) * tp * head_size
        super().__init__(hidden_size, output_size, bias)

    def weight_loader(
        self, param: nn.Parameter, loaded: LoadedWeight, loaded_shard_id: str | None = None
    ) -> None:
        if loaded_shard_id is None:  # a fused qkv tensor
            q, kv = self.total_num_heads * self.head_size, self.total_num_kv_heads * self.head_size
            for shard, start, size in (("q", 0, q), ("k", q, kv), ("v", q + kv, kv)):
                self.weight_loader(param, narrow(loaded, 0, start, size), shard)
            return
        if loaded_shard_id == "q":
            offset, size, head_rank = 0, self.q_size, self.tp_rank
            total = self.total_num_heads * self.head_size
        else:
            offset = self.q_size + (self.kv_size if loaded_shard_id == "v" else 0)
            size, head_rank = self.kv_size, self.tp_rank // self.num_kv_head_replicas
            total = self.total_num_kv_heads * self.head_size
        if shape_of(loaded)[0] != total:
            raise ValueError(
                f"{loaded_shard_id}_proj: expected {total} rows, checkpoint has {shape_of(loaded)}"
            )
        copy_checked(
            param.data.narrow(0, offset, size),
            narrow(loaded, 0, head_rank * size, size),
            f"{loaded_shard_id}_proj",
        )


class RowParallelLinear(LinearBase):
    """Y = X A^T with A's input columns split over the ranks: each rank multiplies its slice of X
    and the partial products are summed (reduce_results); the bias is added once, after."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        bias: bool = True,
        input_is_parallel: bool = True,
        reduce_results: bool = True,
    ) -> None:
        tp = get_tensor_model_parallel_world_size()
        self.input_size, self.output_size = input_size, output_size
        self.input_size_per_partition = divide(input_size, tp, "input size")
        self.input_is_parallel, self.reduce_results = input_is_parallel, reduce_results
        super().__init__(self.input_size_per_partition, output_size, bias)

    def weight_loader(self, param: nn.Parameter, loaded: LoadedWeight) -> None:
        if param is self.bias:
            copy_checked(param, whole(loaded), "bias")
            return
        cols = param.shape[1]
        if shape_of(loaded)[1] != cols * self.tp_size:
            raise ValueError(
                f"expected {cols * self.tp_size} columns, checkpoint has {shape_of(loaded)}"
            )
        copy_checked(param, narrow(loaded, 1, self.tp_rank * cols, cols), "weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel and self.tp_size > 1:
            x = x.chunk(self.tp_size, dim=-1)[self.tp_rank]
        # The bias joins on one rank only, so that the sum over ranks counts it once.
        y = self.matmul(x, self.bias if self.tp_rank == 0 else None)
        return tensor_model_parallel_all_reduce(y) if self.reduce_results else y


class ReplicatedLinear(LinearBase):
    """The whole weight on every rank (a MoE router: small, and every rank needs all its
    outputs)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = True) -> None:
        super().__init__(input_size, output_size, bias)

    def weight_loader(self, param: nn.Parameter, loaded: LoadedWeight) -> None:
        copy_checked(param, whole(loaded), "weight" if param is self.weight else "bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.bias)
