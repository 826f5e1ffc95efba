"""The token-count graphs' layout (engine/runner/step_layout.py TokenLayout) on the CPU, without a
graph: a step with prefill tokens (a whole prompt, a chunk on cached context, decodes) run through
the padded buffers of a larger token count and more sequences gives the eager step's hidden states
and writes the same KV cache (the padding tokens belong to no sequence and write nowhere)."""

from __future__ import annotations

import random

import pytest
import torch
from eager_steps import eager_step

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.runner.step_layout import TokenLayout
from pagoda.engine.sampling_params import SamplingParams


def test_capture_inputs_keep_each_sequence_within_max_model_len():
    """A graph of more tokens than max_model_len is captured on several whole sequences: one
    sequence as long as the graph would read past its block table row (an illegal address on the
    GPU when the model is short and the token budget large)."""
    layout = TokenLayout(256, 4, 4, 64, 16, torch.device("cpu"))
    _, _, meta = layout.inputs(200)
    assert meta.seq_lens.tolist() == [64, 64, 64, 8]
    assert meta.query_start_loc.tolist() == [0, 64, 128, 192, 200]
    _, _, meta = layout.inputs(64)
    assert meta.seq_lens.tolist() == [64, 0, 0, 0]
    assert meta.query_start_loc.tolist() == [0, 64, 64, 64, 64]
    with pytest.raises(ValueError, match="too many"):
        layout.inputs(257 + 64)


def test_sizes_by_token_count_and_sequence_bound():
    layout = TokenLayout(256, 4, 8, 128, 16, torch.device("cpu"))

    def meta(tokens: int, seqs: int, width: int = 1) -> AttentionMetadata:
        return AttentionMetadata(
            torch.zeros(tokens, dtype=torch.long),
            torch.zeros(seqs + 1, dtype=torch.int32),
            torch.zeros(seqs, dtype=torch.int32),
            torch.zeros((seqs, width), dtype=torch.int32),
            max_query_len=2,
            max_seq_len=2,
            block_size=16,
        )

    sizes = [64, 128, 256]
    assert layout.size_for(meta(64, 2), sizes) == 64
    assert layout.size_for(meta(65, 2), sizes) == 128
    assert layout.size_for(meta(257, 2), sizes) is None  # more tokens than the largest graph
    assert layout.size_for(meta(10, 5), sizes) is None  # more sequences than the layout holds
    # block tables wider than max_model_len allows (the runner's warm-up step): eager
    assert layout.size_for(meta(10, 2, width=9), sizes) is None


def test_a_padded_step_gives_the_eager_rows_and_cache(cpu_runner):
    runner = cpu_runner
    rng = random.Random()
    free = list(range(runner.num_blocks))
    rng.shuffle(free)
    batch = []
    # (context length, tokens computed before the step): a whole prompt, a chunk on a cached
    # prefix, two decodes.
    for i, (length, computed) in enumerate([(37, 0), (90, 41), (23, 22), (60, 59)]):
        seq = Sequence(
            f"s{i}", f"r{i}", 0, [rng.randrange(300) for _ in range(length)], SamplingParams()
        )
        seq.num_computed_tokens = computed
        seq.block_table = [free.pop() for _ in range(-(-length // runner.block_size))]
        batch.append((seq, length - computed))
    ids, pos, meta, _ = runner.prepare(batch)
    assert ids.shape[0] == 37 + 49 + 1 + 1
    eager, eager_cache = eager_step(runner, ids, pos, meta)

    layout = TokenLayout(128, 8, 16, 512, runner.block_size, torch.device("cpu"))
    layout.inputs(128)  # what a capture leaves in the buffers
    rows = layout.load(ids, pos, meta, size=128)
    assert layout.query_start_loc.tolist()[5:] == [88] * 4  # sequences past the step: no tokens
    assert layout.seq_lens.tolist()[4:] == [0] * 4
    with torch.inference_mode():
        padded = runner.model(
            layout.input_ids[:128], layout.positions[:128], runner.kv_caches, layout.meta(128)
        )
    assert padded.shape[0] == 128
    torch.testing.assert_close(padded[rows], eager, rtol=1e-5, atol=1e-5)
    for (k, v), (k1, v1) in zip(runner.kv_caches, eager_cache):
        torch.testing.assert_close(k, k1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, v1, rtol=1e-5, atol=1e-5)
