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

PROMPT = [5, 17, 42, 99, 3, 8, 8, 120, 44, 7, 61, 250, 9, 13, 77, 31]

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


# 4-bit checkpoints: name -> quantization_config (AutoAWQ's GEMM; AutoGPTQ's and GPTQModel's).
GPTQ = {"quant_method": "gptq", "bits": 4, "damp_percent": 0.01, "true_sequential": True}
W4_FORMATS: dict[str, dict] = {
    "awq": {
        "quant_method": "awq",
        "bits": 4,
        "group_size": 32,
        "zero_point": True,
        "version": "gemm",
    },
    "gptq-sym": {
        **GPTQ,
        "group_size": 32,
        "desc_act": False,
        "sym": True,
        "checkpoint_format": "gptq",
    },
    "gptq-act-order": {**GPTQ, "group_size": 32, "desc_act": True, "sym": False},
    "gptq-v2-channel": {
        **GPTQ,
        "group_size": -1,
        "desc_act": False,
        "sym": False,
        "checkpoint_format": "gptq_v2",
    },
}
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of a word holds column AWQ_PACK_ORDER[i]
# The projections that read the same input (act-order gives them one g_idx).
SAME_INPUT = {
    "q_proj": "attn",
    "k_proj": "attn",
    "v_proj": "attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
}


def as_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 words of 32 bits -> the int32 tensor with those bits, as the formats store them."""
    words = words & 0xFFFFFFFF
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_along_columns(q: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """[R, C] values 0..15 -> int32 [R, C/8]: word w's nibble i holds column 8w + order[i]."""
    out = torch.zeros(q.shape[0], q.shape[1] // 8, dtype=torch.int64)
    for w in range(out.shape[1]):
        for i, col in enumerate(order):
            out[:, w] |= q[:, 8 * w + col].long() << (4 * i)
    return as_int32(out)


def pack_along_rows(q: torch.Tensor) -> torch.Tensor:
    """GPTQ's qweight: [K, N] values 0..15 -> int32 [K/8, N], row 8i + j in nibble j of row i."""
    out = torch.zeros(q.shape[0] // 8, q.shape[1], dtype=torch.int64)
    for j in range(8):
        out |= q[j::8].long() << (4 * j)
    return as_int32(out)


def quantize_w4(
    k: int, n: int, qc: dict, g_idx: torch.Tensor | None, gen: torch.Generator
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Random 4-bit values, zeros and fp16 scales for a layer [N, K] in the format of qc: (its
    checkpoint tensors, the weight [N, K] they stand for in float32)."""
    group = k if qc["group_size"] == -1 else qc["group_size"]
    groups = k // group
    q = torch.randint(0, 16, (k, n), generator=gen)
    scales = ((0.5 + torch.rand(groups, n, generator=gen)) * 0.15 / 4.6).half()
    if qc.get("sym"):
        zeros = torch.full((groups, n), 8)
    else:  # 1..15: v1's stored zero - 1 stays in 0..14
        zeros = torch.randint(1, 16, (groups, n), generator=gen)
    group_of = g_idx.long() if g_idx is not None else torch.arange(k) // group
    weight = ((q - zeros[group_of]).float() * scales[group_of].float()).T.contiguous()
    if qc["quant_method"] == "awq":
        tensors = {
            "qweight": pack_along_columns(q, AWQ_PACK_ORDER),
            "qzeros": pack_along_columns(zeros, AWQ_PACK_ORDER),
            "scales": scales,
        }
    else:
        stored = zeros - 1 if qc.get("checkpoint_format", "gptq") == "gptq" else zeros
        tensors = {
            "qweight": pack_along_rows(q),
            "qzeros": pack_along_columns(stored, tuple(range(8))),
            "scales": scales,
            "g_idx": (group_of if g_idx is None else g_idx).to(torch.int32),
        }
    return tensors, weight


def write_w4_pair(root: Path, fmt: str, **overrides) -> tuple[Path, Path]:
    """(the 4-bit checkpoint of format fmt, the same model with its weights dequantized in
    float32); overrides go to the tiny config (its sizes must be multiples of the group)."""
    base = write_tiny_tokenizer(write_tiny_checkpoint(root / "base", **overrides))
    tensors = load_file(str(base / "model.safetensors"))
    qc = W4_FORMATS[fmt]
    gen = torch.Generator().manual_seed(7)
    quantized, dequantized = dict(tensors), dict(tensors)
    perms: dict[str, torch.Tensor] = {}
    for name, w in tensors.items():
        if not (name.endswith(".weight") and name.split(".")[-2] in LINEARS):
            continue
        n, k = w.shape
        prefix, proj = name.removesuffix(".weight"), name.split(".")[-2]
        g_idx = None
        if qc.get("desc_act"):  # a random permutation of the groups over the inputs
            key = f"{prefix.rsplit('.', 1)[0]}.{SAME_INPUT.get(proj, proj)}"
            if key not in perms:
                perms[key] = torch.randperm(k, generator=gen) // qc["group_size"]
            g_idx = perms[key]
        parts, dequantized[name] = quantize_w4(k, n, qc, g_idx, gen)
        del quantized[name]
        quantized.update({f"{prefix}.{part}": t for part, t in parts.items()})
    config = json.loads((base / "config.json").read_text())
    folders = []
    for name, weights, qconfig in (
        ("quantized", quantized, qc),
        ("dequantized", dequantized, None),
    ):
        folder = root / name
        folder.mkdir()
        save_file(weights, str(folder / "model.safetensors"))
        written = {**config, "quantization_config": qconfig} if qconfig else config
        (folder / "config.json").write_text(json.dumps(written))
        for f in base.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")):
                (folder / f.name).write_bytes(f.read_bytes())
        folders.append(folder)
    return folders[0], folders[1]


def prompt_logprobs(folder: Path, **engine_args: object) -> torch.Tensor:
    """The log-probability of each of PROMPT's tokens after the first, from the model in
    `folder` on the CPU in float32 (a tiny checkpoint written with its tokenizer)."""
    from pagoda.engine.llm import LLM
    from pagoda.engine.sampling_params import SamplingParams

    llm = LLM(
        str(folder),
        dtype="float32",
        device="cpu",
        num_gpu_blocks_override=16,
        max_model_len=64,
        **engine_args,
    )
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    got = llm.generate({"prompt_token_ids": PROMPT}, params)[0].prompt_logprobs
    assert got is not None
    return torch.tensor([got[i][PROMPT[i]] for i in range(1, len(PROMPT))])
