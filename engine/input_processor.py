"""The API side's first step for a request: tokenize it, hold it to the engine's limits, resolve
its defaults; the engine core then takes it as it is (EngineCoreRequest)."""

from __future__ import annotations

import time
from dataclasses import replace

from pagoda.engine.config import EngineConfig
from pagoda.engine.core_messages import CoreInfo, EngineCoreRequest
from pagoda.engine.request_rules import RequestLimits, check_request
from pagoda.engine.sampling_params import I64_MAX, ParamError, SamplingParams
from pagoda.engine.structured.backend import StructuredOutputs


class InputProcessor:
    def __init__(self, config: EngineConfig, tokenizer, info: CoreInfo) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = info.max_model_len
        self.limits = RequestLimits(
            info.max_model_len, config.max_num_seqs, info.vocab_size or I64_MAX, config.max_logprobs
        )  # a core without a model (a test's fake runner) checks no token ids
        # Grammars are compiled here too, so that a bad one is a 400 before the core sees it.
        self.structured = StructuredOutputs(tokenizer, info.vocab_size, info.eos_token_ids)

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        return list(prompt)

    def make_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> EngineCoreRequest:
        """ParamError / ValueError (an HTTP 400) when the request cannot be served as asked."""
        prompt_ids = self.tokenize(prompt)
        check_request(prompt_ids, params, self.limits)
        if params.max_tokens is None:  # a copy: the caller's params stay as given
            params = replace(params, max_tokens=self.max_model_len - len(prompt_ids))
        if params.structured_outputs is not None:
            if params.use_beam_search:
                raise ParamError(
                    "structured_outputs", "structured outputs do not combine with beam search"
                )
            self.structured.compile(params.structured_outputs)  # a bad grammar fails here
        return EngineCoreRequest(
            request_id, prompt_ids, params, time.monotonic(), priority, cache_salt
        )
