"""CUDA graphs for decode steps: one captured forward pass per batch size, replayed with new inputs.

A decode step launches hundreds of small kernels; replaying a captured graph removes their launch
cost. A batch of B decodes runs in the smallest captured size >= B; the padding rows write their
K/V nowhere (slot -1) and attend to one token of block 0, and their outputs are dropped.
"""

from __future__ import annotations

import bisect
import logging

import torch
from torch import nn

from pagoda.engine.attention.metadata import AttentionMetadata

log = logging.getLogger(__name__)


class DecodeGraphs:
    def __init__(
        self,
        model: nn.Module,
        kv_caches: list,
        sizes: list[int],
        max_blocks_per_seq: int,
        max_model_len: int,
        block_size: int,
        device: torch.device,
    ) -> None:
        self.model, self.kv_caches = model, kv_caches
        self.sizes = sorted(set(sizes))
        n = self.sizes[-1]
        # Static inputs: every replay reads these buffers, so a step copies its batch into them.
        self.input_ids = torch.zeros(n, dtype=torch.long, device=device)
        self.positions = torch.zeros(n, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.long, device=device)
        self.seq_lens = torch.ones(n, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros((n, max_blocks_per_seq), dtype=torch.int32, device=device)
        self.max_model_len, self.block_size = max_model_len, block_size
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self._capture(device)

    def _meta(self, b: int) -> AttentionMetadata:
        # max_seq_len is the bound every replay obeys, not this batch's: the graph is fixed.
        return AttentionMetadata(
            self.slot_mapping[:b],
            self.query_start_loc[: b + 1],
            self.seq_lens[:b],
            self.block_tables[:b],
            max_query_len=1,
            max_seq_len=self.max_model_len,
            block_size=self.block_size,
        )

    @torch.inference_mode()
    def _capture(self, device: torch.device) -> None:
        pool = None
        for b in reversed(self.sizes):  # largest first, so smaller graphs reuse its memory pool
            meta = self._meta(b)
            self.model(
                self.input_ids[:b], self.positions[:b], self.kv_caches, meta
            )  # warm-up, compiles kernels
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[b] = self.model(
                    self.input_ids[:b], self.positions[:b], self.kv_caches, meta
                )
            pool = graph.pool()
            self.graphs[b] = graph
        torch.cuda.synchronize(device)
        log.info("captured CUDA graphs for decode batch sizes %s", self.sizes)

    def fits(self, batch_size: int) -> bool:
        return batch_size <= self.sizes[-1]

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        b = input_ids.shape[0]
        size = self.sizes[bisect.bisect_left(self.sizes, b)]
        self.input_ids[:b].copy_(input_ids)
        self.positions[:b].copy_(positions)
        self.slot_mapping[:b].copy_(meta.slot_mapping)
        self.slot_mapping[b:size].fill_(-1)
        self.seq_lens[:b].copy_(meta.seq_lens)
        self.seq_lens[b:size].fill_(1)
        width = meta.block_tables.shape[1]
        self.block_tables[:b, :width].copy_(meta.block_tables)
        self.block_tables[b:size].zero_()
        self.graphs[size].replay()
        return self.outputs[size][:b]
