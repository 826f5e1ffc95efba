"""The rules a request must meet to be served by one engine, checked in this one place.

SamplingParams.validate() holds what a parameter may be on its own; these rules hold what the
engine can serve: the batch width, the context length, token ids within the model's vocabulary.
The server checks them before it answers (so that a streamed request fails with a 400, not
mid-stream) and the engine again when a request arrives from any caller. Both raise ParamError.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagoda.engine.sampling_params import ParamError, SamplingParams


@dataclass(frozen=True)
class RequestLimits:
    max_model_len: int
    max_num_seqs: int
    vocab_size: int  # the model's (its logits' width): the one range token ids are checked against
    max_logprobs: int = 20  # --max-logprobs


def check_request(prompt_ids: list[int], params: SamplingParams, limits: RequestLimits) -> None:
    if not prompt_ids:
        raise ParamError("prompt", "The prompt is empty")
    check_token_ids("prompt", prompt_ids, limits.vocab_size)
    check_token_ids("stop_token_ids", params.stop_token_ids, limits.vocab_size)
    check_token_ids("logit_bias", list(params.logit_bias or {}), limits.vocab_size)
    check_token_ids("allowed_token_ids", params.allowed_token_ids or [], limits.vocab_size)
    if params.logprobs is not None and params.logprobs > limits.max_logprobs:
        raise ParamError(
            "logprobs", f"logprobs must be at most max_logprobs ({limits.max_logprobs})"
        )
    if params.prompt_logprobs is not None and params.prompt_logprobs > limits.max_logprobs:
        raise ParamError(
            "prompt_logprobs",
            f"prompt_logprobs must be at most max_logprobs ({limits.max_logprobs})",
        )
    width = (params.best_of or params.n) if params.use_beam_search else params.n
    if width > limits.max_num_seqs:
        param = "best_of" if params.use_beam_search and params.best_of else "n"
        raise ParamError(
            param, f"{param} ({width}) must not exceed max_num_seqs ({limits.max_num_seqs})"
        )
    room = limits.max_model_len - len(prompt_ids)
    if room < 1 or (params.max_tokens is not None and params.max_tokens > room):
        asked = f" plus {params.max_tokens} max_tokens" if params.max_tokens is not None else ""
        raise ParamError(
            "max_tokens" if room >= 1 else "prompt",
            f"This model's maximum context length is {limits.max_model_len} tokens; the request "
            f"has {len(prompt_ids)} prompt tokens{asked}. Shorten the prompt or lower max_tokens.",
        )


def check_pooling_request(prompt_ids: list[int], limits: RequestLimits) -> None:
    """An embedding request: its prompt only (nothing is generated, the whole context is its)."""
    if not prompt_ids:
        raise ParamError("input", "The input is empty")
    check_token_ids("input", prompt_ids, limits.vocab_size)
    if len(prompt_ids) > limits.max_model_len:
        raise ParamError(
            "input",
            f"This model's maximum context length is {limits.max_model_len} tokens; the input "
            f"has {len(prompt_ids)} tokens. Shorten it.",
        )


def check_token_ids(param: str, ids: list[int], vocab_size: int) -> None:
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise ParamError(param, f"{param}: token id {bad} is out of range [0, {vocab_size})")


def check_fan_out(num_prompts: int, params: SamplingParams, limits: RequestLimits) -> None:
    """One API request of several prompts, each with n choices, may fill a batch, not more."""
    if num_prompts * params.n > limits.max_num_seqs:
        raise ParamError(
            "prompt" if num_prompts > 1 else "n",
            f"{num_prompts} prompt(s) x n={params.n} must not exceed max_num_seqs "
            f"({limits.max_num_seqs})",
        )
