from hypothesis import given, settings
from hypothesis import strategies as st

from pagoda.engine.core.kv_cache_manager import KVCacheManager
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.sampling_params import SamplingParams


def seq(i: int, tokens: list[int], salt: str | None = None) -> Sequence:
    return Sequence(f"s{i}", f"r{i}", 0, tokens, SamplingParams(max_tokens=8), cache_salt=salt)


def assert_pool_whole(kv: KVCacheManager) -> None:
    assert kv.num_free_blocks == kv.num_blocks
    assert all(b.ref_count == 0 for b in kv.blocks)


def test_blocks_taken_on_demand_and_returned():
    kv = KVCacheManager(num_blocks=4, block_size=4)
    s = seq(0, list(range(5)))
    assert kv.allocate(s, 5)
    assert len(s.block_table) == 2 and kv.num_free_blocks == 2
    s.num_computed_tokens = 5
    s.output_token_ids += [1, 2, 3]
    assert kv.allocate(s, 3)  # 8 tokens still fit two blocks
    assert len(s.block_table) == 2
    s.num_computed_tokens = 8
    s.output_token_ids.append(4)
    assert kv.allocate(s, 1)
    assert len(s.block_table) == 3
    kv.free_sequence(s)
    assert_pool_whole(kv)


def test_allocation_that_does_not_fit_changes_nothing():
    kv = KVCacheManager(num_blocks=2, block_size=4)
    s = seq(0, list(range(12)))
    assert not kv.allocate(s, 12)
    assert s.block_table == [] and kv.num_free_blocks == 2


def test_prefix_hit_shares_blocks_and_never_covers_the_last_token():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    a = seq(0, list(range(8)))
    assert kv.allocate(a, 8)
    a.num_computed_tokens = 8
    kv.cache_full_blocks(a)
    b = seq(1, list(range(8)) + [99])
    hits = kv.find_cached_prefix(b)
    assert hits == a.block_table
    assert kv.allocate(b, 1, hits)
    assert b.num_computed_tokens == 8 and b.block_table[:2] == a.block_table
    assert kv.blocks[a.block_table[0]].ref_count == 2
    # A prompt equal to the cached blocks must still compute its last token.
    c = seq(2, list(range(8)))
    assert len(kv.find_cached_prefix(c)) == 1
    # Another salt is another cache.
    assert kv.find_cached_prefix(seq(3, list(range(8)) + [5], salt="tenant-b")) == []
    for s in (a, b):
        kv.free_sequence(s)
    assert_pool_whole(kv)


def test_freed_cached_blocks_are_reused_until_evicted_lru():
    kv = KVCacheManager(num_blocks=4, block_size=2)
    a = seq(0, [1, 2, 3, 4, 5])
    assert kv.allocate(a, 5)
    a.num_computed_tokens = 5
    kv.cache_full_blocks(a)
    kv.free_sequence(a)
    assert_pool_whole(kv)
    b = seq(1, [1, 2, 3, 4, 9])
    assert len(kv.find_cached_prefix(b)) == 2  # still there after a's end
    filler = seq(2, list(range(100, 108)))
    assert kv.allocate(filler, 8)  # takes every block: the cached ones are evicted
    assert kv.find_cached_prefix(b) == []
    kv.free_sequence(filler)
    assert_pool_whole(kv)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_requests_with_random_aborts_leave_the_pool_whole(data):
    block_size = data.draw(st.sampled_from([1, 2, 4, 16]))
    kv = KVCacheManager(
        num_blocks=data.draw(st.integers(4, 40)),
        block_size=block_size,
        enable_prefix_caching=data.draw(st.booleans()),
    )
    live: list[Sequence] = []
    vocab = data.draw(st.integers(2, 6))  # a small vocabulary makes shared prefixes common
    for i in range(data.draw(st.integers(1, 200))):
        action = data.draw(st.sampled_from(["new", "grow", "grow", "abort"]))
        if action == "new" or not live:
            s = seq(i, data.draw(st.lists(st.integers(0, vocab), min_size=1, max_size=40)))
            hits = kv.find_cached_prefix(s)
            if kv.allocate(s, s.num_tokens - len(hits) * block_size, hits):
                s.num_computed_tokens = s.num_tokens
                kv.cache_full_blocks(s)
                live.append(s)
        elif action == "grow":
            s = data.draw(st.sampled_from(live))
            s.output_token_ids.append(data.draw(st.integers(0, vocab)))
            if kv.allocate(s, 1):
                s.num_computed_tokens += 1
                kv.cache_full_blocks(s)
            else:
                s.output_token_ids.pop()
        else:
            s = live.pop(data.draw(st.integers(0, len(live) - 1)))
            kv.free_sequence(s)
        held = {b for s in live for b in s.block_table}
        assert kv.num_free_blocks == kv.num_blocks - len(held)
        for b in kv.blocks:
            assert b.ref_count == sum(s.block_table.count(b.block_id) for s in live)
    for s in live:
        kv.free_sequence(s)
    assert_pool_whole(kv)
