"""CUDA graphs for decode and verification steps: one captured forward pass per batch size,
replayed with new inputs.

A decode step launches hundreds of small kernels; replaying a captured graph removes their launch
cost. Decode graphs take one query token per sequence; with --speculative-config, verification
graphs take k + 1 (a sequence's last token and its k drafts), and a step that mixes speculating
and plain sequences is padded to k + 1 per sequence (step_layout.py says how, and why the
sequences' own rows come out as in an eager step). A batch of B sequences runs in the smallest
captured size >= B. The rejection sampler runs after the graph, on the logits of all k + 1
positions. Both kinds share one memory pool: they never run at once.
"""

from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.config import EngineConfig
from pagoda.engine.runner.step_layout import StepLayout, fits_layout

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE  # what CUDAGraph.pool() returns

log = logging.getLogger(__name__)


class StepGraphs:
    def __init__(
        self,
        model: nn.Module,
        kv_caches: list,
        sizes: list[int],
        query_len: int,
        max_blocks_per_seq: int,
        max_model_len: int,
        block_size: int,
        device: torch.device,
        pool: _POOL_HANDLE | None = None,
    ) -> None:
        self.model, self.kv_caches = model, kv_caches
        self.sizes, self.query_len = sorted(set(sizes)), query_len
        self.layout = StepLayout(
            self.sizes[-1], query_len, max_blocks_per_seq, max_model_len, block_size, device
        )
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.pool = pool
        self._capture(device)

    @torch.inference_mode()
    def _capture(self, device: torch.device) -> None:
        layout, q = self.layout, self.query_len
        for b in reversed(self.sizes):  # largest first, so smaller graphs reuse its memory pool
            meta = layout.meta(b)
            ids, pos = layout.input_ids[: b * q], layout.positions[: b * q]
            self.model(ids, pos, self.kv_caches, meta)  # warm-up, compiles kernels
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[b] = self.model(ids, pos, self.kv_caches, meta)
            self.pool = graph.pool()
            self.graphs[b] = graph
        torch.cuda.synchronize(device)
        log.info(
            "captured CUDA graphs of %d query token(s) per sequence for batch sizes %s",
            q,
            self.sizes,
        )

    def fits(self, meta: AttentionMetadata) -> bool:
        """Whether a step (from ModelRunner.prepare: host copies set) can replay one of these."""
        if meta.num_seqs > self.sizes[-1] or meta.max_query_len > self.query_len:
            return False
        if self.query_len == 1:  # all decodes: the eager layout
            return True
        starts, seq_lens = meta.query_start_loc_cpu, meta.seq_lens_cpu
        assert starts is not None and seq_lens is not None, "prepare() sets the host copies"
        return fits_layout([b - a for a, b in zip(starts, starts[1:])], seq_lens, self.query_len)

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """The step's hidden states in its own (eager) token order."""
        size = self.sizes[bisect.bisect_left(self.sizes, meta.num_seqs)]
        rows = self.layout.load(input_ids, positions, meta, size)
        self.graphs[size].replay()
        return self.outputs[size][rows]


def capture_step_graphs(
    model: nn.Module,
    kv_caches: list,
    config: EngineConfig,
    max_model_len: int,
    device: torch.device,
) -> tuple[StepGraphs, StepGraphs | None]:
    """Decode graphs, and with --speculative-config verification graphs of k + 1 query tokens per
    sequence, at the decode graphs' batch sizes whose k + 1 tokens a sequence stay within the
    step's token budget. Not with LoRA: its per-token adapter slots follow the eager layout."""
    sizes = [s for s in config.cuda_graph_sizes if s <= config.max_num_seqs] or [1]
    blocks = -(-max_model_len // config.block_size)
    common = (blocks, max_model_len, config.block_size, device)
    decode = StepGraphs(model, kv_caches, sizes, 1, *common)
    spec = config.speculative
    if spec is None or config.enable_lora:
        return decode, None
    q = spec.num_speculative_tokens + 1
    verify_sizes = [s for s in sizes if s * q <= config.max_num_batched_tokens] or [1]
    return decode, StepGraphs(model, kv_caches, verify_sizes, q, *common, pool=decode.pool)
