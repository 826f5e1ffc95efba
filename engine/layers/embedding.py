"""The token embedding and the LM head, their vocabulary rows split across the tensor-parallel
ranks (vLLM's VocabParallelEmbedding and ParallelLMHead).

The vocabulary is padded to a multiple of padding_size * tp_size so every rank holds as many rows;
rank r holds [r * n, (r+1) * n). A lookup answers zeros for ids outside the rank's range, and an
all-reduce sums the ranks' answers. The head's logits are gathered over the ranks and cut back to
the real vocabulary (LogitsProcessor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.engine.distributed import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_gather,
    tensor_model_parallel_all_reduce,
)
from pagoda.engine.layers.weights import (
    LoadedWeight,
    copy_checked,
    narrow,
    set_weight_loader,
    shape_of,
)

DEFAULT_VOCAB_PADDING_SIZE = 64


def pad_vocab_size(vocab_size: int, pad_to: int) -> int:
    return -(-vocab_size // pad_to) * pad_to


class VocabParallelEmbedding(nn.Module):
    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_size: int = DEFAULT_VOCAB_PADDING_SIZE,
    ) -> None:
        super().__init__()
        self.tp_rank = get_tensor_model_parallel_rank()
        self.tp_size = get_tensor_model_parallel_world_size()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.num_embeddings_padded = pad_vocab_size(num_embeddings, padding_size * self.tp_size)
        self.num_embeddings_per_partition = self.num_embeddings_padded // self.tp_size
        self.vocab_start_index = self.tp_rank * self.num_embeddings_per_partition
        self.vocab_end_index = self.vocab_start_index + self.num_embeddings_per_partition
        self.weight = nn.Parameter(torch.empty(self.num_embeddings_per_partition, embedding_dim))
        set_weight_loader(self.weight, self.weight_loader)

    def weight_loader(self, param: nn.Parameter, loaded: LoadedWeight) -> None:
        """Rows [start, end) of the checkpoint's table; the padding rows past its end are zeros."""
        rows, dim = shape_of(loaded)
        if (rows, dim) != (self.num_embeddings, self.embedding_dim):
            raise ValueError(
                f"embedding: model expects {(self.num_embeddings, self.embedding_dim)}, "
                f"checkpoint has {(rows, dim)}"
            )
        start = min(self.vocab_start_index, rows)
        end = min(self.vocab_end_index, rows)
        param.data[end - start :].zero_()
        copy_checked(param.data[: end - start], narrow(loaded, 0, start, end - start), "embedding")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        outside = (input_ids < self.vocab_start_index) | (input_ids >= self.vocab_end_index)
        local = (input_ids - self.vocab_start_index).masked_fill_(outside, 0)
        x = F.embedding(local, self.weight).masked_fill_(outside.unsqueeze(-1), 0)
        return tensor_model_parallel_all_reduce(x)


class ParallelLMHead(VocabParallelEmbedding):
    """The output projection, sharded as the embedding; tie_weights shares the embedding's table."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bias: bool = False,
        padding_size: int = DEFAULT_VOCAB_PADDING_SIZE,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_size)
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.empty(self.num_embeddings_per_partition))
            set_weight_loader(self.bias, self._bias_loader)

    def _bias_loader(self, param: nn.Parameter, loaded: LoadedWeight) -> None:
        end = min(self.vocab_end_index, self.num_embeddings)
        start = min(self.vocab_start_index, end)
        param.data[end - start :].zero_()
        copy_checked(param.data[: end - start], narrow(loaded, 0, start, end - start), "bias")

    def tie_weights(self, embed_tokens: VocabParallelEmbedding) -> ParallelLMHead:
        self.weight = embed_tokens.weight
        return self

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("ParallelLMHead is applied through LogitsProcessor")


class LogitsProcessor(nn.Module):
    """Hidden states [N, hidden] -> float32 logits [N, vocab_size], whole on every rank."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, lm_head: ParallelLMHead, hidden: torch.Tensor) -> torch.Tensor:
        logits = tensor_model_parallel_all_gather(F.linear(hidden, lm_head.weight, lm_head.bias))
        return logits[..., : self.vocab_size].float()
