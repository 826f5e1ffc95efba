"""Drive a model through the paged KV cache the way the runner does, without the runner."""

from __future__ import annotations

import random

import torch

from pagoda.engine.attention import AttentionMetadata
from pagoda.engine.models import ModelConfig


class PagedBatch:
    """Sequences with block tables over one KV pool; free blocks handed out in shuffled order."""

    def __init__(
        self,
        cfg: ModelConfig,
        num_blocks: int = 64,
        block_size: int = 16,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.kv = [
            (torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
            for _ in range(cfg.num_layers)
        ]
        self.block_size = block_size
        self.free = list(range(num_blocks))
        random.Random(0).shuffle(self.free)
        self.tables: dict[int, list[int]] = {}
        self.lens: dict[int, int] = {}

    @torch.inference_mode()
    def step(
        self, model: torch.nn.Module, chunks: list[tuple[int, list[int]]]
    ) -> list[torch.Tensor]:
        """One forward over (seq id, new token ids) chunks; returns each chunk's logits [n, vocab]."""
        bs = self.block_size
        ids, positions, slots, starts, seq_lens = [], [], [], [0], []
        for seq, tokens in chunks:
            start = self.lens.get(seq, 0)
            end = start + len(tokens)
            table = self.tables.setdefault(seq, [])
            while len(table) * bs < end:
                table.append(self.free.pop())
            ids += tokens
            positions += range(start, end)
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            starts.append(starts[-1] + len(tokens))
            seq_lens.append(end)
            self.lens[seq] = end
        width = max(len(self.tables[seq]) for seq, _ in chunks)
        tables = [self.tables[seq] + [0] * (width - len(self.tables[seq])) for seq, _ in chunks]
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots),
            query_start_loc=torch.tensor(starts, dtype=torch.int32),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            block_tables=torch.tensor(tables, dtype=torch.int32),
            max_query_len=max(len(t) for _, t in chunks),
            max_seq_len=max(seq_lens),
            block_size=bs,
            query_start_loc_cpu=starts,
            seq_lens_cpu=seq_lens,
        )
        hidden = model(torch.tensor(ids), torch.tensor(positions), self.kv, meta)
        logits = model.compute_logits(hidden)
        return [logits[starts[i] : starts[i + 1]] for i in range(len(chunks))]
