"""spec.py: defaults, and the CRD's engine fields -> vLLM-named engine flags."""

import argparse
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from pagoda.engine.cli import add_serve_args
from pagoda.engine.config import EngineConfig
from pagoda.engine.server.args import add_server_args
from pagoda.operator.spec import NOT_FLAGS, engine_args, flag, model_arg, parse

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "inferenceservice.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_flag_names_follow_vllm():
    assert flag("maxNumSeqs") == "--max-num-seqs"
    assert flag("gpuMemoryUtilization") == "--gpu-memory-utilization"
    assert flag("dtype") == "--dtype"


def test_every_crd_engine_field_is_an_engine_config_field_or_a_server_flag():
    """maxNumSeqs <-> --max-num-seqs <-> EngineConfig.max_num_seqs: one name, three spellings;
    the server's own limits (maxWaitingRequests <-> --max-waiting-requests) likewise."""
    engine_fields = {f.name for f in fields(EngineConfig)}
    server_flags = {a.dest for a in add_server_args(argparse.ArgumentParser())._actions}
    props = SCHEMA["properties"]["spec"]["properties"]["engine"]["properties"]
    for camel in set(props) - NOT_FLAGS:
        snake = flag(camel).removeprefix("--").replace("-", "_")
        assert snake in engine_fields | server_flags, (
            f"CRD engine.{camel} is no `pagoda serve` flag"
        )


def test_the_request_limits_reach_pagoda_serve_by_name():
    """The limits hardening added (issue 16) go from the CRD to the flags `pagoda serve` parses."""
    limits = {
        "maxWaitingRequests",
        "maxRequestBodyBytes",
        "trustRequestChatTemplate",
        "maxLogprobs",
    }
    assert limits <= set(SCHEMA["properties"]["spec"]["properties"]["engine"]["properties"])
    s = parse(
        "m",
        "ns",
        {
            "model": {"uri": "default"},
            "engine": {
                "maxWaitingRequests": 32,
                "maxRequestBodyBytes": 1048576,
                "trustRequestChatTemplate": True,
                "maxLogprobs": 5,
            },
        },
    )
    args = serve_parser().parse_args(engine_args(s))
    assert (args.max_waiting_requests, args.max_request_body_bytes) == (32, 1048576)
    assert args.trust_request_chat_template and args.max_logprobs == 5
    off = parse(
        "m", "ns", {"model": {"uri": "default"}, "engine": {"trustRequestChatTemplate": False}}
    )
    assert not serve_parser().parse_args(engine_args(off)).trust_request_chat_template


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    return parser


@pytest.mark.parametrize(
    "uri, arg",
    [
        ("default", "default"),
        ("hf://Qwen/Qwen2.5-0.5B-Instruct", "/models/hub/Qwen/Qwen2.5-0.5B-Instruct/main"),
        ("hf://Qwen/Qwen2.5-0.5B-Instruct@a1b2c3", "/models/hub/Qwen/Qwen2.5-0.5B-Instruct/a1b2c3"),
        ("s3://models/qwen/0.5b", "/models/s3/models/qwen/0.5b"),
        ("s3://models/qwen/0.5b/", "/models/s3/models/qwen/0.5b"),
        ("s3://models", "/models/s3/models"),
        ("pvc://models/llama/8b", "/mnt/models/llama/8b"),
        ("pvc://models", "/mnt/models"),
        ("file:///opt/model.gguf", "/opt/model.gguf"),
    ],
)
def test_model_arg(uri, arg):
    assert model_arg(uri) == arg


def test_engine_args_pass_only_what_the_spec_sets():
    s = parse(
        "chat",
        "ns",
        {
            "model": {"uri": "default"},
            "engine": {
                "maxNumSeqs": 8,
                "gpuMemoryUtilization": 0.8,
                "enablePrefixCaching": False,
                "enforceEager": True,
                "quantization": "fp8",
                "kvCacheDtype": "fp8",
                "image": "x",
                "args": ["--seed", "3"],
                "apiKeySecret": {"name": "s", "key": "k"},
            },
            "lifecycle": {"drainSeconds": 45},
        },
    )
    args = engine_args(s)
    assert args[:7] == [
        "default",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "chat",
    ]
    assert args[args.index("--max-num-seqs") + 1] == "8"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.8"
    assert "--no-enable-prefix-caching" in args and "--enforce-eager" in args
    assert args[args.index("--quantization") + 1] == "fp8"
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8"
    # The key reaches the engine by env (PAGODA_API_KEY, from the Secret): argv is world-readable
    # in /proc and in `kubectl get pod -o yaml` once the kubelet expands $(VAR).
    assert not any("API_KEY" in a or a == "--api-key" for a in args)
    assert args[args.index("--shutdown-timeout") + 1] == "45"
    assert args[-2:] == ["--seed", "3"]  # the user's own flags come last, so they win
    assert "--image" not in args and "--max-model-len" not in args


def test_false_booleans_other_than_prefix_caching_pass_nothing():
    s = parse(
        "m",
        "ns",
        {
            "model": {"uri": "default"},
            "engine": {"enforceEager": False, "enablePrefixCaching": True},
        },
    )
    args = engine_args(s)
    assert "--enforce-eager" not in args and "--enable-prefix-caching" in args


def test_defaults_and_owner():
    s = parse("m", "ns", {"model": {"uri": "default", "servedName": "smol"}})
    assert (s.replicas, s.replicas_owner, s.max_surge, s.max_unavailable) == (1, "spec", 1, 0)
    assert (s.startup_timeout_seconds, s.drain_seconds, s.gpus, s.gpu_resource) == (
        600,
        30,
        0,
        "nvidia.com/gpu",
    )
    assert "--served-model-name" in engine_args(s) and "smol" in engine_args(s)
    a = parse(
        "m",
        "ns",
        {
            "model": {"uri": "default"},
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 5,
                "metric": {"type": "KVCacheUsage", "target": 0.7},
                "scaleDown": {"pods": 2},
            },
        },
    )
    assert a.replicas is None and a.replicas_owner == "autoscaler"
    assert (
        a.autoscaling.scale_down.pods == 2
        and a.autoscaling.scale_down.stabilization_window_seconds == 300
    )
    h = parse(
        "m",
        "ns",
        {
            "model": {"uri": "default"},
            "autoscaling": {
                "mode": "HPA",
                "minReplicas": 1,
                "maxReplicas": 2,
                "metric": {"type": "WaitingRequests", "target": 3},
            },
        },
    )
    assert h.replicas_owner == "hpa"
