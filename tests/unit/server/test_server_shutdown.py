"""SIGTERM drains: a real process serving the fake engine, so no model is loaded."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from pagoda.engine.server.api_server import load_model_configs
from pagoda.engine.server.args import add_server_args, resolve_api_key

SERVE_FAKE = """
import sys
from server_fakes import FakeAsyncLLM
from pagoda.engine.server.api_server import build_app, serve_app
engine = FakeAsyncLLM(step_delay={step_delay})
code = serve_app(build_app({{"fake": engine}}), "127.0.0.1", {port}, shutdown_timeout={timeout}, log_level="warning")
print("EXIT", code, "ABORTED", len(engine.aborted), "FINISHED", len(engine.finished), "STOPPED", engine.stopped,
      "FREE", engine.free_blocks == engine.total_blocks, flush=True)
sys.exit(code)
"""


def start_fake_server(timeout: float, step_delay: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = SERVE_FAKE.format(port=port, timeout=timeout, step_delay=step_delay)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stdout.read() if proc.poll() else "slow"
        )
        time.sleep(0.05)


def stream_in_thread(url: str, max_tokens: int) -> tuple[threading.Thread, dict]:
    """A streamed request in a thread; returns once its first chunk has arrived."""
    out: dict = {"lines": []}
    streaming = threading.Event()

    def run() -> None:
        try:
            with httpx.stream(
                "POST",
                f"{url}/v1/completions",
                timeout=30,
                json={"prompt": "x", "max_tokens": max_tokens, "stream": True},
            ) as r:
                for line in r.iter_lines():
                    streaming.set()
                    if line:
                        out["lines"].append(line)
        except httpx.HTTPError as e:
            out["error"] = e
        streaming.set()

    t = threading.Thread(target=run)
    t.start()
    assert streaming.wait(timeout=20) and "error" not in out
    return t, out


def test_sigterm_finishes_in_flight_refuses_new_exits_0():
    proc, url = start_fake_server(timeout=30, step_delay=0.05)
    t, out = stream_in_thread(url, max_tokens=30)  # 1.5 s of steps
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    late = httpx.post(f"{url}/v1/completions", json={"prompt": "x"})
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
    assert httpx.get(f"{url}/health").status_code == 503
    assert httpx.get(f"{url}/metrics").status_code == 200
    t.join(timeout=30)
    assert out["lines"][-1] == "data: [DONE]" and '"finish_reason":"length"' in out["lines"][-2]
    assert proc.wait(timeout=30) == 0
    assert "EXIT 0 ABORTED 0 FINISHED 1 STOPPED True FREE True" in proc.stdout.read()


def test_drain_timeout_ends_every_request_with_a_reason_and_still_exits_0():
    proc, url = start_fake_server(timeout=0.5, step_delay=0.2)
    t, out = stream_in_thread(url, max_tokens=200)  # 40 s: far longer than the drain allows
    whole: dict = {}

    def non_streamed() -> None:
        body = {"prompt": "x", "max_tokens": 200}
        whole["r"] = httpx.post(f"{url}/v1/completions", json=body, timeout=30)

    w = threading.Thread(target=non_streamed)
    w.start()
    time.sleep(0.5)  # both in flight
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 20
    t.join(timeout=30)
    w.join(timeout=30)
    # Never cut silently: the stream's open choice ends with finish_reason abort, then [DONE].
    assert out["lines"][-1] == "data: [DONE]", out["lines"][-3:]
    last = json.loads(out["lines"][-2].removeprefix("data: "))
    assert [c["finish_reason"] for c in last["choices"]] == ["abort"]
    assert whole["r"].status_code == 503
    assert whole["r"].json()["error"]["code"] == "shutting_down"
    assert "EXIT 0 ABORTED 2 FINISHED 0 STOPPED True FREE True" in proc.stdout.read()


def test_server_args_and_config_file(tmp_path, monkeypatch):
    args = add_server_args(argparse.ArgumentParser()).parse_args(
        ["--port", "9000", "--shutdown-timeout", "5"]
    )
    assert (args.host, args.port, args.shutdown_timeout, args.api_key, args.models_config) == (
        "0.0.0.0",
        9000,
        5.0,
        None,
        None,
    )
    (tmp_path / "m.yaml").write_text(
        "models:\n  - model: default\n    served-model-name: a\n    max_model_len: 128\n"
        "  - {model: /m/other, served_model_name: b}\n"
    )
    a, b = load_model_configs(str(tmp_path / "m.yaml"))
    assert (a.name, a.model, a.max_model_len, b.name) == ("a", "default", 128, "b")
    (tmp_path / "m.json").write_text(json.dumps({"models": [{"model": "x", "max-num-seqs": 3}]}))
    [c] = load_model_configs(str(tmp_path / "m.json"))
    assert c.max_num_seqs == 3
    (tmp_path / "bad.yaml").write_text("models:\n  - model: x\n    max_num_sequences: 3\n")
    with pytest.raises(ValueError, match="max_num_sequences"):
        load_model_configs(str(tmp_path / "bad.yaml"))
    (tmp_path / "bad2.yaml").write_text("- model: x\n")
    with pytest.raises(ValueError, match="models"):
        load_model_configs(str(tmp_path / "bad2.yaml"))


def test_api_key_from_flag_or_environment(monkeypatch):
    monkeypatch.delenv("PAGODA_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert resolve_api_key(None) is None
    monkeypatch.setenv("VLLM_API_KEY", "v")
    assert resolve_api_key(None) == "v"
    monkeypatch.setenv("PAGODA_API_KEY", "p")
    assert resolve_api_key(None) == "p" and resolve_api_key("flag") == "flag"
