"""Tensor- and pipeline-parallel process groups and their collectives, with vLLM's names."""

from pagoda.engine.distributed.parallel_state import (
    ParallelGroup,
    destroy_distributed,
    get_pp_group,
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    get_tp_group,
    init_distributed,
    tensor_model_parallel_all_gather,
    tensor_model_parallel_all_reduce,
)

__all__ = [
    "ParallelGroup",
    "destroy_distributed",
    "get_pp_group",
    "get_tensor_model_parallel_rank",
    "get_tensor_model_parallel_world_size",
    "get_tp_group",
    "init_distributed",
    "tensor_model_parallel_all_gather",
    "tensor_model_parallel_all_reduce",
]
