"""Tiny FP8 checkpoints written from the formats' specifications (vLLM's `fp8`, compressed-tensors'
float8 per tensor and per channel), each beside the same model with its FP8 weights dequantized."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer

from pagoda.engine.quantization.fp8 import FP8, FP8_MAX, quantize_per_channel

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FORMATS = {
    "fp8-static": {"quant_method": "fp8", "activation_scheme": "static"},
    "ct-tensor": "tensor",
    "ct-channel": "channel",
}


def compressed_tensors_config(strategy: str) -> dict:
    return {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": strategy,
                    "dynamic": False,
                    "symmetric": True,
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "float",
                    "strategy": "token",
                    "dynamic": True,
                    "symmetric": True,
                },
            }
        },
        "ignore": ["lm_head"],
    }


def quantize(w: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if per_channel:
        q, scale = quantize_per_channel(w)
        return q, scale[:, None]  # [N, 1], as compressed-tensors stores it
    scale = w.abs().max().float() / FP8_MAX
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale.reshape(())  # a scalar


def write_fp8_pair(root: Path, fmt: str) -> tuple[Path, Path]:
    """(the FP8 checkpoint, the same model with its FP8 weights dequantized, float32)."""
    base = write_tiny_tokenizer(write_tiny_checkpoint(root / "base"))
    tensors = load_file(str(base / "model.safetensors"))
    fp8, dequantized = dict(tensors), dict(tensors)
    per_channel = FORMATS[fmt] == "channel"
    for name, w in tensors.items():
        if name.endswith(".weight") and name.split(".")[-2] in LINEARS:
            # Each projection at its own magnitude: a scale loaded into another's rows shows.
            w = w * 2 ** ((LINEARS.index(name.split(".")[-2]) - 3) / 3)
            q, scale = quantize(w, per_channel)
            prefix = name.removesuffix(".weight")
            fp8[name], fp8[f"{prefix}.weight_scale"] = q, scale
            fp8[f"{prefix}.input_scale"] = torch.tensor(0.05)  # static: read, not used
            dequantized[name] = q.float() * (scale if per_channel else scale.item())
    config = json.loads((base / "config.json").read_text())
    spec = FORMATS[fmt]
    config["quantization_config"] = (
        spec if isinstance(spec, dict) else compressed_tensors_config(spec)
    )
    folders = []
    for name, weights, cfg in (("fp8", fp8, config), ("dequantized", dequantized, None)):
        folder = root / name
        folder.mkdir()
        save_file(weights, str(folder / "model.safetensors"))
        written = cfg or {k: v for k, v in config.items() if k != "quantization_config"}
        (folder / "config.json").write_text(json.dumps(written))
        for f in base.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")):
                (folder / f.name).write_bytes(f.read_bytes())
        folders.append(folder)
    return folders[0], folders[1]
