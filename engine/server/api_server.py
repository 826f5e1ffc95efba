"""The OpenAI-compatible server: the FastAPI app over one or more engines, and running it.

`pagoda serve` (engine/cli.py) adds `add_server_args` (server/args.py) to its parser and calls `run_server`.
SIGTERM (or Ctrl-C) starts a drain: new requests get 503, those in flight may finish within
--shutdown-timeout, then the engines shut down and the process exits 0. A second Ctrl-C forces it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, cast

import uvicorn
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from pagoda.engine.config import EngineConfig
from pagoda.engine.server.args import (
    RequestPolicy,
    load_chat_template,
    resolve_api_key,
    tool_call_parser,
)
from pagoda.engine.server.errors import install_error_handlers
from pagoda.engine.server.lora import ServedLoRAs
from pagoda.engine.server.lora import router as lora_router
from pagoda.engine.server.middleware import BodyLimitMiddleware, GateMiddleware, Lifecycle
from pagoda.engine.server.openapi import install_openapi
from pagoda.engine.server.routes import router

if TYPE_CHECKING:
    from pagoda.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)

TEST_HOOKS_ENV = (
    "PAGODA_TEST_HOOKS"  # "1" mounts /debug routes for the integration tests; never in production
)


def build_app(
    engines: dict[str, AsyncLLM],
    api_key: str | None = None,
    allowed_origins: list[str] | None = None,
    test_hooks: bool = False,
    root_path: str = "",
    policy: RequestPolicy | None = None,
) -> FastAPI:
    """`engines` maps served model name -> AsyncLLM; the first is the default model.

    `root_path`: the path prefix a proxy passes through unchanged (an Ingress path such as /m1):
    routes answer under it as well as without it."""
    if not engines:
        raise ValueError("build_app needs at least one engine")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncGenerator[None, None]:
        for engine in engines.values():
            await engine.start()
        # Everything loaded so far (the model, torch, transformers) lives as long as the server:
        # out of the collector's sight, a full collection that a big request's allocations set
        # off takes milliseconds instead of holding the event loop for a second (as vLLM does).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for engine in engines.values():
                await engine.shutdown()

    app = FastAPI(title="Pagoda OpenAI-compatible server", lifespan=lifespan, root_path=root_path)
    app.state.engines = engines
    app.state.lifecycle = Lifecycle()
    app.state.policy = policy = policy or RequestPolicy()
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(router)
    app.include_router(lora_router)
    app.state.loras = ServedLoRAs.from_engines(engines)  # type: ignore[arg-type]  # as state.engines
    if test_hooks:
        from pagoda.engine.server.fault_hooks import install

        install(app, engines)
    app.add_middleware(BodyLimitMiddleware, max_bytes=policy.max_request_body_bytes)
    app.add_middleware(GateMiddleware, lifecycle=app.state.lifecycle, api_key=api_key)
    if allowed_origins:
        # Credentials (cookies, Authorization) never with any origin: a page on any site could
        # then call the API as the browser's user.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=allowed_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials="*" not in allowed_origins,
        )
    return app


def load_model_configs(path: str) -> list[EngineConfig]:
    """The --models-config file: `models: [{model: ..., served-model-name: ..., max-model-len: ...}, ...]`."""
    text = Path(path).read_text()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ValueError(f"{path}: expected a mapping with a list under `models`")
    known = {f.name for f in fields(EngineConfig)}
    configs = []
    for entry in data["models"]:
        kw = {k.replace("-", "_"): v for k, v in entry.items()}
        unknown = set(kw) - known
        if unknown:
            raise ValueError(f"{path}: unknown engine settings {sorted(unknown)}")
        configs.append(EngineConfig(**kw))
    return configs


# After the drain's deadline, the time open requests have to write their last chunk.
CUT_GRACE_S = 2.0


class DrainingServer(uvicorn.Server):
    """uvicorn, except that SIGTERM first drains instead of closing the listening socket at once."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout: float) -> None:
        super().__init__(config)
        self.lifecycle, self.drain_timeout = lifecycle, drain_timeout
        self.drain_deadline: float | None = None
        self.engines: dict[str, AsyncLLM] = cast(FastAPI, config.app).state.engines
        self.exit_code, self.dead_since = 0, 0.0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's handler: it would re-raise the signal after shutdown and so not exit 0.
        if self.drain_deadline is not None and sig == signal.SIGINT:
            self.force_exit = self.should_exit = True
            return
        if self.drain_deadline is None:
            log.info(
                "signal %d: draining %d in-flight request(s), at most %.0fs",
                sig,
                self.lifecycle.in_flight,
                self.drain_timeout,
            )
            self.lifecycle.draining = True
            self.drain_deadline = time.monotonic() + self.drain_timeout

    async def on_tick(self, counter: int) -> bool:
        # An engine whose workers failed can never step again: exit non-zero, to be restarted.
        dead = [
            n for n, e in self.engines.items() if getattr(getattr(e, "error", None), "fatal", 0)
        ]
        if dead and self.exit_code == 0:
            log.error("engine %s died: %r; exiting", dead[0], self.engines[dead[0]].error)
            self.exit_code, self.dead_since = 1, time.monotonic()
        dead_for = time.monotonic() - self.dead_since
        if self.exit_code and dead_for > 1.0 and (self.lifecycle.in_flight == 0 or dead_for > 5.0):
            return True  # a second to answer /health (503), and the requests in flight (errors)
        if self.drain_deadline is not None:
            if self.lifecycle.in_flight == 0:
                return True
            now = time.monotonic()
            if now >= self.drain_deadline and not self.lifecycle.cut.is_set():
                log.warning(
                    "drain timeout: ending %d in-flight request(s) with finish_reason abort",
                    self.lifecycle.in_flight,
                )
                self.lifecycle.cut.set()
            if now >= self.drain_deadline + CUT_GRACE_S:
                log.warning("cancelling %d request(s) still open", self.lifecycle.in_flight)
                return True
        return await super().on_tick(counter)


def run_server(configs: list[EngineConfig], args: argparse.Namespace) -> int:
    """Load every model, serve until SIGTERM, drain, exit code 0."""
    from pagoda.engine.async_llm import AsyncLLM

    if (
        args.models_config
    ):  # the file's models, plus those named on the command line (not the default)
        named = getattr(args, "model", None) or getattr(args, "model_positional", None)
        configs = (list(configs) if named else []) + load_model_configs(args.models_config)
    names = [name for c in configs for name in c.served_names]
    if not configs or len(set(names)) != len(names):
        raise SystemExit(f"serve needs one or more models with distinct served names, got {names}")
    check_port_free(args.host, args.port)  # before minutes of loading, not after
    template = load_chat_template(args.chat_template)
    parser = tool_call_parser(args)
    engines = {}
    for config in configs:
        config.validate()
        engines[config.name] = AsyncLLM.from_config(config)
        if template is not None:
            engines[config.name].tokenizer.chat_template = template
    app = build_app(
        engines,
        resolve_api_key(args.api_key),
        args.allowed_origins,
        test_hooks=os.environ.get(TEST_HOOKS_ENV) == "1",
        root_path=args.root_path,
        policy=RequestPolicy.from_args(args),
    )
    app.state.tool_call_parser = parser
    return serve_app(app, args.host, args.port, args.shutdown_timeout, args.uvicorn_log_level)


def check_port_free(host: str, port: int) -> None:
    """ValueError (a one-line CLI error) when the HTTP port cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def serve_app(
    app: FastAPI, host: str, port: int, shutdown_timeout: float, log_level: str = "info"
) -> int:
    """Serve a built app until a signal, then drain; 0 once the engines have shut down."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=1,
        timeout_keep_alive=5,
    )
    server = DrainingServer(config, app.state.lifecycle, shutdown_timeout)
    server.run()
    return server.exit_code
