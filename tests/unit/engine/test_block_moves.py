"""The runner's block moves: ordered copy-on-write and swap operations, grouped into batched index
copies by op_runs, must leave the caches exactly as performing them one by one would."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pagoda.engine.core.kv_cache_manager import BlockOp
from pagoda.engine.runner.model_runner import ModelRunner, op_runs

GPU, CPU, LAYERS = 6, 4, 2


def caches(num_blocks: int, offset: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each block's values say which block and layer they started in."""
    return [
        tuple(
            torch.arange(num_blocks * 8, dtype=torch.float32).view(num_blocks, 2, 2, 2)
            + offset
            + 1000 * layer
            + 500 * kv
            for kv in range(2)
        )
        for layer in range(LAYERS)
    ]


def perform(runner, ops: list[BlockOp]) -> None:
    moves = {
        "copy": ModelRunner.copy_blocks,
        "swap_out": ModelRunner.swap_out,
        "swap_in": ModelRunner.swap_in,
    }
    for kind, pairs in op_runs(ops):
        moves[kind](runner, pairs)


def reference(gpu, cpu, ops: list[BlockOp]) -> None:
    for op in ops:
        src, dst = {"copy": (gpu, gpu), "swap_out": (gpu, cpu), "swap_in": (cpu, gpu)}[op.kind]
        for (sk, sv), (dk, dv) in zip(src, dst):
            dk[op.dst] = sk[op.src].clone()
            dv[op.dst] = sv[op.src].clone()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["copy", "swap_out", "swap_in"]).flatmap(
            lambda kind: st.tuples(
                st.just(kind),
                st.integers(0, (CPU if kind == "swap_in" else GPU) - 1),
                st.integers(0, (CPU if kind == "swap_out" else GPU) - 1),
            )
        ),
        max_size=12,
    )
)
def test_grouped_moves_equal_moves_one_by_one(raw):
    ops = [BlockOp(*op) for op in raw]
    runner = SimpleNamespace(
        kv_caches=caches(GPU, 0), cpu_kv_caches=caches(CPU, 100), device=torch.device("cpu")
    )
    gpu, cpu = caches(GPU, 0), caches(CPU, 100)
    perform(runner, ops)
    reference(gpu, cpu, ops)
    for got, want in zip(runner.kv_caches + runner.cpu_kv_caches, gpu + cpu):
        assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_a_run_ends_where_a_move_reads_what_the_run_wrote():
    ops = [
        BlockOp("copy", 0, 1),
        BlockOp("copy", 2, 3),
        BlockOp("copy", 1, 4),
        BlockOp("swap_out", 4, 0),
        BlockOp("swap_out", 5, 1),
    ]
    assert op_runs(ops) == [
        ("copy", [(0, 1), (2, 3)]),
        ("copy", [(1, 4)]),
        ("swap_out", [(4, 0), (5, 1)]),
    ]
