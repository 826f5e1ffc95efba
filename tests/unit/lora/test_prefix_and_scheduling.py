"""The core's side of LoRA: prefix-cache blocks never shared across adapters (nor with the base),
shared within one; the scheduler admits a request only while the running adapters fit
--max-loras, letting later requests of a running adapter (or of the base) go first."""

from __future__ import annotations

from pagoda.engine import LoRARequest
from pagoda.engine.core.kv_cache_manager import KVCacheManager
from pagoda.engine.core.scheduler import Scheduler
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.sampling_params import SamplingParams

A, B, C = (LoRARequest(n, i, f"/adapters/{n}") for i, n in enumerate("abc", start=1))


def seq(i: int, tokens: list[int], lora: LoRARequest | None) -> Sequence:
    return Sequence(f"s{i}", f"r{i}", 0, tokens, SamplingParams(max_tokens=8), lora_request=lora)


def test_prefix_cache_is_per_adapter() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    first = seq(0, list(range(8)), A)
    assert kv.allocate(first, 8)
    first.num_computed_tokens = 8
    kv.cache_full_blocks(first)
    prompt = list(range(8)) + [99]
    assert kv.find_cached_prefix(seq(1, prompt, A)) == first.block_table
    assert kv.find_cached_prefix(seq(2, prompt, B)) == []
    assert kv.find_cached_prefix(seq(3, prompt, None)) == []
    # The same adapter under another name or path is still the same id: shared.
    renamed = LoRARequest("a2", A.lora_int_id, "/elsewhere")
    assert kv.find_cached_prefix(seq(4, prompt, renamed)) == first.block_table


def test_scheduler_defers_adapters_beyond_the_slots() -> None:
    sched = Scheduler(KVCacheManager(64, 4), 8, 256, max_loras=2)
    seqs = [seq(i, [1, 2, 3], lora) for i, lora in enumerate([A, B, C, A, None, B])]
    for s in seqs:
        sched.add(s)
    first = [s.seq_id for s, _ in sched.schedule().scheduled]
    assert first == ["s0", "s1", "s3", "s4", "s5"]  # C waits: A and B hold both slots
    assert [s.seq_id for s in sched.waiting] == ["s2"]
    for s in list(sched.running):
        if s.lora_request is A:
            sched.finish(s)
    assert [s.seq_id for s, _ in sched.schedule().scheduled if s.seq_id == "s2"] == ["s2"]
