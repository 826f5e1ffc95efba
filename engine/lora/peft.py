"""PEFT LoRA adapter folders, read and checked against the model they are to run on.

A folder holds adapter_config.json (peft_type LORA, r, lora_alpha, target_modules, use_rslora,
base_model_name_or_path, ...) and adapter_model.safetensors (or the older adapter_model.bin) with
tensors named `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` ([r, in]) and
`...lora_B.weight` ([out, r]). A module's delta is `x A^T B^T * scale` with scale lora_alpha / r,
or lora_alpha / sqrt(r) under rsLoRA; the scale is folded into B here, once.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.models.config import ModelConfig

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"]
_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)"
    r"\.lora_([AB])(?:\.[\w-]+)?\.weight$"
)


class AdapterError(ValueError):
    """The adapter cannot run on this model (or with these limits); the message says why."""


@dataclass
class LoRAModuleWeights:
    a: torch.Tensor  # [r, in], float32
    b: torch.Tensor  # [out, r], float32, scale folded in


@dataclass
class LoRAAdapter:
    request: LoRARequest
    rank: int  # the largest module rank
    # (layer index, HF module name such as "q_proj") -> its weights
    modules: dict[tuple[int, str], LoRAModuleWeights]


def module_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(out, in) of every module an adapter may target in this model, by HF name. A MoE model's
    MLP is its experts: no LoRA there."""
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    h, i = cfg.hidden_size, cfg.intermediate_size
    shapes = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q)}
    if cfg.num_experts == 0:
        shapes |= {"gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}
    return shapes


def read_adapter_config(folder: Path) -> dict:
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise AdapterError(f"{folder}: no adapter_config.json (not a PEFT adapter folder)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}: not JSON: {e}") from e
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{path}: peft_type {config['peft_type']!r}, only LORA is supported")
    unsupported = {
        "use_dora": "DoRA",
        "alpha_pattern": "per-module alpha (alpha_pattern)",
        "modules_to_save": "modules_to_save (fully trained modules)",
        "fan_in_fan_out": "fan_in_fan_out",
    }
    for key, what in unsupported.items():
        if config.get(key):
            raise AdapterError(f"{path}: {what} is not supported")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{path}: bias {config['bias']!r} is not supported, only 'none'")
    return config


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "adapter_model.safetensors"))
    if (folder / "adapter_model.bin").is_file():
        return torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    raise AdapterError(f"{folder}: no adapter_model.safetensors (or adapter_model.bin)")


def _check_targets(config: dict, shapes: dict[str, tuple[int, int]], folder: Path) -> None:
    targets = config.get("target_modules")
    if isinstance(targets, list):
        lacking = sorted({t.rsplit(".", 1)[-1] for t in targets} - set(shapes))
        if lacking:
            raise AdapterError(
                f"{folder}: target modules the model lacks (or Pagoda cannot wrap): "
                f"{', '.join(lacking)}; LoRA runs on {', '.join(shapes)}"
            )


def adapter_folder(request: LoRARequest) -> Path:
    """The adapter's local folder: lora_path itself, or a Hub repo (`ORG/NAME[@REV]`,
    `hf://ORG/NAME[@REV]`) downloaded into the HF cache (once: later calls read the cache)."""
    folder = Path(request.lora_path).expanduser()
    if folder.is_dir():
        return folder
    from pagoda.engine.loader.hub import download, parse_hub_name

    hub_name = parse_hub_name(request.lora_path)
    if hub_name is None:
        raise AdapterError(f"LoRA adapter {request.lora_name!r}: no folder {folder}")
    repo, revision = hub_name
    return download(repo, revision, None, ADAPTER_FILES, what="LoRA adapter")


def load_adapter(request: LoRARequest, cfg: ModelConfig, max_rank: int) -> LoRAAdapter:
    """Read and check the folder: every tensor a LoRA A or B of a module the model has, of this
    model's sizes (a base model that differs fails here), of rank at most max_rank."""
    folder = adapter_folder(request)
    config = read_adapter_config(folder)
    shapes = module_shapes(cfg)
    _check_targets(config, shapes, folder)
    alpha = float(config.get("lora_alpha", 8))
    rslora = bool(config.get("use_rslora", False))
    base = config.get("base_model_name_or_path") or "another base model"
    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in _read_tensors(folder).items():
        m = _KEY.match(key)
        if m is None:
            raise AdapterError(f"{folder}: tensor {key!r} is no LoRA A/B of a linear layer")
        layer, module, half = int(m[1]), m[2], m[3]
        if module not in shapes:
            raise AdapterError(f"{folder}: {key}: the model has no {module} to adapt")
        if layer >= cfg.num_layers:
            raise AdapterError(
                f"{folder}: {key}: layer {layer}, the model has {cfg.num_layers} layers "
                f"(the adapter was trained for {base})"
            )
        halves.setdefault((layer, module), {})[half] = tensor.float()
    if not halves:
        raise AdapterError(f"{folder}: the adapter has no LoRA tensors")
    modules, rank = {}, 0
    for (layer, module), ab in sorted(halves.items()):
        name = f"layers.{layer}.{module}"
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{folder}: {name} has lora_{''.join(ab)} without its pair")
        a, b = ab["A"], ab["B"]
        r = a.shape[0]
        out, inp = shapes[module]
        if a.shape != (r, inp) or b.shape != (out, r):
            raise AdapterError(
                f"{folder}: {name}: A {tuple(a.shape)} and B {tuple(b.shape)} do not fit this "
                f"model's {module} ({out} x {inp}): the adapter was trained for {base}"
            )
        if r > max_rank:
            raise AdapterError(
                f"LoRA adapter {request.lora_name!r} has rank {r}, above --max-lora-rank {max_rank}"
            )
        scale = alpha / (math.sqrt(r) if rslora else r)
        modules[(layer, module)] = LoRAModuleWeights(a.contiguous(), (b * scale).contiguous())
        rank = max(rank, r)
    return LoRAAdapter(request, rank, modules)
