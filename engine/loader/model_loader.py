"""load_model: resolve the source, build our model on the device, fill its weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from pagoda.engine.attention import AttentionBackend, get_backend
from pagoda.engine.config import EngineConfig
from pagoda.engine.loader.cache import cache_dir, save_tensors, write_atomic
from pagoda.engine.loader.dummy import fill_dummy
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.loader.gguf_file import gguf_model_config, gguf_weights, open_gguf
from pagoda.engine.loader.hf_folder import (
    hf_model_config,
    read_json,
    safetensors_files,
    safetensors_weights,
)
from pagoda.engine.loader.resolve import ResolvedModel, resolve_model
from pagoda.engine.models import ModelConfig, build_model
from pagoda.engine.models.llama import LlamaForCausalLM
from pagoda.engine.quantization import CHECKPOINT_FORMATS
from pagoda.engine.quantization.apply import quantize_model
from pagoda.engine.quantization.checkpoint import (
    CheckpointScheme,
    checkpoint_scheme,
    finish_8bit_layers,
    prepare_8bit_parameters,
    quantized_layers,
    without_input_scales,
)
from pagoda.engine.quantization.kv_cache import describe_kv_scales
from pagoda.engine.quantization.w4_checkpoint import (
    W4Scheme,
    dummy_w4_scheme,
    fill_dummy_w4,
    finish_w4_layers,
    prepare_w4_parameters,
    w4_bytes_saved,
    weights_on_meta,
    without_unused_g_idx,
)

log = logging.getLogger(__name__)

Weights = Iterable[tuple[str, torch.Tensor]]


def load_model(
    config: EngineConfig, device: torch.device, dtype: torch.dtype
) -> tuple[LlamaForCausalLM, ModelConfig]:
    start = time.perf_counter()
    resolved = resolve_model(config)
    weights: Weights | None
    scheme: CheckpointScheme | W4Scheme | None = None
    if resolved.kind == "dummy":
        model_config, weights = dummy_model_config(resolved), None
        scheme = dummy_w4_scheme(config.quantization)
    elif resolved.path is None:
        raise AssertionError(f"a {resolved.kind} model has a path")
    elif resolved.kind == "hf":
        model_config = hf_model_config(resolved.path)
        weights = safetensors_weights(safetensors_files(resolved.path))
        scheme = stored_quantized(resolved.path, config.quantization)
    else:
        model_config, weights = gguf_source(resolved.path, dtype)
    model_config.max_model_len = config.max_model_len
    backend = get_backend(config.attention_backend, device)
    w4 = scheme if isinstance(scheme, W4Scheme) else None
    check_fits(model_config, backend, device, dtype, w4)
    with _default_device_dtype(device, dtype):
        with weights_on_meta(w4 is not None):
            model = build_model(model_config, backend)
        if scheme is not None:
            try:
                layers = quantized_layers(model)
                if isinstance(scheme, W4Scheme):
                    prepare_w4_parameters(layers, scheme)
            except ValueError as e:
                raise ModelLoadError(f"{resolved.name}: {e}") from e
            if isinstance(scheme, W4Scheme):
                weights = without_unused_g_idx(weights, scheme) if weights is not None else None
            else:
                prepare_8bit_parameters(layers, scheme.weight_dtype)
                weights = without_input_scales(weights or ())
    if weights is None:
        fill_dummy(model, config.seed)
        if isinstance(scheme, W4Scheme):
            fill_dummy_w4(layers, scheme, config.seed)
    else:
        try:
            model.load_weights(weights)
        except ModelLoadError:  # an unreadable file, met as the weights are read: it names itself
            raise
        except (ValueError, KeyError) as e:  # a shape or name that config.json did not predict
            raise ModelLoadError(f"{resolved.path}: {e.args[0]}") from e
        finally:
            if isinstance(weights, Generator):
                # Its files and progress bar close now, not when the error is collected: the
                # error's line must not follow the bar's on the terminal.
                weights.close()
    if isinstance(scheme, W4Scheme):
        finish_w4_layers(layers, scheme, device)
        log.info("loaded %d linear layers in 4 bits (%s) as stored", len(layers), scheme.method)
    elif scheme is not None:
        finish_8bit_layers(layers, scheme, device)
        log.info("loaded %d linear layers in %s as stored", len(layers), scheme.weight_dtype)
    elif config.quantization:
        n = quantize_model(model, config.quantization, device)
        log.info("quantized %d linear layers to %s", n, config.quantization)
    if (note := describe_kv_scales(model, config.kv_cache_dtype != "auto")) is not None:
        log.info(note)
    log.info("loaded %s (%s) in %.1f s", resolved.name, resolved.kind, time.perf_counter() - start)
    return model.eval(), model_config


def stored_quantized(folder: Path, quantization: str | None) -> CheckpointScheme | W4Scheme | None:
    """The 8-bit scheme the checkpoint's config.json declares (its weights then load as they
    are, with --quantization naming its method, fp8 for an FP8 one, or none); a quantized
    checkpoint Pagoda cannot run, or one that contradicts --quantization, is refused."""
    try:
        scheme = checkpoint_scheme(read_json(folder / "config.json"))
    except ValueError as e:
        raise ModelLoadError(f"{folder}: {e}") from e
    if scheme is None:
        if quantization in CHECKPOINT_FORMATS:
            raise ModelLoadError(
                f"--quantization {quantization}: {folder} is no "
                f"{CHECKPOINT_FORMATS[quantization]} checkpoint"
            )
        return None
    if isinstance(scheme, W4Scheme):
        fits, holds = {None, scheme.method, f"{scheme.method}_marlin"}, "4-bit"
    else:
        fp8 = scheme.weight_dtype == torch.float8_e4m3fn
        fits, holds = {None, scheme.method} | ({"fp8"} if fp8 else set()), str(scheme.weight_dtype)
    if quantization not in fits:
        raise ModelLoadError(
            f"{folder} holds {scheme.method} {holds} weights: --quantization "
            f"{quantization} contradicts it"
        )
    return scheme


def check_fits(
    model_config: ModelConfig,
    backend: AttentionBackend,
    device: torch.device,
    dtype: torch.dtype,
    w4: W4Scheme | None = None,
) -> None:
    """On a GPU, refuse before loading weights that cannot fit (an out-of-memory error halfway
    through a 16 GB download and load says much less); 4-bit linear layers counted packed."""
    if device.type != "cuda":
        return
    with torch.device("meta"):
        shapes = build_model(model_config, backend)
    need = sum(p.numel() for p in shapes.parameters()) * dtype.itemsize
    if w4 is not None:
        need -= w4_bytes_saved(shapes, dtype, w4)
    free = torch.cuda.mem_get_info(device)[0]
    if need > free:
        raise ModelLoadError(
            f"the model's weights need {need / 2**30:.1f} GiB in {dtype}, {device} has "
            f"{free / 2**30:.1f} GiB free: use a smaller model or more --tensor-parallel-size"
        )


def dummy_model_config(resolved: ResolvedModel) -> ModelConfig:
    if resolved.shape is not None:
        return ModelConfig.from_shape(resolved.shape)
    assert resolved.path is not None, "a dummy model without a shape has a config.json"
    return ModelConfig.from_hf(json.loads(resolved.path.read_text()))


def gguf_source(path: Path, dtype: torch.dtype) -> tuple[ModelConfig, Weights]:
    """The GGUF's config and weights; dequantized once, then read back from the cache."""
    folder = cache_dir(path)
    config_file = folder / "model_config.json"
    weights_file = folder / f"model.{str(dtype).removeprefix('torch.')}.safetensors"
    if config_file.is_file() and weights_file.is_file():
        try:
            cached = ModelConfig(**json.loads(config_file.read_text()))
            return cached, safetensors_weights([weights_file])
        except (TypeError, ValueError) as e:  # written by an older ModelConfig: convert again
            log.warning("ignoring the cached copy in %s: %s", folder, e)
    reader = open_gguf(path)
    model_config = gguf_model_config(reader)
    weights = {name: w.to(dtype) for name, w in gguf_weights(reader, model_config)}
    save_tensors(weights_file, weights)
    write_atomic(
        config_file, lambda tmp: Path(tmp).write_text(json.dumps(dataclasses.asdict(model_config)))
    )
    return model_config, weights.items()


@contextmanager
def _default_device_dtype(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Parameters are born on the target device in the target dtype: no copy, no float32 detour."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)
