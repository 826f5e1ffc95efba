"""The slot pool: adapters reuse their slot, take a free one, or evict the least recently used
adapter the step does not use; the CPU cache keeps --max-cpu-loras read adapters, LRU; a slot
taken over holds only its new adapter's weights; too many adapters in one step is refused."""

from __future__ import annotations

import pytest
import torch
from peft_adapters import write_adapter
from tiny_hf import hf_model

import pagoda.engine.lora.pool as pool_module
from pagoda.engine import LoRARequest
from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import load_model
from pagoda.engine.lora.pool import LoRAPool


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    hf = hf_model("LlamaForCausalLM")
    hf.save_pretrained(root / "base")
    loras = [
        LoRARequest(f"a{i}", i + 1, str(write_adapter(hf, root / f"a{i}", 8, seed=i)))
        for i in range(3)
    ]
    attention_only = root / "attn"
    write_adapter(hf, attention_only, 4, seed=9, targets=["q_proj"])
    loras.append(LoRARequest("attn", 4, str(attention_only)))
    return root / "base", loras


@pytest.fixture
def pool(setup, monkeypatch):
    base, _ = setup
    model, cfg = load_model(EngineConfig(model=str(base)), torch.device("cpu"), torch.float32)
    reads = []
    real = pool_module.load_adapter
    monkeypatch.setattr(
        pool_module, "load_adapter", lambda r, c, m: reads.append(r.lora_int_id) or real(r, c, m)
    )
    p = LoRAPool(model, cfg, 2, 8, 3, 64, torch.device("cpu"), torch.float32)
    p.reads = reads  # type: ignore[attr-defined]
    return p


def test_slots_lru_and_cpu_cache(setup, pool) -> None:
    _, (a1, a2, a3, a4) = setup
    assert pool.slots_for([a1, None, a2, a1]) == [0, -1, 1, 0]
    assert pool.slots_for([a3]) == [0]  # a1 least recently used: evicted
    assert pool.slots_for([a2, a1]) == [1, 0]  # a3 is the one not in this step
    assert pool.reads == [1, 2, 3]  # a1 came back from the CPU cache
    pool.slots_for([a4])  # a4 read: the CPU cache (3) drops its least recently used, a3
    assert list(pool.cpu) == [2, 1, 4]
    pool.slots_for([a3])
    assert pool.reads == [1, 2, 3, 4, 3]
    with pytest.raises(RuntimeError, match="3 adapters, above --max-loras 2"):
        pool.slots_for([a1, a2, a3])
    assert pool.remove(a3.lora_int_id) and not pool.remove(a3.lora_int_id)
    assert None in pool.slot_ids


def test_a_slot_taken_over_holds_only_the_new_adapter(setup, pool) -> None:
    _, (a1, _, _, attn) = setup
    layer = pool.targets[(0, "down_proj")].lora
    qkv = pool.targets[(0, "q_proj")].lora
    v_rows = slice(-qkv.slice_sizes[2], None)
    assert pool.slots_for([a1]) == [0]
    assert layer.a[0].abs().sum() > 0 and qkv.b[0, v_rows].abs().sum() > 0
    pool.remove(a1.lora_int_id)
    assert pool.slots_for([attn]) == [0]
    assert layer.a[0].abs().sum() == 0 and layer.b[0].abs().sum() == 0
    assert qkv.b[0, v_rows].abs().sum() == 0  # v_proj: not in this adapter
    assert qkv.a[0, :4].abs().sum() > 0 and qkv.a[0, 4:8].abs().sum() == 0  # rank 4 of 8
