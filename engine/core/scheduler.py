"""Continuous batching under a token budget, with chunked prefill and preemption.

Each step first advances the running sequences (a decode token each, or the next chunk of a
prefill), then brings swapped sequences back, then admits waiting ones while the budget,
`max_num_seqs` and the KV pool allow. When blocks run out, the worst running sequence (highest
priority value, latest arrival) is preempted: by recompute, its blocks are freed and it waits again,
to be recomputed from its prompt and output so far; by swap, its blocks move to the CPU pool and it
resumes where it stopped (recompute when the CPU pool is full).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from pagoda.engine.core.kv_cache_manager import BlockOp, KVCacheManager
from pagoda.engine.core.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    scheduled: list[tuple[Sequence, int]] = field(
        default_factory=list
    )  # (sequence, tokens this step)
    num_preemptions: int = 0
    prefix_cache_queries: int = 0  # prompt tokens looked up, first admissions only
    prefix_cache_hits: int = 0
    block_ops: list[BlockOp] = field(
        default_factory=list
    )  # for the runner, before the forward pass

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.scheduled)


class Scheduler:
    def __init__(
        self,
        kv: KVCacheManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        policy: Literal["fcfs", "priority"] = "fcfs",
        preemption_mode: Literal["recompute", "swap"] = "recompute",
        max_loras: int = 0,
    ) -> None:
        if max_num_batched_tokens < max_num_seqs:
            # Otherwise running decodes could outnumber the budget and the tail would starve.
            raise ValueError(
                f"max_num_batched_tokens ({max_num_batched_tokens}) must be at least "
                f"max_num_seqs ({max_num_seqs})"
            )
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.policy = policy
        self.preemption_mode = preemption_mode
        # --max-loras under --enable-lora (0: no LoRA): the running sequences' distinct adapters
        # never exceed it, so every step's adapters fit the runner's slots.
        self.max_loras = max_loras
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.swapped: list[Sequence] = []

    def _key(self, seq: Sequence) -> tuple[int, float]:
        return seq.sort_key if self.policy == "priority" else (0, seq.arrival_time)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.swapped)

    @property
    def num_running_seqs(self) -> int:
        """Running sequences, counting the forks they will start (max_num_seqs bounds this)."""
        return sum(1 + len(s.forks) for s in self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Start `child` running on `parent`'s blocks (after the parent's step has been counted);
        a child of a preempted parent (a beam waiting for its group) waits to be computed afresh."""
        if parent.status is not SequenceStatus.RUNNING:
            child.status = SequenceStatus.WAITING
            self.waiting.append(child)
            return
        self.kv.fork(parent, child)
        child.num_cached_tokens = parent.num_cached_tokens
        child.first_scheduled_time = parent.first_scheduled_time
        child.status = SequenceStatus.RUNNING
        self.running.append(child)

    def finish(self, seq: Sequence) -> None:
        """Take a sequence out (finished or aborted) and free its blocks. A sequence never added (a
        fork not started, or one aborted before it arrived) is only marked finished."""
        queue = {
            SequenceStatus.RUNNING: self.running,
            SequenceStatus.WAITING: self.waiting,
            SequenceStatus.SWAPPED: self.swapped,
        }.get(seq.status, [])
        if seq in queue:
            queue.remove(seq)
        self.kv.free_sequence(seq)
        seq.status = SequenceStatus.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        seq.spec_token_ids.clear()
        seq.num_preemptions += 1
        if self.preemption_mode == "swap" and self.kv.can_swap_out(seq):
            self.kv.swap_out(seq)
            seq.status = SequenceStatus.SWAPPED
            self.swapped.append(seq)
        else:
            self.kv.free_sequence(seq)
            seq.status = SequenceStatus.WAITING
            self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        for seq in list(self.running):
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            if budget == 0:
                break
            remaining = seq.num_tokens - seq.num_computed_tokens
            # A decode with drafts verifies them in the same pass: k more tokens, as the budget
            # allows (the drafts it cannot take are dropped).
            n = min(remaining + len(seq.spec_token_ids), budget)
            del seq.spec_token_ids[max(n - remaining, 0) :]
            if n == 0 or seq.awaiting_last_token:
                continue  # a beam whose logprobs wait for the rest of its group, or a sequence ending
            while not self.kv.allocate(seq, n):
                victim = max(self.running, key=self._key)
                budget += self._unschedule(out, victim)
                self._preempt(victim)
                out.num_preemptions += 1
                if victim is seq:
                    break
            else:
                out.scheduled.append((seq, n))
                budget -= n
        if out.num_preemptions == 0:
            budget = self._swap_in(out, budget)
            if not self.swapped:  # swapped sequences go before new ones
                self._admit(out, budget)
        out.block_ops = self.kv.take_ops()
        return out

    def _swap_in(self, out: SchedulerOutput, budget: int) -> int:
        self.swapped.sort(key=self._key)
        while (
            self.swapped
            and budget > 0
            and self.num_running_seqs + 1 + len(self.swapped[0].forks) <= self.max_num_seqs
        ):
            seq = self.swapped[0]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not self.kv.can_swap_in(seq, n) or not self._adapter_fits(seq):
                break
            self.swapped.pop(0)
            self.kv.swap_in(seq, n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append((seq, n))
            budget -= n
        return budget

    def _admit(self, out: SchedulerOutput, budget: int) -> None:
        while self.waiting and budget > 0:
            self.waiting.sort(key=self._key)  # nearly sorted: linear; preemptions below append
            # A request whose adapter cannot get a slot waits; later ones may go first.
            seq = next((s for s in self.waiting if self._adapter_fits(s)), None)
            if seq is None:
                return
            if self.num_running_seqs + 1 + len(seq.forks) > self.max_num_seqs:
                return
            cached = self.kv.find_cached_prefix(seq)
            n = min(seq.num_tokens - len(cached) * self.kv.block_size, budget)
            while not self.kv.allocate(seq, n, cached):
                victim = max(self.running, key=self._key, default=None)
                if (
                    self.policy != "priority"
                    or victim is None
                    or self._key(victim) <= self._key(seq)
                ):
                    return
                budget += self._unschedule(out, victim)
                self._preempt(victim)
                out.num_preemptions += 1
                n = min(seq.num_tokens - len(cached) * self.kv.block_size, budget)
            self.waiting.remove(seq)
            if seq.num_preemptions == 0:
                # Recomputation after a preemption is not a prefix-cache hit for the metrics.
                seq.num_cached_tokens = len(cached) * self.kv.block_size
                out.prefix_cache_queries += seq.num_prompt_tokens
                out.prefix_cache_hits += seq.num_cached_tokens
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = time.monotonic()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append((seq, n))
            budget -= n

    def _adapter_fits(self, seq: Sequence) -> bool:
        if self.max_loras == 0 or seq.lora_request is None:
            return True
        running = {s.lora_request.lora_int_id for s in self.running if s.lora_request is not None}
        return seq.lora_request.lora_int_id in running or len(running) < self.max_loras

    @staticmethod
    def _unschedule(out: SchedulerOutput, seq: Sequence) -> int:
        """Drop `seq` from this step's batch if it is in it; return the budget it held."""
        for i, (s, n) in enumerate(out.scheduled):
            if s is seq:
                del out.scheduled[i]
                return n
        return 0
