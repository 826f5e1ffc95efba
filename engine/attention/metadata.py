"""The flattened batch as attention sees it, one layout for prefill, chunked prefill and decode.

Tokens of all sequences in a step are concatenated (T tokens, B sequences). Sequence i owns tokens
query_start_loc[i]:query_start_loc[i+1]; they are the LAST query_len tokens of its seq_lens[i]
tokens of context, so the causal mask of token j of sequence i is `key position <=
seq_lens[i] - query_len_i + j`. Keys and values of earlier tokens live in the paged KV cache,
reached through block_tables[i]; slot_mapping says where each new token's K/V is written
(block * block_size + offset; -1 means "do not write", used for padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64
    query_start_loc: torch.Tensor  # [B + 1] int32, cumulative query lengths
    seq_lens: torch.Tensor  # [B] int32, context length including this step's tokens
    block_tables: torch.Tensor  # [B, max_blocks_per_seq] int32, padded with 0
    max_query_len: int
    max_seq_len: int
    block_size: int
    # Host copies, so a CPU backend never syncs on device tensors.
    query_start_loc_cpu: list[int] | None = None
    seq_lens_cpu: list[int] | None = None

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]
