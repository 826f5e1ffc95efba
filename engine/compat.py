"""docs/compatibility.md, generated from the code: vLLM's endpoints, `vllm serve` flags and request
fields, each with what Pagoda does with it. `python -m pagoda.engine.compat > docs/compatibility.md`;
a unit test checks that the file is what this prints.

What Pagoda implements is read from the code (the router, the serve parser, the request models);
what vLLM and OpenAI have is listed here, so that what is missing shows too.
"""

from __future__ import annotations

import argparse

from pydantic import BaseModel

# vLLM's OpenAI-compatible server routes (vllm/entrypoints/openai/api_server.py).
VLLM_ENDPOINTS = (
    ("GET", "/health"),
    ("GET", "/ping"),
    ("GET", "/load"),
    ("GET", "/version"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("POST", "/pooling"),
    ("POST", "/classify"),
    ("POST", "/score"),
    ("POST", "/rerank"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/v1/unload_lora_adapter"),
    ("POST", "/invocations"),
)

# Flags of Pagoda's serve parser that mean something other than vLLM's flag of that name, or that
# vLLM lacks.
FLAG_NOTES = {
    "--model": "differs: also repeatable, to serve several models in one server",
    "--served-model-name": "yes; with several --model, one name each",
    "--load-format": "differs: auto, gguf, safetensors, dummy",
    "--dtype": "differs: auto, float32, bfloat16, float16",
    "--dummy-shape": "Pagoda's own: the shape of --load-format dummy weights",
    "--device": "yes (vLLM has dropped it)",
    "--preemption-mode": "yes (vLLM v0's; v1 always recomputes)",
    "--attention-backend": "differs: auto, torch, triton",
    "--tensor-parallel-size": "yes",
    "--shutdown-timeout": "Pagoda's own: seconds to drain in-flight requests on SIGTERM",
    "--models-config": "Pagoda's own: a YAML/JSON list of models to serve together",
    "--tool-call-parser": "differs: hermes, llama3_json, mistral",
    "--max-logprobs": "differs: at most 20 (OpenAI's limit), no -1",
    "--runner": "differs: auto (generate), generate, pooling (embeddings); no draft",
    "--pooler-config": "differs: only pooling_type (LAST, MEAN) and normalize",
    "--override-generation-config": "differs: only max_new_tokens (caps every request's max_tokens)",
    "--quantization": "differs: fp8, compressed-tensors (8-bit), awq and gptq (4-bit; the "
    "*_marlin names run the same checkpoints through a Triton kernel); vLLM's other methods "
    "refused at start with the reason",
    "--lora-modules": "yes: NAME=PATH or JSON {name, path}; local PEFT folders (docs/lora.md)",
    "--max-cpu-loras": "yes (default: --max-loras)",
}

# Request fields of OpenAI's API and vLLM's extras, per endpoint (vLLM's protocol.py).
OPENAI_CHAT = (
    "messages model audio frequency_penalty function_call functions logit_bias logprobs "
    "max_completion_tokens max_tokens metadata modalities n parallel_tool_calls prediction "
    "presence_penalty prompt_cache_key reasoning_effort response_format safety_identifier seed "
    "service_tier stop store stream stream_options temperature tool_choice tools top_logprobs "
    "top_p user verbosity web_search_options"
)
VLLM_SAMPLING = (
    "best_of use_beam_search top_k min_p repetition_penalty length_penalty stop_token_ids "
    "include_stop_str_in_output ignore_eos min_tokens skip_special_tokens "
    "spaces_between_special_tokens truncate_prompt_tokens prompt_logprobs allowed_token_ids "
    "bad_words structured_outputs guided_json guided_regex guided_choice guided_grammar "
    "guided_whitespace_pattern priority request_id logits_processors return_tokens_as_token_ids "
    "return_token_ids cache_salt kv_transfer_params vllm_xargs"
)
VLLM_CHAT = (
    VLLM_SAMPLING + " echo add_generation_prompt continue_final_message add_special_tokens "
    "documents chat_template chat_template_kwargs mm_processor_kwargs"
)
OPENAI_COMPLETIONS = (
    "model prompt best_of echo frequency_penalty logit_bias logprobs max_tokens n "
    "presence_penalty seed stop stream stream_options suffix temperature top_p user"
)
VLLM_COMPLETIONS = VLLM_SAMPLING + " add_special_tokens response_format prompt_embeds"
OPENAI_EMBEDDINGS = "input model dimensions encoding_format user"
VLLM_EMBEDDINGS = (
    "add_special_tokens truncate_prompt_tokens priority request_id normalize embed_dtype "
    "mm_processor_kwargs"
)
OPENAI_MESSAGE = "role content name tool_calls tool_call_id refusal audio function_call"


def endpoints_table() -> list[str]:
    from starlette.routing import Route

    from pagoda.engine.server.lora import router as lora_router
    from pagoda.engine.server.routes import router

    # Only a Route has methods; the others (websockets, mounts) would add no row anyway.
    routes = [r for r in router.routes + lora_router.routes if isinstance(r, Route)]
    ours = {(m, r.path) for r in routes for m in getattr(r, "methods", ())}
    rows = [f"| `{m} {p}` | {'yes' if (m, p) in ours else 'no'} |" for m, p in VLLM_ENDPOINTS]
    return ["| endpoint | Pagoda |", "| --- | --- |", *rows]


def flags_table() -> list[str]:
    from pagoda.engine.cli import add_serve_args
    from pagoda.engine.vllm_flags import VllmFlagAction

    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    rows = ["| `--config` | yes: a YAML file of flags, the command line winning |"]
    for action in parser._actions:
        flags = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        if not flags:
            continue
        if not isinstance(action, VllmFlagAction):
            status = FLAG_NOTES.get(flags[0], "yes")
        elif action.spec.accepted:
            values = action.spec.accepted_values
            only = f" (only {', '.join(values)})" if values else ""
            status = f"yes{only}, no effect: {action.spec.why}"
        else:
            status = f"no, refused at start: {action.spec.why}"
        rows.append(f"| `{flags[0]}` | {status} |")
    return ["| flag | Pagoda |", "| --- | --- |", *rows]


def fields_table(model: type[BaseModel], openai: str, vllm: str) -> list[str]:
    from pagoda.engine.server.protocol import IGNORED_FIELDS

    ours = set(model.model_fields)
    rows = []
    for source, names in (("OpenAI", openai.split()), ("vLLM", vllm.split())):
        for name in sorted(set(names)):
            if name in ours:
                status = "yes"
            elif name in IGNORED_FIELDS:
                status = "accepted, no effect"
            else:
                status = "no (400)"
            rows.append(f"| `{name}` | {source} | {status} |")
    extra = sorted(ours - set(openai.split()) - set(vllm.split()))
    rows += [f"| `{name}` | Pagoda | yes |" for name in extra]
    return ["| field | from | Pagoda |", "| --- | --- | --- |", *rows]


def render() -> str:
    from pagoda.engine.server.protocol import (
        IGNORED_FIELDS,
        ChatCompletionRequest,
        ChatMessage,
        CompletionRequest,
        EmbeddingRequest,
    )

    out = [
        "# Compatibility with vLLM and OpenAI",
        "",
        "Generated by `python -m pagoda.engine.compat`; a unit test keeps it current.",
        "",
        "A request field marked `no (400)` is refused with HTTP 400 in OpenAI's error shape, naming",
        "the field; a field sent as `null` counts as not sent. The fields OpenAI documents as not",
        f"changing the output are accepted without effect: {', '.join(IGNORED_FIELDS)}.",
        "A `vllm serve` flag marked `no` stops the server at start with one line naming it.",
        "",
        "Differences within supported fields: in `prompt_logprobs`, `rank` is exact for the top k",
        "and a prompt token below them is ranked k + 1; with `tool_choice` `auto` or `required`",
        "a streamed choice's `tool_calls` deltas come at its end (its whole text decides between",
        "content and calls), while a named tool's arguments stream as they are generated.",
        "",
        "## Endpoints",
        "",
        *endpoints_table(),
        "",
        "## `vllm serve` flags",
        "",
        *flags_table(),
        "",
        "## `POST /v1/chat/completions` fields",
        "",
        *fields_table(ChatCompletionRequest, OPENAI_CHAT, VLLM_CHAT),
        "",
        "### Message fields",
        "",
        *fields_table(ChatMessage, OPENAI_MESSAGE, ""),
        "",
        "## `POST /v1/completions` fields",
        "",
        *fields_table(CompletionRequest, OPENAI_COMPLETIONS, VLLM_COMPLETIONS),
        "",
        "## `POST /v1/embeddings` fields",
        "",
        "Served by a model started with `--runner pooling` (a generating model answers 400).",
        "",
        *fields_table(EmbeddingRequest, OPENAI_EMBEDDINGS, VLLM_EMBEDDINGS),
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
