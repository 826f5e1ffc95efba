"""The n-gram proposer (vLLM's method "ngram", prompt lookup decoding): find the sequence's last
n tokens earlier in its prompt and output, and propose the tokens that followed them there.

The longest n in prompt_lookup_max..prompt_lookup_min that matches wins; among its matches the
most recent one, whose continuation is the freshest guess. No model runs: a proposal costs a
scan of the context on the host.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pagoda.engine.core.sequence import Sequence


class NgramProposer:
    def __init__(self, prompt_lookup_min: int, prompt_lookup_max: int) -> None:
        self.min_n, self.max_n = prompt_lookup_min, prompt_lookup_max

    def propose_batch(self, requests: list[tuple[Sequence, int]]) -> list[list[int]]:
        """Up to `room` tokens for each (sequence, room)."""
        return [self.propose(seq.token_ids(), room) for seq, room in requests]

    def propose(self, token_ids: list[int], k: int) -> list[int]:
        """Up to k tokens to follow `token_ids`; none when no suffix of min_n or more recurs."""
        if k < 1 or len(token_ids) <= self.min_n:
            return []
        context = np.asarray(token_ids, dtype=np.int64)
        for n in range(min(self.max_n, len(context) - 1), self.min_n - 1, -1):
            # Windows that end before the last token: the suffix itself is no match.
            windows = sliding_window_view(context[:-1], n)
            hits = np.flatnonzero((windows == context[-n:]).all(axis=1))
            if len(hits):
                start = int(hits[-1]) + n
                return context[start : start + k].tolist()
        return []
