"""The verification graphs' layout (engine/runner/step_layout.py) on the CPU, without a graph: which
steps fit, where each token's row is, and a mixed step (speculating sequences with k or fewer
drafts, plain decodes, a two-token chunk) run through the padded buffers of a larger batch size
giving the eager step's hidden states and writing the same KV cache (the padding writes nowhere)."""

from __future__ import annotations

import random

import torch
from eager_steps import eager_step

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.runner.step_layout import StepLayout, fits_layout, padded_rows
from pagoda.engine.sampling_params import SamplingParams


def test_each_sequence_takes_the_last_rows_of_its_q():
    # q = 3: a verification of 2 drafts (3 tokens), a plain decode, one with 1 draft.
    assert padded_rows([0, 3, 4, 6], 3).tolist() == [0, 1, 2, 5, 7, 8]
    assert padded_rows([0, 1, 2], 1).tolist() == [0, 1]  # decode graphs: the eager layout


def test_which_steps_fit():
    assert fits_layout([5, 1, 3], [40, 9, 100], 5)
    assert not fits_layout([6, 1], [40, 9], 5)  # more tokens than q
    assert not fits_layout([1], [5], 5)  # padding would stand on the token itself
    assert fits_layout([5], [5], 5)  # a whole 5-token prompt: no padding
    assert not fits_layout([2], [3], 5)  # too short to pad
    assert fits_layout([1, 1], [1, 2], 1)


def test_a_padded_mixed_step_gives_the_eager_rows_and_cache(cpu_runner):
    runner = cpu_runner
    rng = random.Random(0)
    k_drafts, q = 4, 5
    free = list(range(1, runner.num_blocks))  # block 0 is where padding sequences look
    rng.shuffle(free)
    batch = []
    # (context length before the step, drafts): k drafts, fewer, none (plain decode), then a
    # two-token prefill chunk.
    for i, (length, drafts) in enumerate([(40, 4), (70, 2), (23, 0), (9, 4), (50, -1)]):
        seq = Sequence(
            f"s{i}", f"r{i}", 0, [rng.randrange(300) for _ in range(length)], SamplingParams()
        )
        n = 2 if drafts < 0 else 1 + drafts
        seq.num_computed_tokens = length - (2 if drafts < 0 else 1)
        seq.spec_token_ids = [rng.randrange(300) for _ in range(max(drafts, 0))]
        seq.block_table = [free.pop() for _ in range(-(-(length + k_drafts) // runner.block_size))]
        batch.append((seq, n))
    ids, pos, meta, _ = runner.prepare(batch)
    assert meta.query_start_loc_cpu and meta.seq_lens_cpu
    counts = [b - a for a, b in zip(meta.query_start_loc_cpu, meta.query_start_loc_cpu[1:])]
    assert counts == [5, 3, 1, 5, 2] and fits_layout(counts, meta.seq_lens_cpu, q)
    eager, eager_cache = eager_step(runner, ids, pos, meta)

    layout = StepLayout(8, q, 16, 512, runner.block_size, torch.device("cpu"))
    rows = layout.load(ids, pos, meta, size=8)  # three padding sequences past the five
    assert isinstance(rows, torch.Tensor)
    with torch.inference_mode():
        padded = runner.model(
            layout.input_ids[: 8 * q], layout.positions[: 8 * q], runner.kv_caches, layout.meta(8)
        )
    assert padded.shape[0] == 8 * q
    assert not padded.isnan().any()
    torch.testing.assert_close(padded[rows], eager, rtol=1e-5, atol=1e-5)
    for (k, v), (k1, v1) in zip(runner.kv_caches, eager_cache):  # equal up to the GEMMs' rounding
        torch.testing.assert_close(k, k1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, v1, rtol=1e-5, atol=1e-5)


def test_a_step_of_full_verifications_keeps_the_eager_layout():
    layout = StepLayout(4, 3, 2, 64, 16, torch.device("cpu"))
    ids = torch.arange(6)
    meta = AttentionMetadata(
        slot_mapping=torch.arange(6),
        query_start_loc=torch.tensor([0, 3, 6], dtype=torch.int32),
        seq_lens=torch.tensor([10, 20], dtype=torch.int32),
        block_tables=torch.tensor([[1], [2]], dtype=torch.int32),
        max_query_len=3,
        max_seq_len=20,
        block_size=16,
        query_start_loc_cpu=[0, 3, 6],
        seq_lens_cpu=[10, 20],
    )
    assert layout.load(ids, ids, meta, size=4) == slice(0, 6)
    assert layout.slot_mapping.tolist() == [0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1, -1]
    assert layout.seq_lens.tolist() == [10, 20, 3, 3]  # padding sequences: q keys of block 0
    assert layout.block_tables[:, 0].tolist() == [1, 2, 0, 0]
