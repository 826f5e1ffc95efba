"""A fake engine that keeps AsyncLLM's contract, over a tiny byte-level tokenizer: server tests in
milliseconds, with no model. It writes a fixed script, honours max_tokens, stop strings and
logprobs, and accounts KV blocks so that tests can see aborts free them."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import uvicorn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from pagoda.engine.config import EngineConfig
from pagoda.engine.outputs import CompletionOutput, RequestOutput
from pagoda.engine.request_rules import RequestLimits, check_request
from pagoda.engine.sampling_params import SamplingParams

SCRIPT = "The quick brown fox jumps over the lazy dog. "
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab |= {"<|im_start|>": 256, "<|im_end|>": 257}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        chat_template=CHAT_TEMPLATE,
    )


TOKENIZER = make_tokenizer()


class FakeAsyncLLM:
    block_size = 16

    def __init__(
        self,
        name: str = "fake",
        max_model_len: int = 256,
        total_blocks: int = 256,
        step_delay: float = 0.0,
        scheduling_policy: str = "fcfs",
    ) -> None:
        self.config = EngineConfig(
            model=f"/models/{name}",
            served_model_name=name,
            max_num_seqs=8,
            scheduling_policy=scheduling_policy,
        )
        self.tokenizer = TOKENIZER
        self.max_model_len = max_model_len
        self.limits = RequestLimits(max_model_len, self.config.max_num_seqs, len(TOKENIZER))
        self.default_sampling_params: dict = {}
        self.total_blocks, self.free_blocks = total_blocks, total_blocks
        self.step_delay = step_delay
        self.healthy = True
        self.started = self.stopped = False
        self.requests: list[tuple[list[int], SamplingParams, str, int]] = []
        self.aborted: list[str] = []
        self.cache_salts: list[str | None] = []
        self.finished: list[str] = []
        self.active = self.max_active = 0
        self.wedge_after: int | None = (
            None  # steps; then the "loop" hangs and reports itself unhealthy
        )

    async def start(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.stopped = True

    def is_healthy(self) -> bool:
        return self.healthy

    def num_waiting(self) -> int:
        return 0

    def num_free_blocks(self) -> int:
        return self.free_blocks

    def num_total_blocks(self) -> int:
        return self.total_blocks

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def generate(
        self,
        prompt,
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
        cache_salt: str | None = None,
        lora_request=None,
    ):
        assert isinstance(prompt, list), "the server hands the engine token ids"
        assert lora_request is None, "the fake serves no adapters"
        check_request(prompt, params, self.limits)
        if params.max_tokens is None:
            params = replace(params, max_tokens=self.max_model_len - len(prompt))
        self.requests.append((prompt, params, request_id, priority))
        self.cache_salts.append(cache_salt)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        blocks = params.n * math.ceil((len(prompt) + params.max_tokens) / self.block_size)
        self.free_blocks -= blocks
        outs = [
            CompletionOutput(
                index=i, text="", token_ids=[], logprobs=[] if params.logprobs is not None else None
            )
            for i in range(params.n)
        ]
        script = SCRIPT.encode()
        try:
            for step in range(params.max_tokens):
                await asyncio.sleep(self.step_delay)
                if step == self.wedge_after:
                    self.healthy = False
                    await asyncio.Event().wait()
                deltas = []
                for o in outs:
                    if o.finished:
                        deltas.append(("", []))
                        continue
                    byte = script[(step + o.index + (params.seed or 0)) % len(script)]
                    tid = self.tokenizer.convert_tokens_to_ids(BYTE_CHARS[byte])
                    prev = o.text
                    o.token_ids.append(tid)
                    o.text += chr(byte)
                    if o.logprobs is not None:
                        top = {tid: -0.25} | {
                            t: -1.0 - t / 1000 for t in range(params.logprobs) if t != tid
                        }
                        o.logprobs.append(top)
                    hit = next((s for s in params.stop if s in o.text), None)
                    if hit is not None:
                        o.text = o.text[
                            : o.text.index(hit)
                            + (len(hit) if params.include_stop_str_in_output else 0)
                        ]
                        o.finish_reason, o.stop_reason = "stop", hit
                    elif len(o.token_ids) == params.max_tokens:
                        o.finish_reason = "length"
                    deltas.append((o.text[len(prev) :], [tid]))
                done = all(o.finished for o in outs)
                yield RequestOutput(
                    request_id=request_id,
                    prompt=None,
                    prompt_token_ids=list(prompt),
                    outputs=[CompletionOutput(**vars(o)) for o in outs],
                    finished=done,
                    num_cached_tokens=3,
                    deltas=deltas,
                )
                if done:
                    self.finished.append(request_id)
                    return
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request_id)
            raise
        finally:
            self.free_blocks += blocks
            self.active -= 1


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map that ByteLevel uses."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHARS = bytes_to_unicode()


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
