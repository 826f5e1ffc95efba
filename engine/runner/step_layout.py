"""The fixed layouts a CUDA graph replays a step in: StepLayout for decode and verification steps,
TokenLayout for steps with prefill tokens.

StepLayout: S sequences (a captured batch size) of q query tokens each.

A graph replays one shape, so every sequence of a replayed step gets exactly q query tokens. For
decode graphs q = 1 and the layout is the eager one. For verification graphs q = k + 1: a sequence
with n < q new tokens (a plain decode beside speculating ones, or one with fewer drafts than k)
takes q - n padding tokens IN FRONT of its own. They stand at positions already in the KV cache and
write their K/V nowhere (slot -1), so the sequence's own tokens are the last n of q queries over
the same context: the same causal masks and keys as in the eager step (the attention reads every
key from the cache), and their rows are gathered back into the eager order. Padding sequences (past
the step's batch, up to S) attend to the first q slots of block 0. Every padding row's output is
dropped; every row is finite, as each attends to at least one key.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch

from pagoda.engine.attention.metadata import AttentionMetadata


def fits_layout(query_lens: Sequence[int], seq_lens: Sequence[int], query_len: int) -> bool:
    """Whether a step fits q = query_len tokens per sequence: none has more new tokens, and one
    that is padded (n < q) has more than q tokens of context, so its padding stands on tokens
    already computed (and a backend that takes a whole-prompt step's keys from the step itself, as
    the PyTorch one does, never sees the padding as keys)."""
    return all(
        n <= query_len and (n == query_len or s > query_len) for n, s in zip(query_lens, seq_lens)
    )


def padded_rows(query_start_loc: Sequence[int], query_len: int) -> np.ndarray:
    """Each of the step's tokens' row in the layout: sequence i's n_i tokens are the last n_i of
    its rows i * q .. i * q + q - 1."""
    starts = np.asarray(query_start_loc, dtype=np.int64)
    counts = np.diff(starts)
    shift = np.arange(len(counts)) * query_len + query_len - counts - starts[:-1]
    return np.arange(starts[-1]) + np.repeat(shift, counts)


class StepLayout:
    """The static input buffers a graph reads: a step is copied into them before each replay."""

    def __init__(
        self,
        max_batch: int,
        query_len: int,
        max_blocks_per_seq: int,
        max_model_len: int,
        block_size: int,
        device: torch.device,
    ) -> None:
        n, q = max_batch, query_len
        self.query_len, self.device = q, device
        self.input_ids = torch.zeros(n * q, dtype=torch.long, device=device)
        self.positions = torch.zeros(n * q, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((n * q,), -1, dtype=torch.long, device=device)
        self.seq_lens = torch.full((n,), q, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(0, (n + 1) * q, q, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros((n, max_blocks_per_seq), dtype=torch.int32, device=device)
        self.max_model_len, self.block_size = max_model_len, block_size

    def size_for(self, meta: AttentionMetadata, sizes: list[int]) -> int | None:
        """The smallest captured batch size that replays this step (ModelRunner.prepare's, host
        copies set), or None."""
        if meta.num_seqs > sizes[-1] or meta.max_query_len > self.query_len:
            return None
        if self.query_len > 1:
            starts, seq_lens = meta.query_start_loc_cpu, meta.seq_lens_cpu
            assert starts is not None and seq_lens is not None, "prepare() sets the host copies"
            query_lens = [b - a for a, b in zip(starts, starts[1:])]
            if not fits_layout(query_lens, seq_lens, self.query_len):
                return None
        return sizes[bisect.bisect_left(sizes, meta.num_seqs)]

    def inputs(self, size: int) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """The buffers a graph of `size` sequences is captured on."""
        n = size * self.query_len
        return self.input_ids[:n], self.positions[:n], self.meta(size)

    def meta(self, size: int) -> AttentionMetadata:
        """The metadata of `size` sequences. max_seq_len is the bound every replay obeys, not one
        step's: the graph is fixed."""
        return AttentionMetadata(
            self.slot_mapping[: size * self.query_len],
            self.query_start_loc[: size + 1],
            self.seq_lens[:size],
            self.block_tables[:size],
            max_query_len=self.query_len,
            max_seq_len=self.max_model_len,
            block_size=self.block_size,
        )

    def load(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata, size: int
    ) -> torch.Tensor | slice:
        """Copy a step (eager layout, meta.num_seqs <= size sequences that fit) into the first
        `size` sequences' buffers; returns where the step's tokens are among the layout's rows."""
        b, t, q = meta.num_seqs, input_ids.shape[0], self.query_len
        end = size * q
        rows: torch.Tensor | slice
        if t == b * q:  # every sequence has q tokens (all decodes for q = 1): the eager layout
            rows = slice(0, t)
            self.input_ids[:t].copy_(input_ids)
            self.positions[:t].copy_(positions)
            self.slot_mapping[:t].copy_(meta.slot_mapping)
            self.slot_mapping[t:end].fill_(-1)
        else:
            qsl = meta.query_start_loc_cpu or meta.query_start_loc.tolist()
            rows = self._to_device(padded_rows(qsl, q))
            self.input_ids[:end].zero_()
            self.positions[:end].zero_()
            self.slot_mapping[:end].fill_(-1)
            self.input_ids.index_copy_(0, rows, input_ids)
            self.positions.index_copy_(0, rows, positions)
            self.slot_mapping.index_copy_(0, rows, meta.slot_mapping)
        self.seq_lens[:b].copy_(meta.seq_lens)
        self.seq_lens[b:size].fill_(q)
        width = meta.block_tables.shape[1]
        self.block_tables[:b, :width].copy_(meta.block_tables)
        self.block_tables[b:size].zero_()
        return rows

    def _to_device(self, rows: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(rows)
        if self.device.type == "cpu":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)


class TokenLayout:
    """A step with prefill tokens (whole prompts, chunks, and decodes beside them) in the eager
    token order, padded to a captured token count T' >= its T tokens, for up to max_seqs sequences.

    The padding tokens belong to no sequence: query_start_loc stays at T past the step's B
    sequences and their seq_lens are 0, so the attention kernel gives them no program and they
    write their K/V nowhere (slot -1). Their rows are never read back; nothing in a layer mixes
    rows, so they cannot reach the step's own. Eager steps cost hundreds of kernel launches from
    Python (~40 ms at Llama-3.1-8B's shape on an H200, measured, against ~6 ms for the GPU's work
    of a decode batch beside a short prompt): every sequence decoding in that step waited for it.
    """

    def __init__(
        self,
        max_tokens: int,
        max_seqs: int,
        max_blocks_per_seq: int,
        max_model_len: int,
        block_size: int,
        device: torch.device,
    ) -> None:
        self.max_seqs, self.device = max_seqs, device
        self.input_ids = torch.zeros(max_tokens, dtype=torch.long, device=device)
        self.positions = torch.zeros(max_tokens, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((max_tokens,), -1, dtype=torch.long, device=device)
        self.seq_lens = torch.zeros(max_seqs, dtype=torch.int32, device=device)
        self.query_start_loc = torch.zeros(max_seqs + 1, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(
            (max_seqs, max_blocks_per_seq), dtype=torch.int32, device=device
        )
        self.max_model_len, self.block_size = max_model_len, block_size

    def size_for(self, meta: AttentionMetadata, sizes: list[int]) -> int | None:
        tokens = meta.slot_mapping.shape[0]
        too_wide = meta.block_tables.shape[1] > self.block_tables.shape[1]  # the runner's warm-up
        if tokens > sizes[-1] or meta.num_seqs > self.max_seqs or too_wide:
            return None
        return sizes[bisect.bisect_left(sizes, tokens)]

    def inputs(self, size: int) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """A graph of `size` tokens is captured on whole prompts of max_model_len tokens (the
        last one shorter): the kernels' choices depend on the shapes alone, not on how tokens
        split into sequences, but no sequence may outgrow its block table row."""
        longest = min(size, self.max_model_len)
        seqs = -(-size // longest)
        if seqs > self.max_seqs:
            raise ValueError(f"{size} tokens need {seqs} sequences of {longest}: too many")
        starts = torch.arange(seqs + 1, dtype=torch.int32).mul_(longest).clamp_(max=size)
        self.query_start_loc.fill_(size)
        self.query_start_loc[: seqs + 1].copy_(starts)
        self.seq_lens.zero_()
        self.seq_lens[:seqs].copy_(starts.diff())
        return self.input_ids[:size], self.positions[:size], self.meta(size)

    def meta(self, size: int) -> AttentionMetadata:
        """The metadata a graph of `size` tokens reads: every sequence slot, and a max_query_len
        above 1 (the attention kernel's prefill tiles, whatever the step)."""
        return AttentionMetadata(
            self.slot_mapping[:size],
            self.query_start_loc,
            self.seq_lens,
            self.block_tables,
            max_query_len=size,
            max_seq_len=self.max_model_len,
            block_size=self.block_size,
        )

    def load(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata, size: int
    ) -> slice:
        t, b = input_ids.shape[0], meta.num_seqs
        self.input_ids[:t].copy_(input_ids)
        self.positions[:t].copy_(positions)
        self.slot_mapping[:t].copy_(meta.slot_mapping)
        self.slot_mapping[t:size].fill_(-1)
        self.query_start_loc[: b + 1].copy_(meta.query_start_loc)
        self.query_start_loc[b + 1 :].fill_(t)
        self.seq_lens[:b].copy_(meta.seq_lens)
        self.seq_lens[b:].zero_()
        width = meta.block_tables.shape[1]
        self.block_tables[:b, :width].copy_(meta.block_tables)
        return slice(0, t)
