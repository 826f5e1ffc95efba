"""The sampler on a GPU: no host sync but the one copy of the results, seeds as on the CPU (GPU tier)."""

import warnings

import pytest
import torch

from pagoda.engine.sample.sampler import Sampler, SamplingRow, make_generator
from pagoda.engine.sampling_params import SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA is not available here)"
    ),
]

V = 49152


def mixed_rows(n: int, seed_base: int = 0) -> list[SamplingRow]:
    kinds = [
        dict(temperature=0.0),
        dict(temperature=0.8, top_p=0.9, top_k=40, min_p=0.05),
        dict(
            temperature=1.0,
            repetition_penalty=1.2,
            presence_penalty=0.5,
            frequency_penalty=0.3,
            logit_bias={5: 2.0},
            min_tokens=4,
            stop_token_ids=[9],
            logprobs=5,
        ),
        dict(temperature=0.7, top_k=20, seed=1),
    ]
    rows = []
    for i in range(n):
        params = dict(kinds[i % len(kinds)])
        generator = make_generator(seed_base + i, "cuda") if "seed" in params else None
        rows.append(
            SamplingRow(SamplingParams(**params), list(range(50)), list(range(i % 7)), generator)
        )
    return rows


def test_start_never_waits_for_the_device():
    """Sampling launches everything and starts the host copy without a synchronization; the one
    wait is the copy's CUDA event in result() (an event wait, which sync-debug mode does not see)."""
    sampler = Sampler(V, [2])
    logits = torch.randn(64, V, device="cuda")
    rows = mixed_rows(64)
    sampler(logits, rows)  # warm up (pinned host blocks, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batch = sampler.start(logits, rows)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert syncs == []
    assert batch.ready is not None
    out = batch.result()
    assert len(out.token_ids) == 64 and all(0 <= t < V for t in out.token_ids)


def test_seeded_row_alone_or_batched_on_gpu():
    sampler = Sampler(V, [2])
    params = SamplingParams(temperature=0.9, top_p=0.95, top_k=100, seed=7)
    gen_alone, gen_batched = make_generator(7, "cuda"), make_generator(7, "cuda")
    alone, batched = [], []
    for step in range(8):
        logits = torch.randn(
            33, V, device="cuda", generator=torch.Generator("cuda").manual_seed(step)
        )
        alone.append(
            sampler(logits[5:6].clone(), [SamplingRow(params, [1], alone, gen_alone)]).token_ids[0]
        )
        rows = mixed_rows(33, seed_base=100 + step)
        rows[5] = SamplingRow(params, [1], batched, gen_batched)
        batched.append(sampler(logits, rows).token_ids[5])
    assert alone == batched


def test_gpu_matches_cpu_where_deterministic():
    sampler_cpu, sampler_gpu = Sampler(V, [2]), Sampler(V, [2])
    logits = torch.randn(16, V)
    rows = [
        SamplingRow(
            SamplingParams(temperature=0.0, repetition_penalty=1.3, logprobs=3), [1, 2], [3], None
        )
        for _ in range(16)
    ]
    cpu, gpu = sampler_cpu(logits, rows), sampler_gpu(logits.cuda(), rows)
    assert cpu.token_ids == gpu.token_ids
    assert cpu.logprobs == pytest.approx(gpu.logprobs, abs=1e-4)
