"""Linear layers whose weights start uninitialized (a loader or the dummy filler writes them).

MergedLinear runs several projections of the same input as one matmul (q|k|v, gate|up); checkpoints
store them apart, so it loads each one into its own rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class MergedLinear(Linear):
    def __init__(self, in_features: int, shards: dict[str, int], bias: bool = False) -> None:
        super().__init__(in_features, sum(shards.values()), bias)
        self.shard_rows: dict[str, tuple[int, int]] = {}
        start = 0
        for name, rows in shards.items():
            self.shard_rows[name] = (start, rows)
            start += rows

    def load_shard(self, param: nn.Parameter, shard: str, tensor: torch.Tensor) -> None:
        """Copy one projection's weight (or bias) into its rows of the merged parameter."""
        start, rows = self.shard_rows[shard]
        if tensor.shape[0] != rows or tensor.shape[1:] != param.shape[1:]:
            raise ValueError(
                f"shard {shard!r}: expected {(rows, *param.shape[1:])}, got {tuple(tensor.shape)}"
            )
        param.data.narrow(0, start, rows).copy_(tensor)
