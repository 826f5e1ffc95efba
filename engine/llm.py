"""The offline Python API, as vLLM's: `LLM(model=...).generate(prompts, params)`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence as Seq
from dataclasses import fields
from typing import Any, cast

from tqdm import tqdm

from pagoda.engine.config import EngineConfig
from pagoda.engine.inputs import PromptType, is_single, prompt_of
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.metrics_reader import Metric, spec_decode_metrics
from pagoda.engine.outputs import EmbeddingRequestOutput, PoolingRequestOutput, RequestOutput
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import SamplingParams

Message = dict[str, Any]


class LLM:
    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        names = {f.name for f in fields(EngineConfig)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        config = EngineConfig(**kwargs) if model is None else EngineConfig(model=model, **kwargs)
        self.engine = LLMEngine(config, log_stats=False)
        self._ids = itertools.count()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: PromptType | Seq[PromptType],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        use_tqdm: bool = False,
        priority: Seq[int] | None = None,
        lora_request: LoRARequest | Seq[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt together (continuous batching); outputs in prompt order.
        Prompts in vLLM's forms, mixed as one likes: text, token ids, {"prompt": ...},
        {"prompt_token_ids": ...}. lora_request: one adapter for all, or one (None: the base
        model) per prompt."""
        batch = prompt_list(prompts)
        loras = (
            list(lora_request)
            if isinstance(lora_request, (list, tuple))
            else [cast("LoRARequest | None", lora_request)] * len(batch)
        )
        if len(loras) != len(batch):
            raise ValueError("give one LoRARequest, or one per prompt")
        # vLLM's get_default_sampling_params: --generation-config's defaults when none are given
        params = sampling_params or SamplingParams(**self.engine.default_sampling_params)
        params_list: list[SamplingParams] = (
            list(params)
            if isinstance(params, (list, tuple))
            else [cast(SamplingParams, params)] * len(batch)
        )
        if len(params_list) != len(batch):
            raise ValueError("give one SamplingParams, or one per prompt")
        outs = self._run(batch, [_copy(p) for p in params_list], priority, use_tqdm, loras)
        return cast("list[RequestOutput]", outs)

    def encode(
        self,
        prompts: PromptType | Seq[PromptType],
        pooling_params: PoolingParams | Seq[PoolingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[PoolingRequestOutput]:
        """vLLM's LLM.encode: each prompt's pooled vector (`outputs.data`), for a model served with
        runner="pooling"."""
        batch = prompt_list(prompts)
        given = pooling_params or PoolingParams()
        params_list: list[PoolingParams] = (
            list(given)
            if isinstance(given, (list, tuple))
            else [cast(PoolingParams, given)] * len(batch)
        )
        if len(params_list) != len(batch):
            raise ValueError("give one PoolingParams, or one per prompt")
        outs = self._run(batch, params_list, None, use_tqdm)
        return cast("list[PoolingRequestOutput]", outs)

    def embed(
        self,
        prompts: PromptType | Seq[PromptType],
        pooling_params: PoolingParams | Seq[PoolingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[EmbeddingRequestOutput]:
        """vLLM's LLM.embed: each prompt's embedding as `outputs.embedding` (a list of floats)."""
        return [
            EmbeddingRequestOutput.from_base(o)
            for o in self.encode(prompts, pooling_params, use_tqdm)
        ]

    def get_metrics(self) -> list[Metric]:
        """vLLM's LLM.get_metrics: a snapshot of the engine's counters (today those of speculative
        decoding, vllm:spec_decode_*, when a speculative_config is given)."""
        spec = self.engine.spec
        if spec is None:
            return []
        return spec_decode_metrics(spec.stats, {"model_name": self.engine.config.name})

    def _run(
        self,
        batch: list[str | list[int]],
        params_list: Seq[SamplingParams | PoolingParams],
        priority: Seq[int] | None,
        use_tqdm: bool,
        loras: Seq[LoRARequest | None] | None = None,
    ) -> list[RequestOutput | PoolingRequestOutput]:
        """Add every request, step until all finish (continuous batching); outputs in order."""
        ids = []
        for i, (prompt, p) in enumerate(zip(batch, params_list)):
            rid = str(next(self._ids))
            self.engine.add_request(
                rid,
                prompt,
                p,
                priority=priority[i] if priority else 0,
                lora_request=loras[i] if loras else None,
            )
            ids.append(rid)
        done: dict[str, RequestOutput | PoolingRequestOutput] = {}
        with tqdm(total=len(ids), disable=not use_tqdm, desc="requests") as bar:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        done[out.request_id] = out
                        bar.update(1)
        return [done[rid] for rid in ids]

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        sampling_params: SamplingParams | None = None,
        use_tqdm: bool = False,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """Apply the chat template (the model's, or `chat_template`) to each conversation, then
        generate; vLLM's LLM.chat."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        # The template writes the special tokens itself: tokenize without adding them again.
        prompts = [
            self.tokenizer.encode(
                self.tokenizer.apply_chat_template(
                    c,
                    tools=tools,
                    chat_template=chat_template,
                    tokenize=False,
                    add_generation_prompt=add_generation_prompt,
                    **(chat_template_kwargs or {}),
                ),
                add_special_tokens=False,
            )
            for c in conversations
        ]
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)


def prompt_list(prompts: PromptType | Seq[PromptType]) -> list[str | list[int]]:
    """vLLM's prompt forms, one or a list of them mixed, as text or token ids."""
    many = [cast("PromptType", prompts)] if is_single(prompts) else cast("Seq[PromptType]", prompts)
    return [prompt_of(p) for p in many]


def _copy(params: SamplingParams) -> SamplingParams:
    # Only finished outputs are read here, so the engine need not build the others.
    return SamplingParams(
        **{
            f.name: getattr(params, f.name)
            for f in fields(SamplingParams)
            if f.name != "output_kind"
        },
        output_kind="final_only",
    )
