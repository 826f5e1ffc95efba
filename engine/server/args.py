"""The server's own flags; kept apart from the app so `pagoda --help` imports no web stack."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

API_KEY_ENV = ("PAGODA_API_KEY", "VLLM_API_KEY")
DEFAULT_MAX_BODY_BYTES = 4 << 20  # a full 128k-token prompt as JSON token ids is under 1 MiB


def add_server_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("HTTP server")
    g.add_argument("--host", default="0.0.0.0")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on the API (else ${API_KEY_ENV[0]} or ${API_KEY_ENV[1]})",
    )
    g.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight requests may take to finish after SIGTERM",
    )
    g.add_argument(
        "--models-config",
        default=None,
        help="YAML or JSON file with `models:`, a list of engine settings (flag names), "
        "served alongside any --model",
    )
    g.add_argument(
        "--chat-template",
        default=None,
        help="the chat template (a Jinja file, or the template itself) in place of the model's",
    )
    g.add_argument(
        "--enable-auto-tool-choice",
        action="store_true",
        help='tool_choice "auto": read the model\'s own tool calls with --tool-call-parser',
    )
    g.add_argument(
        "--tool-call-parser",
        default=None,
        choices=["hermes", "llama3_json", "mistral"],
        help="the model family's tool-call format (hermes: Qwen 2.5/3, Hermes)",
    )
    g.add_argument(
        "--root-path",
        default="",
        help="path prefix a proxy forwards unchanged (an Ingress path like /m1); routes answer under it",
    )
    g.add_argument(
        "--allowed-origins", nargs="*", default=None, help="CORS origins allowed to call the API"
    )
    g.add_argument(
        "--max-request-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies are refused with 413 before they are read",
    )
    g.add_argument(
        "--max-waiting-requests",
        type=int,
        default=None,
        help="per model: requests that wait for their first token beyond this get 429 with "
        "Retry-After (default: no bound)",
    )
    g.add_argument(
        "--trust-request-chat-template",
        action="store_true",
        help="let a request bring its own chat template (chat_template_kwargs.chat_template); "
        "off, such requests get 400",
    )
    g.add_argument(
        "--uvicorn-log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    return parser


def load_chat_template(value: str | None) -> str | None:
    """--chat-template as vLLM reads it: a file's text if the value names a file, else itself."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    if any(c in value for c in "{%"):
        return value
    raise ValueError(f"--chat-template: no such file {value}, and not a Jinja template either")


def tool_call_parser(args: argparse.Namespace) -> str | None:
    """The parser of tool_choice "auto", None when the server does not offer it."""
    if args.enable_auto_tool_choice != (args.tool_call_parser is not None):
        raise ValueError("--enable-auto-tool-choice and --tool-call-parser go together")
    parser: str | None = args.tool_call_parser
    return parser


def resolve_api_key(flag: str | None) -> str | None:
    """--api-key, else the first of API_KEY_ENV that is set; None: the API is open."""
    return flag or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)


@dataclass(frozen=True)
class RequestPolicy:
    """What the server accepts of a request before any engine sees it (the flags above)."""

    max_request_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_waiting_requests: int | None = None
    trust_request_chat_template: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RequestPolicy:
        if args.max_request_body_bytes < 1:
            raise SystemExit("--max-request-body-bytes must be at least 1")
        if args.max_waiting_requests is not None and args.max_waiting_requests < 0:
            raise SystemExit("--max-waiting-requests must be at least 0")
        return cls(
            args.max_request_body_bytes,
            args.max_waiting_requests,
            args.trust_request_chat_template,
        )
