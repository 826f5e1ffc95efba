"""Request and response bodies: OpenAI's shapes plus vLLM's extra sampling fields.

A request field Pagoda does not implement is a 400 naming it, not silently ignored; the only
fields accepted without an effect are those OpenAI's API itself documents as not changing the
output (IGNORED_FIELDS). A field sent as null counts as not sent. Floats reject NaN and infinity
so that no such value reaches the sampler.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_serializer, model_validator

from pagoda.engine.sampling_params import ParamError, SamplingParams
from pagoda.engine.server.structured import ResponseFormat, StructuredOutputsField

# Per-request bounds on lists the engine walks every step (stop strings on each new text) or
# every batch (bias and banned-token tensors); the body limit bounds everything else.
MAX_STOP_STRINGS = 32
MAX_STOP_TOKEN_IDS = 1024
MAX_LOGIT_BIAS = 1024


# Accepted and without effect: OpenAI documents them as bookkeeping that does not change the output
# (end-user ids, stored-completion metadata, caching and routing hints, stream padding).
IGNORED_FIELDS = (
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "include_obfuscation",
)


class Body(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls_and_ignored(cls, data: Any) -> Any:
        """null is "not sent"; an IGNORED_FIELDS entry is accepted and dropped; any other field
        this model lacks is then refused by extra="forbid", naming it."""
        if not isinstance(data, dict):
            return data
        return {
            k: v
            for k, v in data.items()
            if k in cls.model_fields or (v is not None and k not in IGNORED_FIELDS)
        }


class StreamOptions(Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: usage so far in every chunk too


class SamplingFields(Body):
    """Fields shared by chat and completions, OpenAI's and vLLM's."""

    model: str | None = None  # None: the first served model
    # None (not sent): --generation-config's default, else vLLM's (1.0, 1.0, 0, 0.0, 1.0)
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Annotated[dict[str, float], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # vLLM's extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: Annotated[list[int], Field(max_length=MAX_STOP_TOKEN_IDS)] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    priority: int = 0
    cache_salt: str | None = Field(default=None, min_length=1)  # prefix-cache isolation (vLLM)
    allowed_token_ids: list[int] | None = None
    bad_words: Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = None
    prompt_logprobs: int | None = None  # vLLM's: the prompt tokens' logprobs, top k of each
    use_beam_search: bool = False
    best_of: int | None = None  # with use_beam_search: the beam width
    length_penalty: float = 1.0
    # Structured outputs (engine/server/structured.py): OpenAI's, then vLLM's
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsField | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    def sampling_params(
        self, max_tokens: int | None, logprobs: int | None, defaults: dict[str, Any]
    ) -> SamplingParams:
        """Raises ParamError (an HTTP 400) for values SamplingParams rejects. `defaults`: the
        engine's default_sampling_params (--generation-config), for fields not sent; their
        max_tokens caps the request's, as in vLLM."""

        def given(name: str, fallback: float) -> Any:
            value = getattr(self, name)
            return defaults.get(name, fallback) if value is None else value

        cap = defaults.get("max_tokens")
        if cap is not None:
            max_tokens = cap if max_tokens is None else min(max_tokens, cap)
        return SamplingParams(
            n=self.n,
            temperature=given("temperature", 1.0),
            top_p=given("top_p", 1.0),
            top_k=given("top_k", 0),
            min_p=given("min_p", 0.0),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=given("repetition_penalty", 1.0),
            seed=self.seed,
            max_tokens=max_tokens,
            min_tokens=self.min_tokens,
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
            stop_token_ids=list(self.stop_token_ids or []),
            include_stop_str_in_output=self.include_stop_str_in_output,
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            logit_bias=parse_logit_bias(self.logit_bias),
            skip_special_tokens=self.skip_special_tokens,
            allowed_token_ids=self.allowed_token_ids,
            bad_words=list(self.bad_words or []),
            prompt_logprobs=self.prompt_logprobs,
            use_beam_search=self.use_beam_search,
            best_of=self.best_of,
            length_penalty=self.length_penalty,
        )


def parse_logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """JSON keys are strings; SamplingParams bounds the ids and values."""
    if bias is None:
        return None
    out = {}
    for key, value in bias.items():
        try:
            out[int(key)] = value
        except ValueError:
            raise ParamError(
                "logit_bias", f"logit_bias keys must be token ids, got {key!r}"
            ) from None
    return out


class TextPart(Body):
    type: Literal["text"]
    text: str


class FunctionCall(Body):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema
    strict: bool | None = None


class Tool(Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: NamedFunction


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's calls, sent back with the results
    tool_call_id: str | None = None  # a tool message: the call it answers

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    # None: "auto" when tools are given, else "none" (OpenAI's defaults)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True


class CompletionRequest(SamplingFields):
    # Left to right, token ids first: pydantic's default (smart) union validates every member,
    # and a list of 400k ids costs a second of the GIL where it costs a fifth.
    prompt: Annotated[
        str | list[StrictInt] | list[str] | list[list[StrictInt]],
        Field(union_mode="left_to_right"),
    ]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False


class EmbeddingRequest(Body):
    """OpenAI's embeddings request, plus vLLM's extras normalize and priority."""

    model: str | None = None
    input: Annotated[
        str | list[StrictInt] | list[str] | list[list[StrictInt]],
        Field(union_mode="left_to_right"),
    ]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    normalize: bool | None = None  # None: as the model's pooler config says
    priority: int = 0


class TokenizeRequest(Body):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(Body):
    model: str | None = None
    tokens: list[int]


# Responses. Built as plain models so that `model_dump(exclude_none=False)` gives OpenAI's keys.


def now() -> int:
    return int(time.time())


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]  # None: the first prompt token (echo), which has no context
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class PromptLogprob(BaseModel):
    """vLLM's Logprob, one entry of prompt_logprobs (keyed by token id)."""

    logprob: float
    rank: int  # 1 for the likeliest; a prompt token below the top k is given rank k + 1
    decoded_token: str


PromptLogprobs = list[dict[str, PromptLogprob] | None]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None
    stop_reason: int | str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: PromptLogprobs | None = None  # vLLM's, when the request asks for them


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class DeltaToolCall(BaseModel):
    """One streamed piece of a tool call: the first carries id, type and the function's name, the
    next ones only arguments fragments (OpenAI's chunks omit the keys they do not carry)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_tool_calls(self, handler: Any) -> dict[str, Any]:
        """A chunk carries tool_calls only when it has some, as OpenAI's do."""
        data: dict[str, Any] = handler(self)
        if self.tool_calls is None:
            data.pop("tool_calls", None)
        return data


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: PromptLogprobs | None = None  # vLLM's, when the request asks for them


class CompletionResponse(BaseModel):
    """Both the whole response and one streamed chunk: OpenAI uses one shape for both."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingData(BaseModel):
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # a string: base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[EmbeddingData]
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "pagoda"
    root: str
    parent: str | None = None
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape (errors.error_body)."""

    error: ErrorDetail


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class VersionResponse(BaseModel):
    version: str
