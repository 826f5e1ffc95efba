"""The draft-model proposer (vLLM's method "draft_model"): a second, smaller model that shares the
target's vocabulary proposes k tokens greedily, with its own weights and its own paged KV cache.

Each target sequence has a shadow sequence in the draft's cache. Its verified tokens stay computed
across steps (the target's tokens never change once emitted); a proposal first computes what the
target emitted since the last one, then k - 1 single-token steps, all sequences batched. The
drafts' own K/V are then forgotten (the computed count goes back to the context's length): the next
proposal overwrites them. A sequence the draft's pool cannot hold proposes nothing that step.
"""

from __future__ import annotations

from dataclasses import replace

from pagoda.engine.config import EngineConfig
from pagoda.engine.core.kv_cache_manager import KVCacheManager
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.runner.model_runner import ModelRunner
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.spec_decode.config import SpeculativeConfig

GREEDY = SamplingParams(temperature=0.0, detokenize=False)


class DraftModelProposer:
    def __init__(
        self, config: EngineConfig, spec: SpeculativeConfig, target_vocab: int, num_blocks: int
    ) -> None:
        assert spec.model is not None, "method draft_model names its model"
        # The target's load format and dummy shape: a dummy draft of the target's shape, seeded
        # alike, is the target itself (the acceptance ceiling). Its KV pool has the target's
        # number of blocks: on a GPU lower --gpu-memory-utilization to leave the draft room.
        draft_config = replace(
            config,
            model=spec.model,
            speculative_config=None,
            enable_prefix_caching=False,
            preemption_mode="recompute",
            swap_space=0.0,
            num_gpu_blocks_override=num_blocks,
            quantization=None,
        )
        self.runner = ModelRunner(draft_config)
        vocab = self.runner.model_config.vocab_size
        if vocab != target_vocab:
            raise ValueError(
                f"speculative_config: the draft model {spec.model} has a vocabulary of {vocab} "
                f"tokens, the target {target_vocab}: the draft must share the target's tokenizer"
            )
        self.kv = KVCacheManager(self.runner.num_blocks, config.block_size, False)
        self.shadows: dict[str, Sequence] = {}

    def propose_batch(self, requests: list[tuple[Sequence, int]]) -> list[list[int]]:
        """Up to `room` greedy tokens for each (sequence, room)."""
        wanted = {seq.seq_id for seq, _ in requests}
        for seq_id in [s for s in self.shadows if s not in wanted]:  # finished, or not proposing
            self.kv.free_sequence(self.shadows.pop(seq_id))
        live: list[tuple[int, Sequence, int]] = []
        for i, (seq, room) in enumerate(requests):
            shadow = self.shadows.get(seq.seq_id) or Sequence(seq.seq_id, "draft", 0, [], GREEDY)
            shadow.prompt_token_ids = seq.token_ids()
            shadow.output_token_ids = []
            new = shadow.num_tokens - shadow.num_computed_tokens
            if not self.kv.allocate(shadow, new + room - 1):
                self.kv.free_sequence(shadow)
                self.shadows.pop(seq.seq_id, None)
                continue
            self.shadows[seq.seq_id] = shadow
            live.append((i, shadow, room))
        for step in range(max((room for _, _, room in live), default=0)):
            batch = [
                (shadow, shadow.num_tokens - shadow.num_computed_tokens)
                for _, shadow, room in live
                if step < room
            ]
            sampled_seqs, sampled = self.runner.execute(batch, self.kv.take_ops())
            assert sampled is not None, "every shadow samples"
            for shadow, token in zip(sampled_seqs, sampled.result().token_ids):
                shadow.output_token_ids.append(token)
            for shadow, n in batch:
                shadow.num_computed_tokens += n
        drafts: list[list[int]] = [[] for _ in requests]
        for i, shadow, _ in live:
            drafts[i] = shadow.output_token_ids
            shadow.num_computed_tokens = len(shadow.prompt_token_ids)
        return drafts
