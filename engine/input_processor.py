"""The API side's first step for a request: tokenize it, hold it to the engine's limits, resolve
its defaults; the engine core then takes it as it is (EngineCoreRequest)."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from pagoda.engine.config import EngineConfig
from pagoda.engine.core_messages import CoreInfo, EngineCoreRequest
from pagoda.engine.lora.admission import LoRAAdmission
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.pooling_params import PoolerConfig, PoolingParams
from pagoda.engine.request_rules import RequestLimits, check_pooling_request, check_request
from pagoda.engine.sample.bad_words import bad_words_token_ids
from pagoda.engine.sampling_params import I64_MAX, ParamError, SamplingParams
from pagoda.engine.structured.backend import StructuredOutputs


class InputProcessor:
    def __init__(
        self, config: EngineConfig, tokenizer, info: CoreInfo, model_files: bool = True
    ) -> None:
        """`model_files`: the model is real (not a test's fake runner): its generation_config.json
        gives the default sampling parameters."""
        self.config, self.tokenizer = config, tokenizer
        self.max_model_len = info.max_model_len
        self.eos_token_ids = set(info.eos_token_ids)
        self.limits = RequestLimits(
            info.max_model_len, config.max_num_seqs, info.vocab_size or I64_MAX, config.max_logprobs
        )  # a core without a model (a test's fake runner) checks no token ids
        # Grammars are compiled here too, so that a bad one is a 400 before the core sees it.
        self.structured = StructuredOutputs(tokenizer, info.vocab_size, info.eos_token_ids)
        # A request's adapter is read and checked here (a 400), against the core's model; the
        # core loads it into a slot when the request runs.
        self.loras = LoRAAdmission(config, info.model_config)
        # vLLM's default_sampling_params: what a request that leaves a field unset gets.
        self.default_sampling_params: dict[str, Any] = {}
        if model_files:
            from pagoda.engine.loader.generation_config import load_generation_defaults

            self.default_sampling_params = load_generation_defaults(config)
        self.pooler_config: PoolerConfig | None = None
        if config.is_pooling:
            from pagoda.engine.loader.pooler_config import load_pooler_config

            self.pooler_config = load_pooler_config(config)

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        return list(prompt)

    def make_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | PoolingParams,
        priority: int = 0,
        cache_salt: str | None = None,
        lora_request: LoRARequest | None = None,
    ) -> EngineCoreRequest:
        """ParamError / ValueError (an HTTP 400) when the request cannot be served as asked."""
        if lora_request is not None:
            self.loras.check(lora_request)
        if isinstance(params, PoolingParams):
            return self._pooling_request(request_id, prompt, params, priority)
        if self.config.is_pooling:
            raise ParamError("model", "This model serves embeddings (--runner pooling): no text")
        prompt_ids = self.tokenize(prompt)
        check_request(prompt_ids, params, self.limits)
        if params.prompt_logprobs is not None:  # every prompt token's logits: no cache hits
            cache_salt = f"prompt-logprobs-{uuid.uuid4().hex}"
        if params.bad_words:  # a copy: the caller's params stay as given
            params = replace(
                params, bad_words_token_ids=bad_words_token_ids(self.tokenizer, params.bad_words)
            )
        # A copy: the caller's params stay as given. The cap applies after the check, as vLLM's.
        max_tokens = min(
            x
            for x in (
                params.max_tokens,
                self.max_model_len - len(prompt_ids),
                self.config.max_new_tokens,
            )
            if x is not None
        )
        if max_tokens != params.max_tokens:
            params = replace(params, max_tokens=max_tokens)
        # min_tokens masks EOS and the stop tokens: if those are all it allows, no token is left.
        if (
            params.min_tokens
            and params.allowed_token_ids
            and set(params.allowed_token_ids) <= self.eos_token_ids | set(params.stop_token_ids)
        ):
            raise ParamError(
                "allowed_token_ids",
                "allowed_token_ids: every allowed token is EOS or a stop token, which "
                "min_tokens forbids",
            )
        if params.structured_outputs is not None:
            if params.use_beam_search:
                raise ParamError(
                    "structured_outputs", "structured outputs do not combine with beam search"
                )
            self.structured.compile(params.structured_outputs)  # a bad grammar fails here
        return EngineCoreRequest(
            request_id,
            prompt_ids,
            params,
            time.monotonic(),
            priority,
            cache_salt,
            lora_request=lora_request,
        )

    def _pooling_request(
        self, request_id: str, prompt: str | list[int], params: PoolingParams, priority: int
    ) -> EngineCoreRequest:
        """One sequence that computes its prompt, is pooled by the runner, and samples one token
        (dropped). Mean pooling reads every prompt token's hidden state, so such a request takes
        nothing from the prefix cache (a salt of its own); last-token pooling may."""
        if self.pooler_config is None:
            raise ParamError("model", "This model generates text; embeddings need --runner pooling")
        prompt_ids = self.tokenize(prompt)
        check_pooling_request(prompt_ids, self.limits)
        pooling = self.pooler_config.resolve(params)
        salt = f"pooling-{uuid.uuid4().hex}" if pooling.pooling_type == "MEAN" else None
        sample = SamplingParams(temperature=0.0, max_tokens=1, detokenize=False)
        return EngineCoreRequest(
            request_id, prompt_ids, sample, time.monotonic(), priority, salt, pooling
        )
