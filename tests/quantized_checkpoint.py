"""Tiny 8-bit checkpoints written from the formats' specifications (vLLM's `fp8`, compressed-tensors'
float8 and int8 per tensor and per channel), each beside the same model with its weights
dequantized."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer

from pagoda.engine.quantization.fp8 import FP8, FP8_MAX, quantize_per_channel

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# name: (vLLM's fp8 config, or compressed-tensors' weight type and strategy)
FORMATS: dict[str, dict | tuple[str, str]] = {
    "fp8-static": {"quant_method": "fp8", "activation_scheme": "static"},
    "ct-tensor": ("float", "tensor"),
    "ct-channel": ("float", "channel"),
    "ct-int8-tensor": ("int", "tensor"),
    "ct-int8-channel": ("int", "channel"),
}


def compressed_tensors_config(strategy: str, kind: str = "float") -> dict:
    return {
        "quant_method": "compressed-tensors",
        "format": "float-quantized" if kind == "float" else "int-quantized",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": kind,
                    "strategy": strategy,
                    "dynamic": False,
                    "symmetric": True,
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": kind,
                    "strategy": "token",
                    "dynamic": True,
                    "symmetric": True,
                },
            }
        },
        "ignore": ["lm_head"],
    }


def quantize(w: torch.Tensor, per_channel: bool, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(8-bit weight, scale [N, 1] per channel or a scalar per tensor), as the formats store them."""
    if kind == "float" and per_channel:
        q, scale = quantize_per_channel(w)
        return q, scale[:, None]
    top = FP8_MAX if kind == "float" else 127.0
    amax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().max()
    scale = amax.float() / top
    x = (w / scale).clamp(-top, top)
    q = x.to(FP8) if kind == "float" else x.round().to(torch.int8)
    return q, scale if per_channel else scale.reshape(())


def write_quantized_pair(root: Path, fmt: str) -> tuple[Path, Path]:
    """(the 8-bit checkpoint, the same model with its weights dequantized, float32)."""
    base = write_tiny_tokenizer(write_tiny_checkpoint(root / "base"))
    tensors = load_file(str(base / "model.safetensors"))
    quantized, dequantized = dict(tensors), dict(tensors)
    spec = FORMATS[fmt]
    kind, strategy = ("float", "tensor") if isinstance(spec, dict) else spec
    per_channel = strategy == "channel"
    for name, w in tensors.items():
        if name.endswith(".weight") and name.split(".")[-2] in LINEARS:
            # Each projection at its own magnitude: a scale loaded into another's rows shows.
            w = w * 2 ** ((LINEARS.index(name.split(".")[-2]) - 3) / 3)
            q, scale = quantize(w, per_channel, kind)
            prefix = name.removesuffix(".weight")
            quantized[name], quantized[f"{prefix}.weight_scale"] = q, scale
            quantized[f"{prefix}.input_scale"] = torch.tensor(0.05)  # static: read, not used
            dequantized[name] = q.float() * (scale if per_channel else scale.item())
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = (
        spec if isinstance(spec, dict) else compressed_tensors_config(strategy, kind)
    )
    folders = []
    for name, weights, cfg in (
        ("quantized", quantized, config),
        ("dequantized", dequantized, None),
    ):
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
