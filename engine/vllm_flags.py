"""`vllm serve` flags that Pagoda has no code for: each is either already Pagoda's behaviour (so it
is accepted and changes nothing) or refused with one line naming it. None is silently ignored, and
none is an argparse crash, so a vLLM command line or an InferenceService carrying vLLM flags either
works or says exactly which flag stops it.

Flags Pagoda implements are the ones its parser already has (engine/args.py, server/args.py);
`add_vllm_flags` only adds the ones below that the parser does not have, so that a flag implemented
later simply wins over its entry here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VllmFlag:
    flag: str  # the long option, as vLLM spells it
    takes_value: bool
    # Accepted: why the flag already holds in Pagoda. Refused: what Pagoda lacks.
    why: str
    accepted: bool = False
    # For a valued flag that Pagoda accepts: the values that mean what Pagoda does; others refused.
    accepted_values: tuple[str, ...] = ()


def _accepted(flag: str, why: str, values: tuple[str, ...] = ()) -> VllmFlag:
    return VllmFlag(flag, bool(values), why, accepted=True, accepted_values=values)


def _refused(flag: str, why: str, takes_value: bool = True) -> VllmFlag:
    return VllmFlag(flag, takes_value, why)


VLLM_FLAGS: tuple[VllmFlag, ...] = (
    _accepted(
        "--trust-remote-code", "Pagoda runs only its own model code; it allows, never needs it"
    ),
    _accepted("--enable-chunked-prefill", "Pagoda always chunks long prefills"),
    _accepted("--disable-log-requests", "Pagoda does not log requests"),
    _accepted("--disable-log-stats", "Pagoda does not log periodic stats (they are on /metrics)"),
    _accepted("--disable-custom-all-reduce", "Pagoda has no custom all-reduce"),
    _accepted("--disable-cascade-attn", "Pagoda has no cascade attention"),
    _accepted("--enable-prompt-tokens-details", "usage always has prompt_tokens_details"),
    _accepted("--tokenizer-mode", "Hugging Face tokenizers", ("auto", "hf")),
    _accepted("--response-role", "the role of generated messages", ("assistant",)),
    _refused("--no-enable-chunked-prefill", "prefill is always chunked", takes_value=False),
    _refused("--enable-log-requests", "request logging", takes_value=False),
    _refused("--enable-log-outputs", "request logging", takes_value=False),
    _refused("--max-log-len", "request logging"),
    _refused("--data-parallel-size", "data parallelism (run more replicas instead)"),
    _refused("--enable-expert-parallel", "expert parallelism", takes_value=False),
    _refused("--code-revision", "remote model code"),
    _refused("--hf-overrides", "overriding the model's config"),
    _refused("--rope-scaling", "overriding the model's RoPE scaling"),
    _refused("--rope-theta", "overriding the model's RoPE base"),
    _refused("--max-seq-len-to-capture", "CUDA graphs of prefills"),
    _refused("--cpu-offload-gb", "offloading weights to the CPU"),
    _refused("--limit-mm-per-prompt", "multimodal inputs"),
    _refused("--mm-processor-kwargs", "multimodal inputs"),
    _refused("--tool-parser-plugin", "tool-call parsers from plugins"),
    _refused("--reasoning-parser", "reasoning outputs"),
    _refused("--structured-outputs-config", "structured-output settings (the backend is xgrammar)"),
    _accepted("--guided-decoding-backend", "the grammar backend is xgrammar", ("auto", "xgrammar")),
    _refused("--chat-template-content-format", "choosing the content format of chat templates"),
    _refused("--task", "vLLM v0's tasks: embeddings are --runner pooling"),
    _refused("--convert", "converting models other than by --runner pooling (embeddings)"),
    _refused("--override-pooler-config", "the deprecated spelling: use --pooler-config"),
    _refused("--compilation-config", "torch.compile settings"),
    _refused("--kv-transfer-config", "disaggregated prefill"),
    _refused("--kv-events-config", "KV cache events"),
    _refused("--enable-sleep-mode", "sleep mode", takes_value=False),
    _refused("--logprobs-mode", "choosing which logprobs to return (raw logprobs)"),
    _refused("--skip-tokenizer-init", "running without a tokenizer", takes_value=False),
    _refused("--disable-sliding-window", "turning sliding windows off", takes_value=False),
    _refused("--max-num-partial-prefills", "concurrent partial prefills"),
    _refused("--long-prefill-token-threshold", "concurrent partial prefills"),
    _refused("--num-scheduler-steps", "multi-step scheduling (gone from vLLM v1)"),
    _refused("--prefix-caching-hash-algo", "choosing the prefix hash"),
    _refused(
        "--calculate-kv-scales",
        "computing FP8 KV scales at run time (the checkpoint's k_scale/v_scale are read)",
        takes_value=False,
    ),
    _refused("--otlp-traces-endpoint", "OpenTelemetry traces"),
    _refused("--api-server-count", "several API server processes"),
    _refused("--headless", "headless engines", takes_value=False),
    _refused("--disable-frontend-multiprocessing", "choosing the frontend's process", False),
    _refused("--ssl-keyfile", "TLS in the server (terminate TLS at the Ingress)"),
    _refused("--ssl-certfile", "TLS in the server (terminate TLS at the Ingress)"),
    _refused("--ssl-ca-certs", "TLS in the server (terminate TLS at the Ingress)"),
    _refused("--allowed-methods", "CORS settings other than --allowed-origins"),
    _refused("--allowed-headers", "CORS settings other than --allowed-origins"),
    _refused("--allow-credentials", "CORS settings other than --allowed-origins", False),
    _refused("--middleware", "custom ASGI middleware"),
    _refused("--return-tokens-as-token-ids", "token ids in place of token text", False),
    _refused("--disable-fastapi-docs", "turning the API docs off", takes_value=False),
    _refused("--enable-request-id-headers", "X-Request-Id headers", takes_value=False),
    _refused("--enable-force-include-usage", "usage in every stream", takes_value=False),
    _refused("--enable-server-load-tracking", "server load tracking", takes_value=False),
    _refused("--disable-uvicorn-access-log", "turning the access log off", takes_value=False),
    _refused("--max-parallel-loading-workers", "parallel weight loading"),
    _refused("--model-impl", "choosing the model implementation"),
    _refused("--config-format", "choosing the config format"),
)


class VllmFlagAction(argparse.Action):
    """Refuses the flag, or a value outside accepted_values, with one line on stderr, exit 2."""

    def __init__(self, option_strings: Sequence[str], dest: str, spec: VllmFlag, **kw) -> None:
        self.spec = spec
        super().__init__(option_strings, dest, nargs=1 if spec.takes_value else 0, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        spec = self.spec
        if not spec.accepted:
            refuse(f"{spec.flag} is a vLLM flag Pagoda does not support ({spec.why})")
        if spec.accepted_values and values[0] not in spec.accepted_values:
            allowed = ", ".join(spec.accepted_values)
            refuse(f"{spec.flag} {values[0]}: Pagoda supports only {allowed} ({spec.why})")


def refuse(message: str) -> None:
    print(f"pagoda: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_vllm_flags(parser: argparse.ArgumentParser) -> None:
    """The entries of VLLM_FLAGS that `parser` lacks, each with its accept-or-refuse action."""
    group = parser.add_argument_group(
        "vLLM flags without an effect here (accepted where Pagoda already behaves so, else refused)"
    )
    for spec in VLLM_FLAGS:
        if spec.flag in parser._option_string_actions:
            continue
        group.add_argument(
            spec.flag,
            action=VllmFlagAction,
            spec=spec,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            help=("accepted: " if spec.accepted else "refused: ") + spec.why,
        )
