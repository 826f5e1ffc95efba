"""A model runner stand-in for scheduler tests: it really reads and writes a paged token cache.

Each new token's id is written at its slot; the next token is a hash of the whole context read back
through the block table. A scheduler or KV-manager bug (a wrong block, a stale slot, a block shared
by mistake) therefore changes the generated tokens, and the tests compare them with a solo run.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagoda.engine.core.sequence import PENDING_TOKEN, Sequence

VOCAB = 97


@dataclass
class FakeSamplerOutput:  # the fields of SamplerOutput the engine reads
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[None]

    def result(self) -> FakeSamplerOutput:  # as SampledBatch.result(): the host's copy
        return self


def next_token(context: list[int]) -> int:
    h = 7
    for t in context:
        h = (h * 31 + t) % 1_000_003
    return h % VOCAB


class FakeRunner:
    device = "cpu"

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        self.slots: dict[int, int] = {}
        self.steps = 0
        self.last_tokens: dict[
            Sequence, int
        ] = {}  # as the real runner: last step's samples "on the device"

    def _slot(self, seq: Sequence, pos: int) -> int:
        return seq.block_table[pos // self.block_size] * self.block_size + pos % self.block_size

    def write_batch(self, batch: list[tuple[Sequence, int]]) -> None:
        """Write each scheduled token's id at its slot, as the model writes its K/V."""
        for seq, n in batch:
            start = seq.num_computed_tokens
            assert len(seq.block_table) * self.block_size >= start + n, "no room allocated"
            for pos, tok in zip(range(start, start + n), seq.token_ids(start, start + n)):
                self.slots[self._slot(seq, pos)] = (
                    self.last_tokens[seq] if tok == PENDING_TOKEN else tok
                )

    def execute(
        self, batch: list[tuple[Sequence, int]]
    ) -> tuple[list[Sequence], FakeSamplerOutput]:
        self.steps += 1
        self.write_batch(batch)
        sampling = [seq for seq, n in batch if seq.num_computed_tokens + n == seq.num_tokens]
        tokens = [
            next_token([self.slots[self._slot(s, p)] for p in range(s.num_tokens)])
            for s in sampling
        ]
        self.last_tokens = dict(zip(sampling, tokens))
        return sampling, FakeSamplerOutput(tokens, [0.0] * len(tokens), [None] * len(tokens))
