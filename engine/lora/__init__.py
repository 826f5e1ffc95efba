"""LoRA adapters: PEFT folders loaded and checked against the model (peft.py), stacked into a pool
of device slots (pool.py) that the wrapped linear layers read (layers.py) through per-token slot
indices (batch.py), by punica-style shrink/expand kernels (kernels.py) or their PyTorch reference
(ops.py). docs/lora.md tells the whole story."""

from pagoda.engine.lora.request import LoRARequest

__all__ = ["LoRARequest"]
