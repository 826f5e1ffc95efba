"""Who this process is among the engine's ranks, and the collectives over its groups.

Ranks are laid out as vLLM's: rank = pp_rank * tp_size + tp_rank, so a tensor-parallel group is
tp_size consecutive ranks and a pipeline group takes one rank of each stage. Until
init_distributed is called the process is rank 0 of groups of one, and no collective touches
torch.distributed: a single-process engine needs no process group at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist


@dataclass
class ParallelGroup:
    """One process group (tensor- or pipeline-parallel) as seen from one of its ranks."""

    ranks: list[int]  # global ranks, in group order
    rank_in_group: int
    device_group: dist.ProcessGroup | None = None  # None for a group of one

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    @property
    def is_first_rank(self) -> bool:
        return self.rank_in_group == 0

    @property
    def is_last_rank(self) -> bool:
        return self.rank_in_group == self.world_size - 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over the group, in place."""
        if self.world_size > 1:
            dist.all_reduce(x, group=self.device_group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The ranks' tensors concatenated along dim, in rank order."""
        if self.world_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous(), group=self.device_group)
        return torch.cat(parts, dim=dim)

    def send(self, x: torch.Tensor) -> None:
        """To the next rank of the group (the next pipeline stage)."""
        dist.send(x.contiguous(), self.ranks[self.rank_in_group + 1], group=self.device_group)

    def recv(self, x: torch.Tensor) -> torch.Tensor:
        """Into x, from the previous rank of the group."""
        dist.recv(x, self.ranks[self.rank_in_group - 1], group=self.device_group)
        return x


_TP = ParallelGroup([0], 0)
_PP = ParallelGroup([0], 0)


def get_tp_group() -> ParallelGroup:
    return _TP


def get_pp_group() -> ParallelGroup:
    return _PP


def get_tensor_model_parallel_rank() -> int:
    return _TP.rank_in_group


def get_tensor_model_parallel_world_size() -> int:
    return _TP.world_size


def tensor_model_parallel_all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _TP.all_reduce(x)


def tensor_model_parallel_all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return _TP.all_gather(x, dim)


def init_distributed(
    rank: int, tp_size: int, pp_size: int, backend: str, init_method: str = "env://"
) -> None:
    """Join the world of tp_size * pp_size ranks (torch.distributed's env rendezvous by default:
    MASTER_ADDR, MASTER_PORT) and build this rank's tensor- and pipeline-parallel groups. Every
    rank must call it, since creating a group is itself a collective."""
    global _TP, _PP
    world_size = tp_size * pp_size
    if world_size == 1:
        _TP, _PP = ParallelGroup([0], 0), ParallelGroup([0], 0)
        return
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method, world_size=world_size, rank=rank)
    tp_rank, pp_rank = rank % tp_size, rank // tp_size
    for stage in range(pp_size):
        ranks = list(range(stage * tp_size, (stage + 1) * tp_size))
        group = dist.new_group(ranks) if tp_size > 1 else None
        if stage == pp_rank:
            _TP = ParallelGroup(ranks, tp_rank, member_group(group))
    for column in range(tp_size):
        ranks = list(range(column, world_size, tp_size))
        group = dist.new_group(ranks) if pp_size > 1 else None
        if column == tp_rank:
            _PP = ParallelGroup(ranks, pp_rank, member_group(group))


def member_group(group: dist.ProcessGroup | int | None) -> dist.ProcessGroup | None:
    """new_group's answer to one of the group's ranks: never its non-member marker (an int)."""
    return cast("dist.ProcessGroup | None", group)


def destroy_distributed() -> None:
    global _TP, _PP
    _TP, _PP = ParallelGroup([0], 0), ParallelGroup([0], 0)
    if dist.is_initialized():
        dist.destroy_process_group()
