"""--kv-cache-dtype fp8 on the CPU: the cache holds each token's K/V in e4m3 (scale 1.0,
saturated), attention over it stays within e4m3's rounding of the full-precision cache, the same
memory holds four times the float32 blocks, and prefix-cache hits and swapping give the tokens the
FP8 cache gives without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_harness import PreemptionCounter, run_to_completion
from tiny_checkpoint import write_tiny_checkpoint

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.torch_ref import TorchAttentionBackend
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

FP8 = torch.float8_e4m3fn
BLOCK = 4


def batch(gen: torch.Generator) -> tuple:
    """Two sequences: a 7-token prefill, and a 3-token chunk after 9 cached tokens (their K/V
    written by an earlier call); 8 blocks of 4 slots, 2 KV heads of dim 8, 4 query heads."""
    meta = AttentionMetadata(
        slot_mapping=torch.tensor([0, 1, 2, 3, 4, 5, 6, 21, 22, 23, -1]),
        query_start_loc=torch.tensor([0, 7, 10], dtype=torch.int32),
        seq_lens=torch.tensor([7, 12], dtype=torch.int32),
        block_tables=torch.tensor([[0, 1, 0], [3, 4, 5]], dtype=torch.int32),
        max_query_len=7,
        max_seq_len=12,
        block_size=BLOCK,
        query_start_loc_cpu=[0, 7, 10],
        seq_lens_cpu=[7, 12],
    )
    q = torch.randn(11, 4, 8, generator=gen)
    k, v = torch.randn(11, 2, 8, generator=gen) * 3, torch.randn(11, 2, 8, generator=gen)
    k[0, 0, 0] = 1000.0  # past e4m3's 448: saturated, never NaN
    return q, k, v, meta


def test_attention_over_an_fp8_cache_stays_within_e4m3_rounding() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v, meta = batch(gen)
    context = torch.randn(2, 9, 2, 8, generator=gen)  # the second sequence's cached tokens
    outs = {}
    for dtype in (torch.float32, FP8):
        k_cache, v_cache = (
            torch.zeros(8, BLOCK, 2, 8, dtype=dtype),
            torch.zeros(8, BLOCK, 2, 8, dtype=dtype),
        )
        for cache, values in ((k_cache, context[0]), (v_cache, context[1])):
            cache.view(-1, 2, 8)[12:21] = values.to(dtype)
        outs[dtype] = TorchAttentionBackend().forward(q, k, v, k_cache, v_cache, meta, 8**-0.5)
        if dtype == FP8:
            written = k_cache.view(-1, 2, 8)[[0, 1, 2, 3, 4, 5, 6, 21, 22, 23]]
            assert torch.equal(written.float(), k[:10].clamp(-448, 448).to(FP8).float())
            assert written[0, 0, 0].item() == 448.0
            assert torch.all(k_cache.view(-1, 2, 8)[7:12].float() == 0)  # padding wrote nothing
    ref, got = outs[torch.float32][:10], outs[FP8][:10]
    assert not got.isnan().any()
    assert ((got - ref).norm() / ref.norm()).item() < 0.1  # e4m3: 3 mantissa bits


def engine(folder: Path, **kw) -> LLMEngine:
    config = EngineConfig(
        model=str(folder),
        dtype="float32",
        kv_cache_dtype="fp8",
        max_model_len=128,
        max_num_seqs=4,
        max_num_batched_tokens=32,
        **kw,
    )
    return LLMEngine(config, tokenizer=object(), log_stats=False)


def greedy(eng: LLMEngine, prompts: list[list[int]]) -> tuple[dict[str, list[int]], int]:
    """Each request's tokens, and how many prompt tokens came from the prefix cache."""
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, detokenize=False)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, params)
    outs = [o for o in run_to_completion(eng) if o.finished]
    tokens = {o.request_id: list(o.outputs[0].token_ids) for o in outs}
    return tokens, sum(o.num_cached_tokens for o in outs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def test_the_same_memory_holds_four_times_the_float32_blocks(tiny: Path) -> None:
    size = 1 << 20
    fp8 = engine(tiny, kv_cache_memory_bytes=size)
    full = LLMEngine(
        EngineConfig(
            model=str(tiny), dtype="float32", max_model_len=128, kv_cache_memory_bytes=size
        ),
        tokenizer=object(),
        log_stats=False,
    )
    assert fp8.runner.num_blocks == 4 * full.runner.num_blocks
    assert fp8.runner.kv_caches[0][0].dtype == FP8


def test_prefix_hits_and_swapping_on_an_fp8_cache_change_no_token(tiny: Path) -> None:
    shared = [7, 3, 99, 42, 5, 18, 250, 11] * 4
    prompts = [shared + [i, i + 1] for i in range(4)]
    alone = {}
    for i, p in enumerate(prompts):  # one at a time, plenty of blocks, no cache hits
        eng = engine(tiny, num_gpu_blocks_override=64, enable_prefix_caching=False)
        alone[str(i)] = greedy(eng, [p])[0]["0"]
    tight = engine(
        tiny, num_gpu_blocks_override=8, preemption_mode="swap", swap_space=0.01
    )  # 4 x 58 tokens need 10 blocks of 16 (2 shared): swaps; the shared 32 tokens hit the cache
    swaps = PreemptionCounter(tight)
    tokens, cached = greedy(tight, prompts)
    assert tokens == alone
    assert swaps.count > 0 and cached > 0
