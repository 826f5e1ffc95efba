"""Load time of an 8B-shaped bf16 checkpoint against `cat` of the same files, same call.

    python3 tests/gpu/load_time.py [--dir /tmp/ckpt-8b] [--shape llama-3.1-8b] [--limit 1.5]

Writes the shape's checkpoint (HF names, ~5 GB shards, bf16, values not random: writing is not
what is measured) once, then, with the page cache dropped before each when the machine allows
(root), times `cat` of the shards to /dev/null and Pagoda's load_model onto the GPU (model built,
every tensor read and copied to the device, synchronized). Prints one JSON line; exits 1 when
load time exceeds --limit times cat's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from pagoda.engine.attention import TorchAttentionBackend
from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import load_model
from pagoda.engine.models import ModelConfig, build_model
from pagoda.engine.models.shapes import DUMMY_SHAPES

SHARD_BYTES = 5 << 30
HF_NAMES = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}


def write_checkpoint(folder: Path, shape: str) -> None:
    """The shape's tensors under HF names, in shards with an index, as save_pretrained does."""
    if (folder / "model.safetensors.index.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = {"architectures": ["LlamaForCausalLM"], **DUMMY_SHAPES[shape]}
    cfg = ModelConfig.from_hf(hf_config)
    with torch.device("meta"):
        model = build_model(cfg, TorchAttentionBackend())
    tensors: dict[str, tuple[int, ...]] = {}
    for name, p in model.named_parameters():
        module, _, kind = name.rpartition(".")
        prefix, _, part = module.rpartition(".")
        if part == "qkv_proj":
            q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
            sizes = (q, kv, kv)
        elif part == "gate_up_proj":
            sizes = (cfg.intermediate_size,) * 2
        else:
            tensors[name] = tuple(p.shape)
            continue
        for hf_part, rows in zip(HF_NAMES[part], sizes, strict=True):
            tensors[f"{prefix}.{hf_part}.{kind}"] = (rows, *p.shape[1:])
    shards: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for name, shp in tensors.items():
        nbytes = 2 * int(torch.Size(shp).numel())
        if size + nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = shp
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(
            {n: torch.full(s, 0.01, dtype=torch.bfloat16) for n, s in shard.items()}, folder / file
        )
        weight_map |= dict.fromkeys(shard, file)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({**hf_config, "torch_dtype": "bfloat16"}))


def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default="/tmp/ckpt-8b")
    parser.add_argument("--shape", default="llama-3.1-8b")
    parser.add_argument("--limit", type=float, default=1.5)
    args = parser.parse_args()
    folder = Path(args.dir)
    write_checkpoint(folder, args.shape)
    shards = sorted(str(p) for p in folder.glob("*.safetensors"))
    cold = drop_page_cache()
    start = time.perf_counter()
    subprocess.run(["cat", *shards], stdout=subprocess.DEVNULL, check=True)
    cat_s = time.perf_counter() - start
    drop_page_cache()
    torch.cuda.init()
    config = EngineConfig(model=str(folder), device="cuda", dtype="bfloat16")
    start = time.perf_counter()
    model, _ = load_model(config, torch.device("cuda"), torch.bfloat16)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    gib = sum(Path(s).stat().st_size for s in shards) / 2**30
    ratio = load_s / cat_s
    print(
        json.dumps(
            {
                "shape": args.shape,
                "gib": round(gib, 2),
                "page_cache_dropped": cold,
                "cat_s": round(cat_s, 2),
                "load_s": round(load_s, 2),
                "ratio": round(ratio, 2),
                "limit": args.limit,
                "first_param": str(next(model.parameters()).device),
            }
        )
    )
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
