"""The engine's CLI flags, made from EngineConfig's fields: `max_num_seqs` is `--max-num-seqs`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

from pagoda.engine.config import EngineConfig

HELP = {
    "model": "a Hub model (Qwen/Qwen3-8B, hf://ORG/NAME@REVISION), a HF folder, a .gguf file, "
    "'default' (SmolLM2-135M-Instruct) or, with --load-format dummy, a shape name",
    "revision": "the Hub model's branch, tag or commit",
    "tokenizer_revision": "the Hub tokenizer's branch, tag or commit",
    "download_dir": "where Hub models are downloaded; None: the HF cache ($HF_HOME/hub)",
    "served_model_name": "the names clients may send as `model`, the first in responses; with "
    "several models, one name each (default: the model argument)",
    "max_model_len": "context length (default: the model's)",
    "max_num_seqs": "most sequences in one step",
    "max_num_batched_tokens": "token budget of one step (prefill chunks and decodes together)",
    "gpu_memory_utilization": "fraction of GPU memory for weights, activations and the KV cache",
    "kv_cache_memory_bytes": "bytes for the KV cache (default on the CPU: 2 GiB)",
    "enable_prefix_caching": "reuse the KV blocks of shared prompt prefixes",
    "swap_space": "GiB of CPU memory for swapped-out KV blocks",
    "scheduling_policy": "fcfs, or priority (lower value first, then arrival)",
    "enforce_eager": "never use CUDA graphs",
    "async_scheduling": "schedule the next step while the GPU runs this one (as vLLM's --async-scheduling)",
    "max_logprobs": "the most logprobs a request may ask for",
    "runner": "generate (text), or pooling (embeddings from the hidden states); auto: generate",
    "pooler_config": "for --runner pooling: JSON of pooling_type (LAST, MEAN) and normalize",
    "generation_config": "auto: default temperature, top_p, top_k, min_p, repetition_penalty and "
    "max_tokens from the model's generation_config.json; vllm: none; or a folder with that file",
    "override_generation_config": 'JSON, as vLLM\'s; only {"max_new_tokens": N}: caps every '
    "request's max_tokens at N",
    "quantization": "quantize the weights at load: fp8 (e4m3, a scale per output channel; "
    "activations per token); checkpoints stored in FP8 (fp8, compressed-tensors) and 4-bit AWQ "
    "and GPTQ checkpoints (awq, gptq, or their _marlin names) load as they are",
    "kv_cache_dtype": "the KV cache's element type: auto (the model's dtype) or fp8 (e4m3, half "
    "the bytes of bf16: twice the tokens in the same memory; scaled by the checkpoint's "
    "k_scale/v_scale where it has them)",
    "speculative_config": 'JSON, as vLLM\'s: {"method": "ngram", "num_speculative_tokens": 4, '
    '"prompt_lookup_max": 4} or {"method": "draft_model", "model": ..., '
    '"num_speculative_tokens": 4}',
    "dummy_shape": "for --load-format dummy: a named shape (llama-3.1-8b, qwen3-8b, llama-3.2-1b, ...)",
}


def add_engine_args(parser: argparse.ArgumentParser, positional_model: bool = True) -> None:
    hints = typing.get_type_hints(EngineConfig)
    group = parser.add_argument_group("engine")
    for f in dataclasses.fields(EngineConfig):
        flag = "--" + f.name.replace("_", "-")
        # Every EngineConfig field has a default or a factory.
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        kw: dict = dict(dest=f.name, default=None, help=_help(f.name, default))
        hint = _strip_none(hints[f.name])
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(hint) is typing.Literal:
            kw["choices"] = list(typing.get_args(hint))
        elif typing.get_origin(hint) is list:
            kw.update(type=typing.get_args(hint)[0], nargs="+")
        elif typing.get_origin(hint) is dict:
            kw["type"] = json.loads
        else:
            kw["type"] = hint
        if f.name == "model":
            kw.pop("dest")
            if positional_model:
                parser.add_argument(
                    "model_positional", nargs="?", metavar="MODEL", default=None, help=HELP["model"]
                )
            group.add_argument(
                flag,
                dest="model",
                action="append",
                default=None,
                help=HELP["model"] + "; repeat to serve several",
            )
            continue
        group.add_argument(flag, **kw)


def _strip_none(hint):
    """`int | None` -> int; other hints unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def _help(name: str, default) -> str:
    return f"{HELP.get(name, name.replace('_', ' '))} (default: {default})"


def configs_from_args(ns: argparse.Namespace) -> list[EngineConfig]:
    """One EngineConfig per model named (positional MODEL and each --model); flags apply to all."""
    models = ([ns.model_positional] if getattr(ns, "model_positional", None) else []) + (
        ns.model or []
    )
    given = {
        f.name: getattr(ns, f.name)
        for f in dataclasses.fields(EngineConfig)
        if f.name != "model" and getattr(ns, f.name, None) is not None
    }
    names = given.pop("served_model_name", None) or []
    if len(models) > 1 and names and len(names) != len(models):
        raise ValueError(
            f"--served-model-name: give one name per model ({len(models)}), got {len(names)}"
        )
    configs = []
    for i, model in enumerate(models or [EngineConfig.model]):
        cfg = EngineConfig(model=model, **given)
        if names:
            cfg.served_model_name = [names[i]] if len(models) > 1 else names
        cfg.validate()
        configs.append(cfg)
    return configs
