"""Which adapter slot each token of the forward pass runs with, in static device buffers.

The runner sets it before every forward pass. The kernels read the tokens grouped by slot (token
indices sorted by slot, each slot's count and start): a program per block of one slot's tokens,
nothing gathered. The buffers never move, so a captured CUDA graph reads each step's grouping:
one graph serves any mix of adapters and the base (slot -1, no delta). The CPU reference reads the
host copy of the grouping instead (`rows`).
"""

from __future__ import annotations

import numpy as np
import torch


class LoRABatch:
    def __init__(
        self,
        max_tokens: int,
        num_slots: int,
        device: torch.device,
        use_kernels: bool | None = None,  # None: on a GPU (a test runs them interpreted on a CPU)
    ) -> None:
        self.num_slots, self.device = num_slots, device
        self.use_kernels = device.type == "cuda" if use_kernels is None else use_kernels
        # [sorted token indices (max_tokens) | per-slot counts (num_slots) | starts (num_slots)]
        self._buffer = torch.zeros(max_tokens + 2 * num_slots, dtype=torch.int32, device=device)
        self.max_tokens = max_tokens
        # Launch the kernels even when no token has an adapter: while graphs are captured (their
        # replays serve adapters) and while the runner warms up (Triton compiles at first launch,
        # which a capture must not do).
        self.launch_empty = False
        self.active: list[int] = []  # slots with tokens in this pass
        self.rows: dict[int, torch.Tensor] = {}  # slot -> its token indices (CPU reference)

    @property
    def sorted_tokens(self) -> torch.Tensor:
        return self._buffer[: self.max_tokens]

    @property
    def slot_counts(self) -> torch.Tensor:
        return self._buffer[self.max_tokens : self.max_tokens + self.num_slots]

    @property
    def slot_starts(self) -> torch.Tensor:
        return self._buffer[self.max_tokens + self.num_slots :]

    def set(self, token_slots: np.ndarray) -> None:
        """token_slots [T]: each token's slot, -1 for the base model."""
        if len(token_slots) > self.max_tokens:  # never reallocated: graphs hold its address
            raise RuntimeError(
                f"a pass of {len(token_slots)} tokens, above the LoRA batch's {self.max_tokens}"
            )
        order = np.argsort(token_slots, kind="stable")
        counts = np.bincount(token_slots[token_slots >= 0], minlength=self.num_slots)
        starts = int((token_slots < 0).sum()) + np.concatenate(([0], np.cumsum(counts)[:-1]))
        self.active = [int(s) for s in np.flatnonzero(counts)]
        if self.use_kernels:
            host = np.zeros(self._buffer.shape[0], dtype=np.int32)
            host[: len(order)] = order
            host[self.max_tokens : self.max_tokens + self.num_slots] = counts
            host[self.max_tokens + self.num_slots :] = starts
            staged = torch.from_numpy(host)
            if self.device.type == "cuda":  # pinned: the copy runs without blocking the host
                staged = staged.pin_memory()
            self._buffer.copy_(staged, non_blocking=True)
        else:
            self.rows = {
                s: torch.from_numpy(order[starts[s] : starts[s] + counts[s]].astype(np.int64))
                for s in self.active
            }
