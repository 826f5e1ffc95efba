"""Workload W1 and its smaller variants: random token ids, uniform lengths, a fixed seed."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Workload:
    prompts: list[list[int]]
    output_lens: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(map(len, self.prompts))

    @property
    def output_tokens(self) -> int:
        return sum(self.output_lens)


def random_workload(
    num_prompts: int = 256,
    input_len: tuple[int, int] = (100, 1024),
    output_len: tuple[int, int] = (100, 1024),
    vocab_size: int = 128000,
    seed: int = 0,
) -> Workload:
    """W1 by default: the same draws, in the same order, as ../shared/bench/hf_baseline.py."""
    rng = random.Random(seed)
    prompts = [
        [rng.randint(0, vocab_size - 1) for _ in range(rng.randint(*input_len))]
        for _ in range(num_prompts)
    ]
    outs = [rng.randint(*output_len) for _ in range(num_prompts)]
    return Workload(prompts, outs)
