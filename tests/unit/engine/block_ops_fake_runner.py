"""FakeRunner with the block moves and fork rows of the real runner, for engine-level tests.

Its paged token cache is real (see fake_runner.py), so a copy-on-write or swap that is missing,
late or misdirected changes the generated tokens. A seeded sequence adds a draw from its own
generator to each token, so forks of one prompt diverge as sampled ones do.
"""

from __future__ import annotations

import torch
from fake_runner import VOCAB, FakeRunner, FakeSamplerOutput, next_token

from pagoda.engine.core.kv_cache_manager import BlockOp
from pagoda.engine.core.sequence import Sequence


def fake_token(context: list[int], generator: torch.Generator | None) -> int:
    noise = int(torch.randint(0, VOCAB, (1,), generator=generator)) if generator is not None else 0
    return (next_token(context) + noise) % VOCAB


class BlockOpsFakeRunner(FakeRunner):
    def __init__(self, num_blocks: int, block_size: int, num_cpu_blocks: int = 0) -> None:
        super().__init__(num_blocks, block_size)
        self.num_cpu_blocks = num_cpu_blocks
        self.cpu_slots: dict[int, int] = {}
        self.ops_seen: list[BlockOp] = []

    def _move(
        self, src: dict[int, int], src_block: int, dst: dict[int, int], dst_block: int
    ) -> None:
        bs = self.block_size
        for off in range(bs):
            if src_block * bs + off in src:
                dst[dst_block * bs + off] = src[src_block * bs + off]
            else:
                dst.pop(dst_block * bs + off, None)

    def execute(self, batch: list[tuple[Sequence, int]], block_ops: list[BlockOp] = ()):
        for op in block_ops:
            self.ops_seen.append(op)
            src, dst = {
                "copy": (self.slots, self.slots),
                "swap_out": (self.slots, self.cpu_slots),
                "swap_in": (self.cpu_slots, self.slots),
            }[op.kind]
            self._move(src, op.src, dst, op.dst)
        if not batch:
            self.last_tokens = {}
            return [], None
        self.steps += 1
        self.write_batch(batch)
        sampling = [seq for seq, n in batch if seq.num_computed_tokens + n == seq.num_tokens]
        tokens = []
        for seq in sampling:
            context = [self.slots[self._slot(seq, p)] for p in range(seq.num_tokens)]
            tokens += [fake_token(context, s.generator) for s in (seq, *seq.forks)]
        sampling = [s for seq in sampling for s in (seq, *seq.forks)]
        self.last_tokens = dict(zip(sampling, tokens))
        return sampling, FakeSamplerOutput(tokens, [0.0] * len(tokens), [None] * len(tokens))
