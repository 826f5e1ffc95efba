"""The KV cache manager: a fixed pool of blocks, block tables, reference counts, prefix caching.

Every block is in exactly one of two places: held (ref_count > 0, in some sequences' block tables)
or in the free queue. The free queue is ordered least-recently-used first; a free block that still
holds a cached prefix (it has a hash) stays findable until allocation takes it from the queue's head.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from pagoda.engine.core.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None


def block_hash(parent: int | None, tokens: tuple[int, ...], salt: str | None) -> int:
    """A full block's identity: its tokens, chained over everything before it."""
    return hash((parent, tokens, salt))


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError(f"the KV cache needs at least one block, got {num_blocks}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def usage(self) -> float:
        return 1.0 - len(self.free) / len(self.blocks)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def find_cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids that already hold this sequence's leading full blocks.

        The last token is always left to compute: the step that computes it yields the logits.
        """
        if not self.enable_prefix_caching:
            return []
        hits, parent = [], None
        for i in range((seq.num_tokens - 1) // self.block_size):
            parent = block_hash(parent, tuple(seq.token_ids(i * self.block_size, (i + 1) * self.block_size)),
                                seq.cache_salt)
            block_id = self.cached.get(parent)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def can_allocate(self, seq: Sequence, num_new_tokens: int, cached_blocks: list[int] = ()) -> bool:
        free_hits = sum(1 for b in cached_blocks if self.blocks[b].ref_count == 0)
        computed = seq.num_computed_tokens + len(cached_blocks) * self.block_size
        need = self.blocks_needed(computed + num_new_tokens) - len(seq.block_table) - len(cached_blocks)
        return need + free_hits <= len(self.free)

    def allocate(self, seq: Sequence, num_new_tokens: int, cached_blocks: list[int] = ()) -> bool:
        """Give `seq` the blocks for its next `num_new_tokens` tokens; False (and no change) if they don't fit.

        `cached_blocks` (from find_cached_prefix, for a sequence with no blocks yet) are shared, and
        the sequence's computed-token count moves past them; `num_new_tokens` count after them.
        """
        assert not cached_blocks or not seq.block_table, "prefix hits are taken only by a fresh sequence"
        if not self.can_allocate(seq, num_new_tokens, cached_blocks):
            return False
        for block_id in cached_blocks:
            self._take(block_id)
            seq.block_table.append(block_id)
            seq.block_hashes.append(self.blocks[block_id].hash)
        seq.num_computed_tokens += len(cached_blocks) * self.block_size
        need = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        for _ in range(need):
            block_id = next(iter(self.free))
            self._take(block_id)
            self._uncache(block_id)
            seq.block_table.append(block_id)
        return True

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's newly completed blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            h = block_hash(parent, tuple(seq.token_ids(i * bs, (i + 1) * bs)), seq.cache_salt)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.cached and block.hash is None:
                block.hash = h
                self.cached[h] = block.block_id

    def free_sequence(self, seq: Sequence) -> None:
        """Return the sequence's blocks; its tail goes to the queue first so it is evicted first."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"block {block_id} freed twice"
            if block.ref_count == 0:
                self.free[block_id] = None
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> None:
        for block_id in list(self.cached.values()):
            self.blocks[block_id].hash = None
        self.cached.clear()

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1

    def _uncache(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.hash is not None:
            del self.cached[block.hash]
            block.hash = None
