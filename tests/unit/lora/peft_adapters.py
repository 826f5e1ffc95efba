"""Random PEFT LoRA adapters of tiny HF models, written by peft itself, and the HF reference with
an adapter merged into the weights."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_adapter(
    hf, folder: Path, rank: int, seed: int, targets: list[str] = ALL_TARGETS, **config
) -> Path:
    """A LoRA adapter of `hf` with random A and B (peft's default B is zero: a no-op)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=rank, lora_alpha=config.pop("lora_alpha", 2 * rank), target_modules=targets, **config
    )
    model = get_peft_model(copy.deepcopy(hf), lora)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(
                    torch.randn(p.shape, generator=gen)
                    * (0.3 / p.shape[-1] ** 0.5 if "lora_A" in name else 0.3)
                )
    model.save_pretrained(folder)
    return folder


def merged(hf, folder: Path):
    """`hf` with the adapter at `folder` merged into its weights."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(hf), str(folder)).merge_and_unload().eval()
