"""The OpenAI-compatible server with the real default model, driven by the official `openai` client.

One `pagoda serve` process for the module, with an API key. The last test drains it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.integration

MODEL, KEY, MAX_LEN = "smol", "test-key", 512
MSGS = [{"role": "user", "content": "What is the capital of France?"}]


# Every test runs against both engine loops: the synchronous one, and async scheduling (a step
# launched before the last one's tokens are back: stops found one token late, streams, aborts).
@pytest.fixture(
    scope="module", params=[[], ["--async-scheduling"]], ids=["sync", "async-scheduling"]
)
def server(request):
    proc = ServerProcess(
        "--served-model-name",
        MODEL,
        "--max-model-len",
        str(MAX_LEN),
        "--max-num-seqs",
        "8",
        "--api-key",
        KEY,
        "--shutdown-timeout",
        "60",
        *request.param,
    )
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture
def aclient(server):
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def sample(m: dict, name: str, **labels) -> float:
    return m.get(
        (name, tuple(sorted(({"model_name": MODEL, "engine": "0"} | labels).items()))), 0.0
    )


def tokenize(server: ServerProcess, text: str) -> list[int]:
    return httpx.post(
        f"{server.url}/tokenize", json={"prompt": text}, headers={"Authorization": f"Bearer {KEY}"}
    ).json()["tokens"]


def wait_idle(server: ServerProcess, timeout: float = 20.0) -> dict:
    """Metrics once nothing runs and the KV pool is free again."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if (
            sample(m, "vllm:num_requests_running") == 0
            and sample(m, "vllm:num_requests_waiting") == 0
            and sample(m, "vllm:kv_cache_usage_perc") == 0
        ):
            return m
        assert time.monotonic() < deadline, f"engine not idle: {m}"
        time.sleep(0.1)


def test_models_tokenize_version(server, client):
    [card] = client.models.list().data
    assert card.id == MODEL and card.model_extra["max_model_len"] == MAX_LEN
    tokens = tokenize(server, "Hello world")
    assert tokens
    detok = httpx.post(
        f"{server.url}/detokenize",
        json={"tokens": tokens},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    assert detok["prompt"] == "Hello world"
    assert httpx.get(f"{server.url}/version").json()["version"]


def test_chat_greedy_whole_and_streamed_agree(client):
    whole = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=12, temperature=0)
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert "Paris" in choice.message.content
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 10
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MSGS,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == [choice.finish_reason]
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )


async def test_async_chat_and_completions_concurrently(aclient):
    async def chat_stream() -> str:
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=MSGS, max_tokens=8, temperature=0, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def completion() -> str:
        r = await aclient.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0
        )
        return r.choices[0].text

    texts = await asyncio.gather(chat_stream(), completion(), chat_stream(), completion())
    assert texts[0] == texts[2] and texts[1] == texts[3] and all(texts)


def test_completions_forms_and_n(server, client):
    text = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert text.object == "text_completion" and text.choices[0].text
    ids = tokenize(server, "1, 2, 3, 4,")
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == text.choices[0].text
    batch = client.completions.create(
        model=MODEL, prompt=["1, 2, 3, 4,", "Hello"], max_tokens=4, n=2, temperature=1.0, seed=7
    )
    assert sorted(c.index for c in batch.choices) == [0, 1, 2, 3]
    assert batch.usage.prompt_tokens == len(ids) + len(tokenize(server, "Hello"))
    assert 4 <= batch.usage.completion_tokens <= 16
    streamed = client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text.choices[0].text


def test_n_choices_differ_and_seeds_repeat(client):
    kw = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=8,
        temperature=1.5,
        n=3,
    )  # hot enough that three samples of 8 tokens differ
    a = client.chat.completions.create(seed=1234, **kw)
    b = client.chat.completions.create(seed=1234, **kw)
    c = client.chat.completions.create(seed=99, **kw)
    texts = lambda r: [ch.message.content for ch in sorted(r.choices, key=lambda ch: ch.index)]  # noqa: E731
    assert [ch.index for ch in a.choices] == [0, 1, 2]
    assert texts(a) == texts(b), "the same seed must give the same samples"
    assert texts(a) != texts(c)
    assert len(set(texts(a))) > 1, "n samples of one seed should differ"


def test_stop_string(client):
    base = (
        client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
        .choices[0]
        .text
    )
    stop = base.strip()[2:4]
    assert stop, base
    r = client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[stop]
    )
    assert r.choices[0].finish_reason == "stop" and stop not in r.choices[0].text
    assert base.startswith(r.choices[0].text)
    assert r.choices[0].model_extra["stop_reason"] == stop


def test_chat_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL, messages=MSGS, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        tops = [x.logprob for x in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert t.logprob == pytest.approx(tops[0], abs=1e-4), "greedy picks the most likely token"
        assert t.logprob <= 0 and t.bytes == list(t.token.encode())


def test_completion_logprobs(client):
    r = client.completions.create(
        model=MODEL, prompt="The sky is", max_tokens=4, temperature=0, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert (
        len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    )
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert 1 <= len(top) <= 2 and chosen == pytest.approx(max(top.values()), abs=1e-4)


def test_echo_with_logprobs_leads_with_the_prompt(server, client):
    prompt = "The sky is"
    ids = tokenize(server, prompt)
    kw = dict(model=MODEL, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=1)
    r = client.completions.create(**kw, extra_body={"prompt_logprobs": 1})
    c = r.choices[0]
    lp = c.logprobs
    assert c.text.startswith(prompt) and "".join(lp.tokens) == c.text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(ids) + 3
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    prompt_lps = c.model_extra["prompt_logprobs"]  # vLLM's field: {token id: {logprob, rank, ...}}
    assert len(prompt_lps) == len(ids) and prompt_lps[0] is None
    for j in range(1, len(ids)):
        entry = prompt_lps[j][str(ids[j])]
        assert lp.token_logprobs[j] == pytest.approx(entry["logprob"], abs=1e-5)
        assert entry["rank"] >= 1 and entry["decoded_token"] == lp.tokens[j]
    streamed = client.completions.create(**kw, stream=True)
    tokens = [t for chunk in streamed for t in chunk.choices[0].logprobs.tokens]
    assert tokens == lp.tokens


def test_chat_prompt_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL, messages=MSGS, max_tokens=2, extra_body={"prompt_logprobs": 0}
    )
    prompt_lps = r.model_extra["prompt_logprobs"]
    assert len(prompt_lps) == r.usage.prompt_tokens and prompt_lps[0] is None
    assert all(len(entry) == 1 for entry in prompt_lps[1:])  # only the prompt's own token


def test_bad_words_keep_a_word_out(client):
    kw = dict(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert "Paris" in client.completions.create(**kw).choices[0].text
    banned = client.completions.create(**kw, extra_body={"bad_words": ["Paris"]})
    assert "Paris" not in banned.choices[0].text


@pytest.mark.parametrize(
    "kw,param",
    [
        (dict(max_tokens=-1), "max_tokens"),
        (dict(temperature=-1.0), "temperature"),
        (dict(n=0), "n"),
        (dict(max_tokens=MAX_LEN), "max_tokens"),
        (dict(messages=[]), "messages"),
        (dict(messages=[{"role": "user", "content": "word " * MAX_LEN}]), "prompt"),
    ],
)
def test_bad_requests_are_400(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**(dict(model=MODEL, messages=MSGS, max_tokens=4) | kw))
    assert e.value.status_code == 400 and e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error" and e.value.body["message"]


def test_unknown_model_404_and_bad_key_401(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=MSGS, max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200, "probes need no key"


@pytest.mark.parametrize(
    "content,ctype",
    [
        (b'{"model": "smol", "messages": [', "application/json"),
        (b'{"model": "smol"}', "text/plain"),
    ],
)
def test_malformed_json_and_wrong_content_type_are_400(server, content, ctype):
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {KEY}", "content-type": ctype},
    )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_metrics_move_with_requests(server, client):
    before = wait_idle(server)
    r = client.completions.create(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=7,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.usage.completion_tokens == 7
    after = wait_idle(server)

    def delta(name: str, **labels) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("vllm:prompt_tokens_total") == r.usage.prompt_tokens
    assert delta("vllm:generation_tokens_total") == 7
    assert delta("vllm:request_success_total", finished_reason="length") == 1
    for hist in (
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
    ):
        assert delta(f"{hist}_count") == 1, hist
    assert delta("vllm:inter_token_latency_seconds_count") == 6
    assert delta("vllm:request_generation_tokens_sum") == 7
    assert delta("vllm:e2e_request_latency_seconds_sum") > 0
    assert sample(after, "vllm:time_to_first_token_seconds_bucket", le="0.001") <= sample(
        after, "vllm:time_to_first_token_seconds_bucket", le="2560.0"
    )


@pytest.mark.parametrize("n", [1, 3])
def test_disconnect_mid_stream_frees_the_kv_pool(server, n):
    """With n > 1 the samples share the prompt's blocks: all of them must come back."""
    before = wait_idle(server)
    seen_busy = False
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": MODEL,
            "prompt": "Count: 1, 2, 3,",
            "max_tokens": 400,
            "ignore_eos": True,
            "n": n,
            "temperature": 1.0,
            "stream": True,
        },
        timeout=60,
    ) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 6:
                m = server.metrics()
                seen_busy = (
                    sample(m, "vllm:kv_cache_usage_perc") > 0
                    and sample(m, "vllm:num_requests_running") > 0
                )
                break
    assert seen_busy, "the request held KV blocks while it ran"
    after = wait_idle(server)  # the pool is empty again: the abort freed every block
    aborted = sample(after, "vllm:request_success_total", finished_reason="abort") - sample(
        before, "vllm:request_success_total", finished_reason="abort"
    )
    assert aborted == n  # one per sample, as vLLM v1 counts the child requests it fans n out into


def test_sigterm_drains_in_flight_then_exits_0(server):
    """Last in the module: it ends the server."""
    result: dict = {}

    def long_request() -> None:
        with httpx.stream(
            "POST",
            f"{server.url}/v1/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={
                "model": MODEL,
                "prompt": "Count: 1, 2, 3,",
                "max_tokens": 24,
                "ignore_eos": True,
                "stream": True,
            },
            timeout=60,
        ) as r:
            result["lines"] = [line for line in r.iter_lines() if line]

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.monotonic() + 20
    while sample(server.metrics(), "vllm:num_requests_running") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.terminate()
    time.sleep(0.3)
    late = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": MODEL, "prompt": "x"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
    t.join(timeout=60)
    assert result["lines"][-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in result["lines"][-2].replace(" ", ""), result["lines"][-2]
    assert server.proc.wait(timeout=30) == 0, server.output()
