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
from pagoda.engine.quantization.apply import quantize_model
from pagoda.engine.quantization.checkpoint import (
    finish_fp8_layers,
    fp8_checkpoint,
    fp8_layers,
    prepare_fp8_parameters,
    without_input_scales,
)

log = logging.getLogger(__name__)

Weights = Iterable[tuple[str, torch.Tensor]]


def load_model(
    config: EngineConfig, device: torch.device, dtype: torch.dtype
) -> tuple[LlamaForCausalLM, ModelConfig]:
    start = time.perf_counter()
    resolved = resolve_model(config)
    weights: Weights | None
    fp8_weights = False
    if resolved.kind == "dummy":
        model_config, weights = dummy_model_config(resolved), None
    elif resolved.path is None:
        raise AssertionError(f"a {resolved.kind} model has a path")
    elif resolved.kind == "hf":
        model_config = hf_model_config(resolved.path)
        weights = safetensors_weights(safetensors_files(resolved.path))
        fp8_weights = stored_in_fp8(resolved.path, config.quantization)
    else:
        model_config, weights = gguf_source(resolved.path, dtype)
    model_config.max_model_len = config.max_model_len
    backend = get_backend(config.attention_backend, device)
    check_fits(model_config, backend, device, dtype)
    with _default_device_dtype(device, dtype):
        model = build_model(model_config, backend)
        if fp8_weights:
            try:
                layers = fp8_layers(model)
            except ValueError as e:
                raise ModelLoadError(f"{resolved.path}: {e}") from e
            prepare_fp8_parameters(layers)
            weights = without_input_scales(weights or ())
    if weights is None:
        fill_dummy(model, config.seed)
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
    if fp8_weights:
        finish_fp8_layers(layers, device)
        log.info("loaded %d linear layers in FP8 as the checkpoint stores them", len(layers))
    elif config.quantization:
        n = quantize_model(model, config.quantization, device)
        log.info("quantized %d linear layers to %s", n, config.quantization)
    log.info("loaded %s (%s) in %.1f s", resolved.name, resolved.kind, time.perf_counter() - start)
    return model.eval(), model_config


def stored_in_fp8(folder: Path, quantization: str | None) -> bool:
    """Whether the checkpoint's config.json says its linear weights are FP8 (then they load as
    they are, with --quantization fp8, its own method or none); a quantized checkpoint Pagoda
    cannot run, or one that contradicts --quantization, is refused."""
    try:
        method = fp8_checkpoint(read_json(folder / "config.json"))
    except ValueError as e:
        raise ModelLoadError(f"{folder}: {e}") from e
    if method is not None and quantization not in (None, "fp8", method):
        raise ModelLoadError(
            f"{folder} holds {method} FP8 weights: --quantization {quantization} contradicts it"
        )
    if method is None and quantization == "compressed-tensors":
        raise ModelLoadError(
            f"--quantization compressed-tensors: {folder} is no compressed-tensors checkpoint"
        )
    return method is not None


def check_fits(
    model_config: ModelConfig, backend: AttentionBackend, device: torch.device, dtype: torch.dtype
) -> None:
    """On a GPU, refuse before loading weights that cannot fit (an out-of-memory error halfway
    through a 16 GB download and load says much less)."""
    if device.type != "cuda":
        return
    with torch.device("meta"):
        shapes = build_model(model_config, backend)
    need = sum(p.numel() for p in shapes.parameters()) * dtype.itemsize
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
