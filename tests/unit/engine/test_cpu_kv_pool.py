"""The CPU KV pool is zeros that cost no memory until blocks are written (calloc), and stays
correct when its untouched memory is garbage-free by construction."""

from __future__ import annotations

import json

import torch

from pagoda.engine.config import EngineConfig
from pagoda.engine.runner.model_runner import ModelRunner


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_a_large_cpu_pool_is_zero_and_not_resident(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            dict(
                vocab_size=1000,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=1024,
                eos_token_id=2,
            )
        )
    )
    before = resident_mib()
    runner = ModelRunner(
        EngineConfig(
            load_format="dummy", model=str(tmp_path), device="cpu", kv_cache_memory_bytes=1 << 30
        )
    )
    grown = resident_mib() - before
    k, v = runner.kv_caches[0]
    assert runner.num_blocks * runner.bytes_per_block > 1000 * 2**20  # a 1 GiB pool ...
    assert grown < 200, (
        f"the pool made {grown:.0f} MiB resident"
    )  # ... of which nothing is resident
    assert k.dtype == torch.float32 and k.shape == (runner.num_blocks, 16, 2, 16)
    assert not k[-1].any() and not v[runner.num_blocks // 2].any()  # zeros, wherever read
    k[3].fill_(1.5)  # an ordinary, writable tensor
    assert k[3].sum() == 1.5 * k[3].numel()
