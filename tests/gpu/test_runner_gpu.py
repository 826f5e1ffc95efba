"""The GPU model runner: Triton backend, fused layers and CUDA graphs against the PyTorch path.

Same dummy weights (same seed) on the same card; the whole forward pass over a mixed batch
(fresh prefill, chunked prefill, decodes) must agree with the reference path within bf16 error,
and a decode step, or a step with prefill tokens, replayed from a CUDA graph must agree with the
same step run eagerly.
"""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA is not available here)"
    ),
]

from pagoda.engine.config import EngineConfig  # noqa: E402
from pagoda.engine.core.sequence import Sequence  # noqa: E402
from pagoda.engine.sampling_params import SamplingParams  # noqa: E402


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def runner(backend: str, eager: bool):
    from pagoda.engine.runner.model_runner import ModelRunner

    return ModelRunner(
        EngineConfig(
            load_format="dummy",
            dummy_shape="llama-3.2-1b",
            dtype="bfloat16",
            attention_backend=backend,
            enforce_eager=eager,
            max_model_len=2048,
            max_num_seqs=64,
            num_gpu_blocks_override=16384,
            cuda_graph_sizes=[1, 8, 64],
        )
    )


@pytest.fixture(scope="module")
def runners():
    return runner("triton", eager=False), runner("torch", eager=True)


def seqs_with_blocks(r, lens, computed, rng):
    """Sequences whose block tables are scattered over the pool, `computed` tokens already cached."""
    free = list(range(r.num_blocks))
    rng.shuffle(free)
    out = []
    for i, (n, c) in enumerate(zip(lens, computed)):
        s = Sequence(
            f"s{i}", f"r{i}", 0, [rng.randrange(32000) for _ in range(n)], SamplingParams()
        )
        s.block_table = [free.pop() for _ in range(-(-n // r.block_size))]
        s.num_computed_tokens = c
        out.append(s)
    return out


def fill_caches(fast, ref, rng):
    g = torch.Generator(device="cuda").manual_seed(rng.randrange(2**31))
    for (k1, v1), (k2, v2) in zip(fast.kv_caches, ref.kv_caches):
        for a, b in ((k1, k2), (v1, v2)):
            a.normal_(0, 1, generator=g)
            b.copy_(a)


def run_both(runners, forward):
    """The same mixed batch through both runners over equal caches: fresh prefill, chunked prefill
    over cached context, a one-token chunk and decodes. Returns both outputs and per-sequence errors."""
    fast, ref = runners
    rng = random.Random()
    fill_caches(fast, ref, rng)
    lens, computed = [300, 700, 513, 90, 2000], [0, 400, 512, 89, 1999]
    batch = [
        (s, s.num_tokens - s.num_computed_tokens)
        for s in seqs_with_blocks(fast, lens, computed, rng)
    ]
    outs = []
    for r in (fast, ref):
        ids, pos, meta, _ = r.prepare(batch)
        with torch.inference_mode():
            outs.append(forward(r, ids, pos, meta))
    qsl = meta.query_start_loc_cpu
    return outs, [rel_err(outs[0][a:b], outs[1][a:b]) for a, b in zip(qsl, qsl[1:])]


def first_layer_attention(r, ids, pos, meta):
    layer = r.model.model.layers[0]
    return layer.self_attn(
        pos, layer.input_layernorm(r.model.model.embed_tokens(ids)), r.kv_caches[0], meta
    )


def test_attention_backends_agree_layer_by_layer(runners):
    """The first layer alone: only the attention backend differs between the two paths."""
    outs, per_seq = run_both(runners, first_layer_attention)
    assert rel_err(outs[0], outs[1]) < 1e-2, per_seq


def test_mixed_batch_forward_matches_the_torch_path(runners):
    outs, per_seq = run_both(
        runners, lambda r, ids, pos, meta: r.model(ids, pos, r.kv_caches, meta)
    )
    assert not outs[0].isnan().any()
    # Sixteen bf16 layers compound the per-layer difference bounded above (1e-2) to a few percent,
    # spread evenly over the sequences; a wrong kernel path would show in one sequence, far larger.
    assert rel_err(outs[0], outs[1]) < 5e-2, per_seq
    assert max(per_seq) < 2 * min(per_seq) + 1e-2, per_seq


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_decode_graph_replay_matches_eager(runners, batch_size):
    fast, _ = runners
    rng = random.Random()
    lens = [rng.randint(2, 2000) for _ in range(batch_size)]
    batch = [(s, 1) for s in seqs_with_blocks(fast, lens, [n - 1 for n in lens], rng)]
    ids, pos, meta, _ = fast.prepare(batch)
    snapshot = [(k.clone(), v.clone()) for k, v in fast.kv_caches]
    with torch.inference_mode():
        graphed = fast.graphs.run(ids, pos, meta).clone()
        for (k, v), (k0, v0) in zip(fast.kv_caches, snapshot):
            k.copy_(k0)
            v.copy_(v0)
        eager = fast.model(ids, pos, fast.kv_caches, meta)
    assert not graphed.isnan().any()
    assert rel_err(graphed, eager) < 1e-2


@pytest.mark.parametrize("num_decodes", [0, 3, 40])
def test_token_graph_replay_matches_eager(runners, num_decodes):
    """A step with prefill tokens (a whole prompt, chunks on cached context, decodes beside them)
    replays the graph of the next token count up; its rows and KV writes equal the eager step's."""
    fast, _ = runners
    assert fast.token_graphs is not None
    rng = random.Random()
    prefills = [(n, rng.choice([0, rng.randint(1, n - 2)])) for n in rng.sample(range(3, 600), 3)]
    decodes = [(n, n - 1) for n in (rng.randint(2, 2000) for _ in range(num_decodes))]
    lens, computed = zip(*(prefills + decodes))
    seqs = seqs_with_blocks(fast, lens, computed, rng)
    batch = [(s, n - c) for s, n, c in zip(seqs, lens, computed)]
    ids, pos, meta, _ = fast.prepare(batch)
    assert fast.token_graphs.fits(meta) and not fast.graphs.fits(meta)
    snapshot = [(k.clone(), v.clone()) for k, v in fast.kv_caches]
    with torch.inference_mode():
        graphed = fast.token_graphs.run(ids, pos, meta).clone()
        graphed_cache = [(k.clone(), v.clone()) for k, v in fast.kv_caches]
        for (k, v), (k0, v0) in zip(fast.kv_caches, snapshot):
            k.copy_(k0)
            v.copy_(v0)
        eager = fast.model(ids, pos, fast.kv_caches, meta)
    assert graphed.shape == eager.shape and not graphed.isnan().any()
    assert rel_err(graphed, eager) < 1e-2
    written = meta.slot_mapping
    kept = torch.ones(fast.num_blocks * fast.block_size, dtype=torch.bool, device=written.device)
    kept[written] = False  # the padding wrote nowhere: every other slot is as it was
    for (k, v), (k1, v1), (k0, v0) in zip(fast.kv_caches, graphed_cache, snapshot):
        for eager_c, graph_c, old in ((k, k1, k0), (v, v1, v0)):
            flat = (c.flatten(0, 1) for c in (eager_c, graph_c, old))
            e, g, o = flat
            assert rel_err(g[written], e[written]) < 1e-2
            assert torch.equal(g[kept], o[kept])


def test_async_scheduling_gives_the_same_tokens_on_the_gpu():
    """Step N+1 launched before step N's tokens are on the host (its inputs read on the device,
    under CUDA graphs): token for token what the synchronous loop gives."""
    from engine_harness import generate_all

    assert generate_all("llama-3.2-1b", True, "cuda") == generate_all("llama-3.2-1b", False, "cuda")
