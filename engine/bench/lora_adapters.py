"""Random LoRA adapters in PEFT's format for a model shape, for benchmarks (and the server tests):
`python -m pagoda.engine.bench.lora_adapters --shape llama-3.1-8b --rank 16 --count 8 DIR` writes
DIR/lora0 ... DIR/lora7, each on every attention and MLP projection."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pagoda.engine.lora.peft import ATTENTION_MODULES, module_shapes
from pagoda.engine.models.config import ModelConfig


def write_random_adapter(
    folder: Path, cfg: ModelConfig, rank: int, seed: int, scale: float = 0.3
) -> Path:
    """adapter_config.json + adapter_model.safetensors; A scaled to keep x A^T near x's size."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg.num_layers):
        for module, (out, inp) in module_shapes(cfg).items():
            part = "self_attn" if module in ATTENTION_MODULES else "mlp"
            key = f"base_model.model.model.layers.{layer}.{part}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, inp, generator=gen) * inp**-0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(out, rank, generator=gen) * scale
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": rank,
        "target_modules": list(module_shapes(cfg)),
        "bias": "none",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shape", required=True, help="a --dummy-shape name, e.g. llama-3.1-8b")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    cfg = ModelConfig.from_shape(args.shape)
    for i in range(args.count):
        print(write_random_adapter(args.out / f"lora{i}", cfg, args.rank, seed=i))


if __name__ == "__main__":
    main()
