"""The KV cache manager: a fixed pool of blocks, block tables, reference counts, prefix caching,
forks with copy-on-write, and a CPU pool that preempted sequences swap out to.

Every block is in exactly one of two places: held (ref_count > 0, in some sequences' block tables)
or in the free queue. The free queue is ordered least-recently-used first; a free block that still
holds a cached prefix (it has a hash) stays findable until allocation takes it from the queue's head.

Data moves between blocks (a copy-on-write, a swap) are recorded as `BlockOp`s in the order they
were decided; the model runner performs them, in that order, before the next forward pass.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from pagoda.engine.core.sequence import Sequence

BlockOpKind = Literal["copy", "swap_out", "swap_in"]


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None


@dataclass(frozen=True)
class BlockOp:
    """Copy one block's K/V: "copy" GPU -> GPU, "swap_out" GPU -> CPU, "swap_in" CPU -> GPU."""

    kind: BlockOpKind
    src: int
    dst: int


def block_hash(parent: int | None, tokens: tuple[int, ...], salt: object) -> int:
    """A full block's identity: its tokens, chained over everything before it."""
    return hash((parent, tokens, salt))


class KVCacheManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        num_cpu_blocks: int = 0,
    ) -> None:
        if num_blocks < 1:
            raise ValueError(f"the KV cache needs at least one block, got {num_blocks}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # block hash -> block id
        self.num_cpu_blocks = num_cpu_blocks
        self.cpu_free = list(
            range(num_cpu_blocks - 1, -1, -1)
        )  # a stack: CPU blocks are not shared
        self.ops: list[BlockOp] = []  # decided since the last take_ops()

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
            parent = block_hash(
                parent,
                tuple(seq.token_ids(i * self.block_size, (i + 1) * self.block_size)),
                seq.prefix_salt,
            )
            block_id = self.cached.get(parent)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def _shared_write_block(self, seq: Sequence) -> int | None:
        """The index in seq's table of the block its next token goes into, if other sequences hold
        that block too (a fork's partly filled last block): it must be copied before the write."""
        i = seq.num_computed_tokens // self.block_size
        if i < len(seq.block_table) and self.blocks[seq.block_table[i]].ref_count > 1:
            return i
        return None

    def can_allocate(
        self, seq: Sequence, num_new_tokens: int, cached_blocks: list[int] | tuple[()] = ()
    ) -> bool:
        free_hits = sum(1 for b in cached_blocks if self.blocks[b].ref_count == 0)
        computed = seq.num_computed_tokens + len(cached_blocks) * self.block_size
        need = (
            self.blocks_needed(computed + num_new_tokens)
            - len(seq.block_table)
            - len(cached_blocks)
        )
        cow = self._shared_write_block(seq) is not None
        return max(need, 0) + cow + free_hits <= len(self.free)

    def allocate(
        self, seq: Sequence, num_new_tokens: int, cached_blocks: list[int] | tuple[()] = ()
    ) -> bool:
        """Give `seq` the blocks for its next `num_new_tokens` tokens; False (and no change) if they don't fit.

        `cached_blocks` (from find_cached_prefix, for a sequence with no blocks yet) are shared, and
        the sequence's computed-token count moves past them; `num_new_tokens` count after them.
        """
        assert not cached_blocks or not seq.block_table, (
            "prefix hits are taken only by a fresh sequence"
        )
        if (
            not cached_blocks
            and seq.num_computed_tokens + num_new_tokens <= len(seq.block_table) * self.block_size
            and self._shared_write_block(seq) is None
        ):
            return True  # most decode steps: the token fits in the sequence's own last block
        if not self.can_allocate(seq, num_new_tokens, cached_blocks):
            return False
        for block_id in cached_blocks:
            self._take(block_id)
            block_hash = self.blocks[block_id].hash
            assert block_hash is not None, "a prefix hit is a full, hashed block"
            seq.block_table.append(block_id)
            seq.block_hashes.append(block_hash)
        seq.num_computed_tokens += len(cached_blocks) * self.block_size
        shared = self._shared_write_block(seq)
        if shared is not None:  # copy-on-write: the writer gets its own copy of the block
            src = seq.block_table[shared]
            self.blocks[src].ref_count -= 1  # still held by the others
            seq.block_table[shared] = self._take_fresh()
            self.ops.append(BlockOp("copy", src, seq.block_table[shared]))
        need = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        for _ in range(need):
            seq.block_table.append(self._take_fresh())
        return True

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let `child` share every block of `parent` (an n > 1 or beam fork); writes copy on demand."""
        assert not child.block_table, "a fork's child starts with no blocks"
        for block_id in parent.block_table:
            self._take(block_id)
        child.block_table = list(parent.block_table)
        child.block_hashes = list(parent.block_hashes)
        child.num_computed_tokens = parent.num_computed_tokens

    def can_swap_out(self, seq: Sequence) -> bool:
        return len(seq.block_table) <= len(self.cpu_free)

    def swap_out(self, seq: Sequence) -> None:
        """Move the sequence's blocks to the CPU pool; it keeps its computed tokens and hashes."""
        assert self.can_swap_out(seq) and not seq.cpu_block_table
        for block_id in seq.block_table:
            cpu = self.cpu_free.pop()
            self.ops.append(BlockOp("swap_out", block_id, cpu))
            seq.cpu_block_table.append(cpu)
        self._release(seq.block_table)
        seq.block_table = []

    def can_swap_in(self, seq: Sequence, num_new_tokens: int) -> bool:
        need = max(
            len(seq.cpu_block_table), self.blocks_needed(seq.num_computed_tokens + num_new_tokens)
        )
        return need <= len(self.free)

    def swap_in(self, seq: Sequence, num_new_tokens: int) -> None:
        """Bring a swapped sequence's blocks back into fresh GPU blocks, with room for its next tokens."""
        assert self.can_swap_in(seq, num_new_tokens) and not seq.block_table
        for cpu in seq.cpu_block_table:
            seq.block_table.append(self._take_fresh())
            self.ops.append(BlockOp("swap_in", cpu, seq.block_table[-1]))
        self.cpu_free += reversed(seq.cpu_block_table)
        seq.cpu_block_table = []
        allocated = self.allocate(seq, num_new_tokens)
        assert allocated

    def take_ops(self) -> list[BlockOp]:
        """The block moves decided since the last call, in order, for the runner to perform."""
        ops, self.ops = self.ops, []
        return ops

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's newly completed blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            h = block_hash(parent, tuple(seq.token_ids(i * bs, (i + 1) * bs)), seq.prefix_salt)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.cached and block.hash is None:
                block.hash = h
                self.cached[h] = block.block_id

    def free_sequence(self, seq: Sequence) -> None:
        """Return the sequence's blocks (GPU and CPU) and forget what it had computed."""
        self._release(seq.block_table)
        self.cpu_free += reversed(seq.cpu_block_table)
        seq.block_table = []
        seq.cpu_block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def _release(self, block_table: list[int]) -> None:
        """Drop one reference to each block; the tail goes to the queue first so it is evicted first."""
        for block_id in reversed(block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"block {block_id} freed twice"
            if block.ref_count == 0:
                self.free[block_id] = None

    def reset_prefix_cache(self) -> None:
        for block_id in list(self.cached.values()):
            self.blocks[block_id].hash = None
        self.cached.clear()

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1

    def _take_fresh(self) -> int:
        """The least recently used free block, its cached prefix (if any) forgotten."""
        block_id = next(iter(self.free))
        self._take(block_id)
        block = self.blocks[block_id]
        if block.hash is not None:
            del self.cached[block.hash]
            block.hash = None
        return block_id
