"""KV-cache scales from checkpoints (quantization/kv_cache.py): each name vLLM reads lands in its
layer's scale (per tensor or per KV head, the latter sharded by tensor-parallel rank); a
compressed-tensors `kv_cache_scheme` is checked, and may come over full-precision weights; bad
scales are refused naming the tensor; and on a model whose keys pass e4m3's 448, the checkpoint's
scales keep an FP8 cache close to the full-precision one where scale 1.0 does not. (Sharded per
head over two ranks: tests/unit/distributed/test_tensor_parallel_layers.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from quantized_checkpoint import PROMPT, prompt_logprobs
from safetensors.torch import load_file, save_file
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.loader import load_model
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.quantization.kv_cache import (
    check_kv_cache_scheme,
    describe_kv_scales,
    kv_scale_target,
    load_kv_scale,
)
from pagoda.engine.sampling_params import SamplingParams

FP8 = torch.float8_e4m3fn
LAYERS, KV_HEADS = 4, 2
SCHEME = {"num_bits": 8, "type": "float", "strategy": "attn_head", "symmetric": True}


def with_tensors(folder: Path, extra: dict[str, torch.Tensor], **config: object) -> Path:
    """The checkpoint with `extra` tensors added and config.json's keys updated."""
    tensors = load_file(str(folder / "model.safetensors")) | extra
    save_file(tensors, str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text()) | config
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def scales_of(folder: Path, **kw: object) -> list[tuple[list[float], list[float]]]:
    model, _ = load_model(
        EngineConfig(model=str(folder), device="cpu", **kw), torch.device("cpu"), torch.float32
    )
    return [
        (a.k_scale.tolist(), a.v_scale.tolist()) for a in (m.self_attn for m in model.model.layers)
    ]


def test_names_map_to_the_layers_scales() -> None:
    p = "model.layers.3.self_attn"
    assert kv_scale_target(f"{p}.k_scale") == (p, "k")
    assert kv_scale_target(f"{p}.v_scale") == (p, "v")
    assert kv_scale_target(f"{p}.kv_scale") == (p, "kv")
    assert kv_scale_target(f"{p}.k_proj.k_scale") == (p, "k")
    assert kv_scale_target(f"{p}.v_proj.output_scale") == (p, "v")
    assert kv_scale_target(f"{p}.k_proj.weight_scale") is None
    assert kv_scale_target(f"{p}.k_proj.input_scale") is None


def test_the_kv_cache_scheme_is_checked() -> None:
    check_kv_cache_scheme(SCHEME)
    check_kv_cache_scheme(SCHEME | {"strategy": "tensor", "dynamic": False})
    for bad, reason in [
        ({"type": "int"}, "only 8-bit float"),
        ({"num_bits": 4}, "only 8-bit float"),
        ({"strategy": "channel"}, "strategy 'channel'"),
        ({"symmetric": False}, "zero points"),
        ({"dynamic": True}, "must be stored"),
    ]:
        with pytest.raises(ValueError, match=reason):
            check_kv_cache_scheme(SCHEME | bad)


def test_a_scale_per_tensor_or_per_head_and_this_ranks_heads() -> None:
    target = torch.ones(2)
    load_kv_scale(target, torch.tensor(0.5), 0, 4, "s")
    assert target.tolist() == [0.5, 0.5]
    load_kv_scale(target, torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1), 2, 4, "s")
    assert target.tolist() == [3.0, 4.0]  # the rank holding heads 2 and 3
    for bad, reason in [
        (torch.ones(3), r"one per KV head \(4\), got shape \(3,\)"),
        (torch.tensor([1.0, 0.0, 1.0, 1.0]), "positive and finite, got 0.0"),
        (torch.tensor(float("nan")), "positive and finite, got nan"),
    ]:
        with pytest.raises(ValueError, match=reason):
            load_kv_scale(target, bad, 0, 4, "s")


def test_every_naming_loads_into_the_model(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "m")
    layer = "model.layers.{}.self_attn."
    with_tensors(
        folder,
        {
            layer.format(0) + "k_scale": torch.tensor([0.5, 2.0]),  # per head
            layer.format(0) + "v_scale": torch.tensor(3.0),  # per tensor
            layer.format(1) + "kv_scale": torch.tensor([0.25]),  # both, deprecated
            layer.format(2) + "k_proj.k_scale": torch.tensor(1.5),  # ModelOpt
            layer.format(2) + "v_proj.v_scale": torch.tensor(2.5),
            layer.format(3) + "k_proj.output_scale": torch.tensor([4.0]),  # older llm-compressor
        },
    )
    assert scales_of(folder, kv_cache_dtype="fp8") == [
        ([0.5, 2.0], [3.0, 3.0]),
        ([0.25, 0.25], [0.25, 0.25]),
        ([1.5, 1.5], [2.5, 2.5]),
        ([4.0, 4.0], [1.0, 1.0]),
    ]


def test_the_log_line_says_which_scales_a_cache_uses(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "m")
    model, _ = load_model(
        EngineConfig(model=str(folder), device="cpu"), torch.device("cpu"), torch.float32
    )
    assert describe_kv_scales(model, fp8_cache=False) is None
    assert "scale 1.0" in str(describe_kv_scales(model, fp8_cache=True))
    model.model.layers[2].self_attn.v_scale.fill_(0.5)  # one layer, its values only
    assert "(1 of 4 layers)" in str(describe_kv_scales(model, fp8_cache=True))
    assert "not used" in str(describe_kv_scales(model, fp8_cache=False))


def test_a_kv_only_compressed_tensors_checkpoint_loads_its_weights_as_they_are(
    tmp_path: Path,
) -> None:
    folder = write_tiny_checkpoint(tmp_path / "m")
    qc = {"quant_method": "compressed-tensors", "config_groups": {}, "kv_cache_scheme": SCHEME}
    with_tensors(folder, {}, quantization_config=qc)
    assert scales_of(folder) == [([1.0, 1.0], [1.0, 1.0])] * LAYERS
    qc["kv_cache_scheme"] = SCHEME | {"strategy": "token"}
    with_tensors(folder, {}, quantization_config=qc)
    with pytest.raises(ModelLoadError, match="strategy 'token'"):
        scales_of(folder)


def test_a_bad_scale_is_refused_naming_it(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "m")
    with_tensors(folder, {"model.layers.2.self_attn.v_scale": torch.tensor(-1.0)})
    with pytest.raises(ModelLoadError, match=r"model\.layers\.2\.self_attn\.v_scale: .*got -1\.0"):
        scales_of(folder)
    folder = write_tiny_checkpoint(tmp_path / "n")
    with_tensors(folder, {"model.layers.9.self_attn.k_scale": torch.tensor(1.0)})
    with pytest.raises(ModelLoadError, match="layers.9.self_attn.k_scale' has no place"):
        scales_of(folder)


def amplified(folder: Path) -> tuple[Path, torch.Tensor]:
    """Keys and values past e4m3's 448 (k_proj and v_proj scaled up 400 times, q_proj and o_proj
    down as much: the same model in full precision), and each layer's largest |k| and |v| per
    head over the prompt, read from a full-precision cache after a run: what a calibration
    measures."""
    tensors = load_file(str(folder / "model.safetensors"))
    for n in range(LAYERS):
        for name, gain in (
            ("k_proj", 400.0),
            ("q_proj", 1 / 400),
            ("v_proj", 400.0),
            ("o_proj", 1 / 400),
        ):
            tensors[f"model.layers.{n}.self_attn.{name}.weight"] *= gain
    save_file(tensors, str(folder / "model.safetensors"))
    config = EngineConfig(
        model=str(folder), dtype="float32", device="cpu", max_model_len=64, max_num_seqs=1
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    engine.add_request("0", PROMPT, SamplingParams(max_tokens=1, detokenize=False))
    while engine.has_unfinished_requests():
        engine.step()
    amax = [torch.stack([c.abs().amax((0, 1, 3)) for c in kv]) for kv in engine.runner.kv_caches]
    return folder, torch.stack(amax)  # [layer, k or v, head]


def test_calibrated_scales_keep_an_fp8_cache_close_where_scale_one_saturates(
    tmp_path: Path,
) -> None:
    folder, amax = amplified(write_tiny_tokenizer(write_tiny_checkpoint(tmp_path / "m")))
    assert amax.shape == (LAYERS, 2, KV_HEADS) and amax.min() > 448  # past e4m3's range
    full = prompt_logprobs(folder)
    unscaled = prompt_logprobs(folder, kv_cache_dtype="fp8")
    scales = {
        f"model.layers.{n}.self_attn.{kv}_scale": (amax[n, i] * 1.25 / 448).contiguous()
        for n in range(LAYERS)
        for i, kv in enumerate("kv")
    }
    scaled = prompt_logprobs(with_tensors(folder, scales), kv_cache_dtype="fp8")
    err_scaled, err_unscaled = (
        (scaled - full).abs().max().item(),
        (unscaled - full).abs().max().item(),
    )
    # e4m3's own rounding moves this model's log-probs by up to 0.19-0.24 with no key past 448
    # (measured over three seeds); saturating at 448 moved them by 1.7-2.1 there.
    assert err_scaled < 0.3, err_scaled
    assert err_unscaled > 4 * err_scaled, (err_unscaled, err_scaled)
