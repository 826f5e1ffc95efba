"""n > 1 forks with copy-on-write, and preemption by swap, through the whole LLMEngine loop with a
runner whose paged cache is real (block_ops_fake_runner.py).

Semantics pinned here: a request with n outputs and seed s gives, as output i, exactly what a
request with n = 1 and seed s + i gives alone; unseeded outputs are all the solo output.
"""

from __future__ import annotations

import torch
from block_ops_fake_runner import BlockOpsFakeRunner, fake_token
from hypothesis import given, settings
from hypothesis import strategies as st

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams


def solo(prompt: list[int], max_tokens: int, seed: int | None) -> list[int]:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(fake_token(tokens, generator))
    return tokens[len(prompt) :]


def make_engine(
    num_blocks: int,
    block_size: int = 4,
    num_cpu_blocks: int = 0,
    max_num_seqs: int = 8,
    budget: int = 64,
    prefix: bool = True,
    async_scheduling: bool = False,
) -> LLMEngine:
    mode = "swap" if num_cpu_blocks else "recompute"
    config = EngineConfig(
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget,
        enable_prefix_caching=prefix,
        preemption_mode=mode,
        swap_space=1.0 if num_cpu_blocks else 0.0,
        max_model_len=num_blocks * block_size,
        async_scheduling=async_scheduling,
    )
    runner = BlockOpsFakeRunner(num_blocks, block_size, num_cpu_blocks)
    return LLMEngine(config, runner=runner, tokenizer=object(), log_stats=False)


def assert_pools_consistent(engine: LLMEngine) -> None:
    kv, sched = engine.kv, engine.scheduler
    live = sched.running + sched.waiting + sched.swapped
    for b in kv.blocks:
        assert b.ref_count == sum(s.block_table.count(b.block_id) for s in live), (
            f"block {b.block_id}"
        )
    held = {b for s in live for b in s.block_table}
    assert kv.num_free_blocks == kv.num_blocks - len(held)
    cpu_held = [b for s in live for b in s.cpu_block_table]
    assert len(cpu_held) == len(set(cpu_held)) and len(kv.cpu_free) == kv.num_cpu_blocks - len(
        cpu_held
    )


def run(
    engine: LLMEngine,
    requests: list[tuple[list[int], int, int, int | None]],
    abort_at: dict[int, int] | None = None,
) -> dict[int, list[list[int]]]:
    """requests [(prompt, max_tokens, n, seed)]; returns each request's n outputs."""
    abort_at = abort_at or {}
    for i, (prompt, max_tokens, n, seed) in enumerate(requests):
        engine.add_request(
            f"r{i}",
            prompt,
            SamplingParams(
                n=n, seed=seed, max_tokens=max_tokens, detokenize=False, ignore_eos=True
            ),
        )
    outputs: dict[int, list[list[int]]] = {}
    step = 0
    while engine.has_unfinished_requests():
        for i, s in abort_at.items():
            if s == step:
                engine.abort_request(f"r{i}")
        for out in engine.step():
            outputs[int(out.request_id[1:])] = [list(o.token_ids) for o in out.outputs]
        assert_pools_consistent(engine)
        step += 1
        assert step < 5000, "no progress"
    kv = engine.kv
    assert kv.num_free_blocks == kv.num_blocks and all(b.ref_count == 0 for b in kv.blocks)
    assert sorted(kv.cpu_free) == list(range(kv.num_cpu_blocks))
    return outputs


def expected(prompt: list[int], max_tokens: int, n: int, seed: int | None) -> list[list[int]]:
    return [solo(prompt, max_tokens, None if seed is None else seed + i) for i in range(n)]


def test_forks_compute_the_prompt_once_and_copy_the_shared_block_on_write():
    engine = make_engine(num_blocks=32)
    prompt = list(range(10))  # two full blocks and a half-filled third, shared by all four
    engine.add_request("r", prompt, SamplingParams(n=4, seed=7, max_tokens=6, detokenize=False))
    engine.step()  # the prompt, once, then four first tokens from its logits row
    seqs = engine.requests["r"].seqs
    assert [len(s.output_token_ids) for s in seqs] == [1, 1, 1, 1]
    assert len({tuple(s.block_table) for s in seqs}) == 1
    assert engine.kv.num_free_blocks == 32 - 3
    engine.step()  # each writes its second token into the shared third block: three copies
    copies = [op for op in engine.runner.ops_seen if op.kind == "copy"]
    # The last writer found itself the only holder and kept the original block.
    assert len(copies) == 3 and {op.src for op in copies} == {seqs[3].block_table[2]}
    assert len({s.block_table[2] for s in seqs}) == 4
    assert all(s.block_table[:2] == seqs[0].block_table[:2] for s in seqs)
    while engine.has_unfinished_requests():
        engine.step()
    outs = [s.output_token_ids for s in seqs]
    assert outs == expected(prompt, 6, 4, 7)
    assert len({tuple(o) for o in outs}) > 1, "seeded forks should diverge"


def test_unseeded_forks_of_a_deterministic_runner_are_equal():
    out = run(make_engine(num_blocks=32), [(list(range(5)), 5, 3, None)])
    assert out[0] == expected(list(range(5)), 5, 3, None)


def test_n_above_max_num_seqs_is_rejected():
    engine = make_engine(num_blocks=8, max_num_seqs=2)
    try:
        engine.add_request("r", [1, 2], SamplingParams(n=3))
    except ValueError as e:
        assert "max_num_seqs" in str(e)
    else:
        raise AssertionError("n > max_num_seqs accepted")


def test_swap_preemption_moves_blocks_and_resumes_exactly():
    reqs = [([i, i + 1, i + 2], 12, 2, i) for i in range(3)]
    engine = make_engine(num_blocks=10, num_cpu_blocks=16)
    out = run(engine, reqs)
    kinds = {op.kind for op in engine.runner.ops_seen}
    assert {"swap_out", "swap_in", "copy"} <= kinds
    assert out == {i: expected(*r) for i, r in enumerate(reqs)}


def test_full_cpu_pool_falls_back_to_recompute():
    reqs = [([i, i + 1, i + 2], 12, 2, i) for i in range(3)]
    engine = make_engine(num_blocks=10, num_cpu_blocks=2)
    out = run(engine, reqs)
    assert out == {i: expected(*r) for i, r in enumerate(reqs)}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_forks_preemptions_and_aborts_match_solo_runs_and_leave_pools_whole(data):
    # With async scheduling too: step N+1 scheduled before N's tokens reach the host.
    block_size = data.draw(st.sampled_from([1, 2, 4]))
    num_blocks = data.draw(st.integers(6, 30))
    max_num_seqs = data.draw(st.integers(4, 8))
    budget = data.draw(st.integers(max_num_seqs, max_num_seqs + 24))
    vocab = data.draw(st.integers(1, 5))  # shared prefixes are common
    reqs = []
    for _ in range(data.draw(st.integers(1, 6))):
        total = data.draw(st.integers(2, min(num_blocks * block_size, 24)))
        plen = data.draw(st.integers(1, total - 1))
        prompt = data.draw(st.lists(st.integers(0, vocab - 1), min_size=plen, max_size=plen))
        n = data.draw(st.integers(1, min(4, max_num_seqs)))
        reqs.append((prompt, total - plen, n, data.draw(st.none() | st.integers(0, 1000))))
    aborts = {
        i: data.draw(st.integers(0, 30))
        for i in range(len(reqs))
        if data.draw(st.integers(0, 4)) == 0
    }
    engine = make_engine(
        num_blocks,
        block_size,
        data.draw(st.sampled_from([0, 0, 3, 40])),
        max_num_seqs,
        budget,
        prefix=data.draw(st.booleans()),
        async_scheduling=data.draw(st.booleans()),
    )
    out = run(engine, reqs, aborts)
    for i, r in enumerate(reqs):
        want = expected(*r)
        if i in aborts:
            assert all(got == w[: len(got)] for got, w in zip(out.get(i, [[]] * r[2]), want))
        else:
            assert out[i] == want, f"request {i} diverged"
