"""CUDA graphs for every step up to 2,048 tokens: one captured forward pass per size, replayed with
new inputs.

A decode step launches hundreds of small kernels; replaying a captured graph removes their launch
cost. Decode graphs take one query token per sequence; with --speculative-config, verification
graphs take k + 1 (a sequence's last token and its k drafts), and a step that mixes speculating
and plain sequences is padded to k + 1 per sequence (step_layout.py says how, and why the
sequences' own rows come out as in an eager step). A batch of B sequences runs in the smallest
captured size >= B. Any other step (prefill tokens beside decodes) runs in the graph of the
smallest captured token count >= its own (TokenLayout). The rejection sampler runs after the
graph, on the logits of all k + 1 positions. All share one memory pool: they never run at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.config import EngineConfig
from pagoda.engine.runner.step_layout import StepLayout, TokenLayout

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE  # what CUDAGraph.pool() returns

log = logging.getLogger(__name__)


class StepGraphs:
    """Graphs of one layout (StepLayout or TokenLayout), one per captured size."""

    def __init__(
        self,
        model: nn.Module,
        kv_caches: list,
        layout: StepLayout | TokenLayout,
        sizes: list[int],
        device: torch.device,
        pool: _POOL_HANDLE | None = None,
    ) -> None:
        self.model, self.kv_caches, self.layout = model, kv_caches, layout
        self.sizes = sorted(set(sizes))
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.pool = pool
        self._capture(device)

    @torch.inference_mode()
    def _capture(self, device: torch.device) -> None:
        for size in reversed(self.sizes):  # largest first, so smaller graphs reuse its memory pool
            ids, pos, meta = self.layout.inputs(size)
            self.model(ids, pos, self.kv_caches, meta)  # warm-up, compiles kernels
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[size] = self.model(ids, pos, self.kv_caches, meta)
            self.pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize(device)
        log.info("captured CUDA graphs (%s) of sizes %s", type(self.layout).__name__, self.sizes)

    def fits(self, meta: AttentionMetadata) -> bool:
        """Whether a step (from ModelRunner.prepare: host copies set) can replay one of these."""
        return self.layout.size_for(meta, self.sizes) is not None

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """The step's hidden states in its own (eager) token order."""
        size = self.layout.size_for(meta, self.sizes)
        assert size is not None, "run only what fits"
        rows = self.layout.load(input_ids, positions, meta, size)
        self.graphs[size].replay()
        return self.outputs[size][rows]


# Token counts of the graphs for steps with prefill tokens. Larger steps run eagerly: their GPU
# work outlasts the launches, which async scheduling overlaps with it.
TOKEN_GRAPH_SIZES = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)


def capture_step_graphs(
    model: nn.Module,
    kv_caches: list,
    config: EngineConfig,
    max_model_len: int,
    device: torch.device,
) -> tuple[StepGraphs, StepGraphs | None, StepGraphs | None]:
    """The graphs a step may replay, in the order they are tried: decode graphs; with
    --speculative-config verification graphs of k + 1 query tokens per sequence, at the decode
    graphs' batch sizes whose k + 1 tokens a sequence stay within the step's token budget (not
    with LoRA: its per-token adapter slots follow the eager layout); then graphs by token count
    for every other step of up to 2,048 tokens. Captured largest first into one memory pool:
    they never run at once."""
    blocks = -(-max_model_len // config.block_size)
    common = (blocks, max_model_len, config.block_size, device)
    # A step holds at most the token budget, and at most max_num_seqs whole sequences.
    most_tokens = min(config.max_num_batched_tokens, config.max_num_seqs * max_model_len)
    token_sizes = [s for s in TOKEN_GRAPH_SIZES if s <= most_tokens]
    by_tokens = None
    if token_sizes:
        tokens = TokenLayout(token_sizes[-1], config.max_num_seqs, *common)
        by_tokens = StepGraphs(model, kv_caches, tokens, token_sizes, device)
    pool = by_tokens.pool if by_tokens else None
    sizes = [s for s in config.cuda_graph_sizes if s <= config.max_num_seqs] or [1]
    decode = StepGraphs(model, kv_caches, StepLayout(max(sizes), 1, *common), sizes, device, pool)
    verify = None
    spec = config.speculative
    if spec is not None and not config.enable_lora:
        q = spec.num_speculative_tokens + 1
        verify_sizes = [s for s in sizes if s * q <= config.max_num_batched_tokens] or [1]
        layout = StepLayout(max(verify_sizes), q, *common)
        verify = StepGraphs(model, kv_caches, layout, verify_sizes, device, decode.pool)
    return decode, verify, by_tokens
