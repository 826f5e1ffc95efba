"""The scheduler driven through adversarial workloads by a runner that really reads its cache."""

from __future__ import annotations

import random

import pytest
from fake_runner import FakeRunner, next_token
from hypothesis import given, settings
from hypothesis import strategies as st

from pagoda.engine.core.kv_cache_manager import KVCacheManager
from pagoda.engine.core.scheduler import Scheduler
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.sampling_params import SamplingParams


def solo(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(next_token(tokens))
    return tokens[len(prompt) :]


def drive(
    requests,
    num_blocks,
    block_size,
    max_num_seqs,
    budget,
    policy="fcfs",
    prefix=True,
    abort_at: dict[int, int] | None = None,
    arrive_at: dict[int, int] | None = None,
):
    """Run requests [(prompt, max_tokens, priority)] to the end; return outputs, finish step, stats."""
    kv = KVCacheManager(num_blocks, block_size, prefix)
    sched = Scheduler(kv, max_num_seqs, budget, policy)
    runner = FakeRunner(num_blocks, block_size)
    seqs = [
        Sequence(
            f"s{i}", f"r{i}", 0, p, SamplingParams(max_tokens=m), priority=pr, arrival_time=float(i)
        )
        for i, (p, m, pr) in enumerate(requests)
    ]
    arrive_at = arrive_at or {}
    abort_at = abort_at or {}
    finished_at: dict[int, int] = {}
    preemptions = 0
    step = 0
    added = {i for i in range(len(seqs)) if i not in arrive_at}
    for i in added:
        sched.add(seqs[i])
    bound = 50 * sum(len(p) + m for p, m, _ in requests) + 100
    while sched.num_unfinished or any(s >= step for s in arrive_at.values()):
        for i, s in arrive_at.items():
            if s == step:
                sched.add(seqs[i])
                added.add(i)
        for i, s in abort_at.items():
            if s == step and i in added and not seqs[i].is_finished:
                sched.finish(seqs[i])
                finished_at[i] = step
        out = sched.schedule()
        preemptions += out.num_preemptions
        assert out.num_tokens <= budget and len(out.scheduled) <= max_num_seqs
        if out.scheduled:
            sampling, sampled = runner.execute(out.scheduled)
            for seq, n in out.scheduled:
                seq.num_computed_tokens += n
                kv.cache_full_blocks(seq)
            for seq, tok in zip(sampling, sampled.token_ids if sampled else []):
                seq.output_token_ids.append(tok)
                if len(seq.output_token_ids) == seq.params.max_tokens:
                    sched.finish(seq)
                    finished_at[int(seq.seq_id[1:])] = step
        step += 1
        assert step < bound, "no progress: deadlock or starvation"
    assert kv.num_free_blocks == kv.num_blocks, "blocks leaked"
    return [s.output_token_ids for s in seqs], finished_at, preemptions


def check_against_solo(requests, outputs, aborted=()):
    for i, ((prompt, m, _), got) in enumerate(zip(requests, outputs)):
        want = solo(prompt, m)
        if i in aborted:
            assert got == want[: len(got)]
        else:
            assert got == want, f"request {i} diverged from its solo run"


def test_continuous_batching_mixes_prefill_chunks_and_decodes():
    reqs = [([1] * 40, 5, 0), ([2, 3], 30, 0), ([4] * 17, 10, 0)]
    out, _, pre = drive(reqs, num_blocks=64, block_size=4, max_num_seqs=8, budget=16)
    check_against_solo(reqs, out)
    assert pre == 0


def test_tiny_pool_forces_preemption_and_every_request_finishes():
    rng = random.Random(0)
    reqs = [
        ([rng.randrange(97) for _ in range(rng.randint(1, 20))], rng.randint(1, 12), 0)
        for _ in range(12)
    ]
    out, _, pre = drive(reqs, num_blocks=9, block_size=4, max_num_seqs=6, budget=16)
    check_against_solo(reqs, out)
    assert pre > 0, "the workload was meant to run out of blocks"


def test_prompt_near_the_pool_size():
    reqs = [(list(range(28)), 4, 0), (list(range(10, 30)), 8, 0), ([5], 31, 0)]
    out, _, pre = drive(reqs, num_blocks=8, block_size=4, max_num_seqs=4, budget=8)
    check_against_solo(reqs, out)
    assert pre > 0


def test_priority_policy_serves_lower_values_first():
    # One slot at a time: the order of completion is the order of service.
    reqs = [([1, 2], 3, 5), ([3, 4], 3, 1), ([5, 6], 3, 3), ([7, 8], 3, 0)]
    out, finished_at, _ = drive(
        reqs, num_blocks=32, block_size=4, max_num_seqs=1, budget=8, policy="priority"
    )
    check_against_solo(reqs, out)
    order = sorted(finished_at, key=finished_at.get)
    assert order == [3, 1, 2, 0]


def test_high_priority_arrival_preempts_a_low_priority_runner():
    reqs = [(list(range(12)), 20, 9), (list(range(40, 52)), 4, 0)]
    out, finished_at, pre = drive(
        reqs,
        num_blocks=8,
        block_size=4,
        max_num_seqs=4,
        budget=16,
        policy="priority",
        arrive_at={1: 3},
    )
    check_against_solo(reqs, out)
    assert pre >= 1 and finished_at[1] < finished_at[0]


def test_fcfs_rejects_a_budget_below_max_num_seqs():
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        Scheduler(KVCacheManager(4, 4), max_num_seqs=8, max_num_batched_tokens=4)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_adversarial_workloads_match_solo_runs(data):
    block_size = data.draw(st.sampled_from([1, 2, 4, 8]))
    num_blocks = data.draw(st.integers(3, 24))
    capacity = num_blocks * block_size
    max_num_seqs = data.draw(st.integers(1, 8))
    budget = data.draw(st.integers(max_num_seqs, max_num_seqs + 32))
    policy = data.draw(st.sampled_from(["fcfs", "priority"]))
    vocab = data.draw(st.integers(1, 97))
    reqs = []
    for _ in range(data.draw(st.integers(1, 10))):
        total = data.draw(st.integers(2, capacity)) if capacity >= 2 else 2
        plen = data.draw(st.integers(1, total - 1))
        prompt = data.draw(st.lists(st.integers(0, vocab - 1), min_size=plen, max_size=plen))
        reqs.append((prompt, total - plen, data.draw(st.integers(0, 3))))
    if capacity < 2:
        return
    n = len(reqs)
    arrive = {i: data.draw(st.integers(0, 20)) for i in range(n) if data.draw(st.booleans())}
    aborts = {
        i: data.draw(st.integers(0, 40)) for i in range(n) if data.draw(st.integers(0, 5)) == 0
    }
    out, _, _ = drive(
        reqs,
        num_blocks,
        block_size,
        max_num_seqs,
        budget,
        policy,
        prefix=data.draw(st.booleans()),
        abort_at=aborts,
        arrive_at=arrive,
    )
    check_against_solo(reqs, out, aborted=set(aborts))
